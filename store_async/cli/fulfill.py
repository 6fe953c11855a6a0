"""``store-async fulfill INPUT.jsonl --journal PATH``: fulfill consumables exactly once.

Exit codes: 0 all done; 2 some failed permanently (or input lines were rejected); 3 some still
pending, or the run was stopped (run the same command again); 1 usage or configuration error.

SIGINT or SIGTERM stops taking new work, gives in-flight calls ``--grace`` seconds, commits the
journal and exits (a second signal cancels the in-flight calls at once; they stay pending).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any, Final, NoReturn

import orjson

from store_async.cli._arguments import integer, real
from store_async.cli._loop import add_loop_option
from store_async.cli._loop import run as run_loop
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.fulfillment import (
    ExitCode,
    Fulfiller,
    FulfillmentReport,
    LineError,
    SqliteJournal,
    read_jsonl,
)
from store_async.fulfillment.fulfiller import DEFAULT_CONCURRENCY
from store_async.fulfillment.progress import ProgressBar

__all__ = ["configure", "exit_1_on_usage_errors", "run"]

TOKEN_VARIABLE: Final = "STORE_ASYNC_ACCESS_TOKEN"
LIVE_REJECTIONS: Final = 100  # rejected lines printed as they happen; the rest go to --report
LISTED_FAILURES: Final = 50  # failures printed in the final report; the rest go to --report


def exit_1_on_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse exits 2 on usage errors, but for ``fulfill`` 2 means "some failed": exit 1,
    like every other configuration error of ``fulfill`` and ``journal``."""

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(int(ExitCode.USAGE), f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def configure(parser: argparse.ArgumentParser) -> None:
    add_loop_option(parser)
    exit_1_on_usage_errors(parser)
    parser.add_argument("input", metavar="INPUT.jsonl", help="one fulfillment per line")
    parser.add_argument(
        "--journal",
        required=True,
        metavar="PATH",
        help="SQLite journal (created if missing); rerun with the same journal to resume",
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="send every call to this base URL (an emulator); default: Microsoft's hosts",
    )
    parser.add_argument(
        "--token",
        help=f"bearer access token (or set {TOKEN_VARIABLE}); default: "
        "azure-identity's DefaultAzureCredential",
    )
    parser.add_argument(
        "--concurrency",
        type=integer(1),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"calls in flight at most (default {DEFAULT_CONCURRENCY}: ~5,000/s at a 0.1 s "
        "round trip; see docs/guides/performance.md)",
    )
    parser.add_argument("--report", metavar="FILE", help="also write the final report as JSON")
    parser.add_argument(
        "--grace",
        type=real(0.0),
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, seconds in-flight calls get (default 30)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="resend rows that failed permanently in an earlier run",
    )
    parser.add_argument(
        "--sync",
        choices=("full", "normal"),
        default="full",
        help="journal durability: full survives power loss (default), normal only crashes",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.input):
        print(f"store-async fulfill: no input file {args.input}", file=sys.stderr)
        return int(ExitCode.USAGE)
    endpoints = Endpoints.single(args.endpoint) if args.endpoint else Endpoints.production()
    try:
        report = run_loop(_fulfill(args, endpoints), args.loop)
        _print_report(report)
        if args.report:
            with open(args.report, "wb") as file:
                file.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as error:  # unreadable input, unwritable report
        print(f"store-async fulfill: {error.strerror}: {error.filename}", file=sys.stderr)
        return int(ExitCode.USAGE)
    return int(report.exit_code)


def _credential(args: argparse.Namespace) -> Any:
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if token:
        return StaticTokenCredential(token)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


async def _fulfill(args: argparse.Namespace, endpoints: Endpoints) -> FulfillmentReport:
    from store_async import StoreClient  # imported here: aiohttp loads only when used

    async with contextlib.AsyncExitStack() as stack:
        journal = await stack.enter_async_context(
            SqliteJournal(args.journal, synchronous=args.sync)
        )
        credential = _credential(args)
        stack.push_async_callback(credential.close)
        client = await stack.enter_async_context(
            StoreClient(credential, endpoints=endpoints, limit=max(100, args.concurrency))
        )
        progress = ProgressBar(
            lambda: fulfiller.stats, args.input, enabled=False if args.no_progress else None
        )
        fulfiller = Fulfiller(
            client,
            journal,
            concurrency=args.concurrency,
            grace=args.grace,
            retry_failed=args.retry_failed,
            on_rejected=_live_rejections(progress),
            max_listed=10_000,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(signum).name
            loop.add_signal_handler(signum, fulfiller.stop, f"{name} received")
            stack.callback(loop.remove_signal_handler, signum)
        async with progress:
            return await fulfiller.run(read_jsonl(args.input))


def _live_rejections(progress: ProgressBar) -> Any:
    printed = 0

    def show(error: LineError) -> None:
        nonlocal printed
        printed += 1
        if printed <= LIVE_REJECTIONS:
            progress.write(f"rejected {error}")
        elif printed == LIVE_REJECTIONS + 1:
            progress.write("more rejected lines: see the final report (--report FILE lists them)")

    return show


def _print_report(report: FulfillmentReport) -> None:
    print(report.summary())
    for row in report.failures[:LISTED_FAILURES]:
        print(f"  {row}")
    more = report.failed + report.already_failed - min(len(report.failures), LISTED_FAILURES)
    if more > 0:
        print(f"  ... and {more} more failed rows (--report FILE, or: store-async journal PATH)")
    sys.stdout.flush()
