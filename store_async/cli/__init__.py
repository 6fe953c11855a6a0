"""The ``store-async`` command line.

Each sub-command lives in its own module, imported only when it is used, so ``store-async
key-info`` and ``store-async --version`` start without importing aiohttp. A sub-command module
defines::

    def configure(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # the process exit code

Exit codes are a contract shared by every command: **0** done, **1** usage or configuration
error (an unknown option or a bad argument included: argparse's own 2 would read as "some
failed"), **2** some failed, **3** some pending (run again), **4** (``fulfill``) malformed input
lines were skipped, everything else was done.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final, NoReturn

from store_async._version import __version__
from store_async.errors import StoreError

__all__ = ["EXIT_USAGE", "main"]

# name -> (module, one-line help), in the order ``--help`` lists them.
COMMANDS: Final = {
    "demo": (
        "store_async.cli.demo",
        "consume N consumables through the real client against the embedded emulator, "
        "with faults, and audit exactly-once",
    ),
    "emulator": ("store_async.cli.emulator", "run the Store emulator until SIGINT/SIGTERM"),
    "fulfill": (
        "store_async.cli.fulfill",
        "fulfill consumables from a JSON Lines file, exactly once, through a journal",
    ),
    "journal": ("store_async.cli.journal", "summarise a fulfillment journal; export rows"),
    "key-info": ("store_async.cli.key_info", "print a Store ID key's claims (never the key)"),
    "loadtest": ("store_async.cli.loadtest", "open-model load test with HDR latency reports"),
    "refunds": ("store_async.cli.refunds", "refund events: sync the Store's queue; export"),
}

EXIT_USAGE: Final = 1
LOGGER: Final = "store_async"
AZURE_LOGGER: Final = "azure"  # silenced by the CLI (see _configure_logging)
GC_THRESHOLD: Final = 10_000
"""The collector's first threshold while a command runs (CPython's default: 700). A run keeps
hundreds of calls in flight (the Fulfiller's default is 512), each holding a few dozen objects
for a round trip, almost all freed by reference counting. At 700 the collector ran ~40 times per
1,000 calls at 512 in flight, promoting the in-flight objects and traversing them again in older
generations: 20 % of the event loop's time. At 10,000 it runs about once per 20,000 calls. A
process-wide setting is an application's choice: the CLI's, not the library's (see the
performance guide)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit 1, the CLI's "usage or configuration"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _verbosity(suppress: bool) -> _Parser:
    """``-q``/``-v``, accepted before and after the command (``SUPPRESS`` keeps the sub-command
    parser from resetting what was given before it)."""
    parent = _Parser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    default = argparse.SUPPRESS if suppress else False
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bar; library logs at ERROR only",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="library logs down to DEBUG on stderr (each retry, token refresh...)",
    )
    return parent


# Optional dependencies -> the extra that brings them (pyproject.toml).
_EXTRAS: Final = {"jwt": "emulator", "trustme": "emulator", "tqdm": "cli"}


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    """Build the parser; only the chosen sub-command's module is imported and configured."""
    parser = _Parser(
        prog="store-async",
        description="Microsoft Store services client, emulator and exactly-once fulfillment.",
        epilog="exit codes: 0 done, 1 usage or configuration error, 2 some failed, "
        "3 some pending (run again), 4 malformed input lines skipped (fulfill)",
        parents=[_verbosity(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"store-async {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(
            name, help=help_text, description=help_text, parents=[_verbosity(suppress=True)]
        )
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub)
    return parser, module


def _configure_logging(args: argparse.Namespace) -> logging.Handler:
    """Show the library's logs on stderr: WARNING by default, ERROR with ``-q``, DEBUG with
    ``-v``. The library itself never configures logging (it is quiet); the CLI, an
    application, does."""
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("store-async: %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(level)
    # azure-identity logs a failing credential's whole story at WARNING, the token service's
    # answer included (which a proxy may fill with the request's secrets): the CLI shows the
    # library's typed error instead, which names the credential's exception by type only.
    logging.getLogger(AZURE_LOGGER).setLevel(logging.CRITICAL)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``store-async`` console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in arguments if not word.startswith("-")), None)
    handler = None
    thresholds = gc.get_threshold()
    try:
        parser, module = _parser(chosen if chosen in COMMANDS else None)
        args = parser.parse_args(arguments)
        assert module is not None  # argparse exits on an unknown or missing command
        handler = _configure_logging(args)
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        return int(module.run(args))
    except ModuleNotFoundError as missing:
        extra = _EXTRAS.get((missing.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"store-async {chosen}: needs the '{extra}' extra: "
            f"pip install 'store-async[{extra}]' (or 'store-async[all]')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except StoreError as error:
        # Typed errors carry no secrets; print them plainly, without a traceback.
        print(f"store-async {chosen}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        # main() may run many times in one process (tests): leave logging and the collector
        # as they were.
        gc.set_threshold(*thresholds)
        if handler is not None:
            logger = logging.getLogger(LOGGER)
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
            logging.getLogger(AZURE_LOGGER).setLevel(logging.NOTSET)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
