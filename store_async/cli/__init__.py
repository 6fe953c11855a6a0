"""The ``store-async`` command line.

Each sub-command lives in its own module, imported only when it is used, so ``store-async
key-info`` starts without importing aiohttp. A sub-command module defines::

    def configure(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # the process exit code
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

from store_async.errors import StoreError

__all__ = ["main"]

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
}

EXIT_USAGE: Final = 1

# Optional dependencies -> the extra that brings them (pyproject.toml).
_EXTRAS: Final = {"jwt": "emulator", "trustme": "emulator", "tqdm": "cli"}


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    """Build the parser; only the chosen sub-command's module is imported and configured."""
    parser = argparse.ArgumentParser(
        prog="store-async",
        description="Microsoft Store services client, emulator and exactly-once fulfillment.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``store-async`` console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in arguments if not word.startswith("-")), None)
    try:
        parser, module = _parser(chosen if chosen in COMMANDS else None)
        args = parser.parse_args(arguments)
        assert module is not None  # argparse exits on an unknown or missing command
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
