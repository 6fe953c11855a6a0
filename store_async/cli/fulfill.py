"""``store-async fulfill INPUT.jsonl --journal PATH``: fulfill consumables exactly once.

With ``--journal postgresql://...`` the process is one worker of a fleet (see
:mod:`store_async.fulfillment.fleet`): any number of processes, on any machines, may run the
same command on the same input and DSN at once; each loads the input (the first loader of a
key wins) and works leases until no row of the journal is workable. Its exit code then speaks
for the whole journal. Give the password in ``PGPASSWORD`` or a passfile, not in the DSN: a
command line is visible to every local user (``ps``).

Exit codes: 0 all done; 1 usage or configuration error (nothing sent); 2 some failed
permanently; 3 some still pending, or the run was stopped (run the same command again); 4 every
well-formed line was done but malformed lines were skipped (fix them, run again).

``INPUT.jsonl`` may be ``-``: the lines are read from standard input. ``--report FILE`` is
checked (opened) before any work; ``--report -`` writes the JSON report to stdout and the
human-readable summary to stderr.

SIGINT or SIGTERM stops taking new work, gives in-flight calls ``--grace`` seconds, commits the
journal and exits (a second signal cancels the in-flight calls at once; they stay pending).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl
import sys
from typing import IO, Any, Final, NoReturn

import orjson

from store_async.cli._arguments import integer, real, user_rate
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
from store_async.fulfillment._pg_schema import is_postgres_dsn
from store_async.fulfillment.fulfiller import DEFAULT_CONCURRENCY
from store_async.fulfillment.progress import ProgressBar
from store_async.pacing import STORE_USER_RATE, UserRate

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
    parser.add_argument(
        "input", metavar="INPUT.jsonl", help="one fulfillment per line; - reads standard input"
    )
    parser.add_argument(
        "--journal",
        required=True,
        metavar="PATH|DSN",
        help="SQLite journal (created if missing), or postgresql://user@host/db for a fleet "
        "of workers sharing one journal; rerun with the same journal to resume",
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="send every call to this base URL (an emulator); default: Microsoft's hosts",
    )
    parser.add_argument(
        "--token",
        help=f"bearer access token; prefer the {TOKEN_VARIABLE} environment variable: an "
        "argument is visible to other local users in `ps` and lands in shell history; default: "
        "azure-identity's DefaultAzureCredential (reads AZURE_* variables)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA certificate bundle for --endpoint and for DefaultAzureCredential's "
        "token requests (a TLS emulator's CA); default: the system trust store (SSL_CERT_FILE)",
    )
    parser.add_argument(
        "--concurrency",
        type=integer(1),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"calls in flight at most (default {DEFAULT_CONCURRENCY}: ~5,000/s at a 0.1 s "
        "round trip; see docs/guides/performance.md)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="also write the final report as JSON (- for stdout; the summary then goes to stderr)",
    )
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
    parser.add_argument(
        "--journal-writer",
        choices=("process", "thread"),
        default="process",
        help="who writes a SQLite journal: a process of its own, off this process's GIL "
        "(default), or a thread of this process",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # -- fleet (PostgreSQL journal) options: their own block.
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        help="this worker's name in the PostgreSQL journal's leases (default host:pid)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=real(0.1),
        default=30.0,
        metavar="SECONDS",
        help="PostgreSQL journal: a lease lasts this long without a heartbeat (default 30)",
    )
    parser.add_argument(
        "--user-rate",
        type=user_rate,
        default=_STORE_DEFAULT,
        metavar="OPS/SECONDS",
        help="pace each user to at most OPS calls in any SECONDS, or 'off' (default: 200/300, "
        "the Store's limit, against Microsoft's hosts; off with --endpoint)",
    )


_STORE_DEFAULT: Final = object()  # --user-rate not given: decided by the endpoint (not a str:
# argparse would run a str default through the type)


def _user_rate(args: argparse.Namespace) -> UserRate | None:
    """The pacing contract: the Store's 200/300 against production, off against an emulator
    (``--endpoint``), unless ``--user-rate`` says otherwise."""
    if args.user_rate is not _STORE_DEFAULT:
        rate: UserRate | None = args.user_rate
        return rate
    return None if args.endpoint else STORE_USER_RATE


def run(args: argparse.Namespace) -> int:
    problem = _input_problem(args.input)
    if problem:
        print(f"store-async fulfill: {problem}", file=sys.stderr)
        return int(ExitCode.USAGE)
    endpoints = Endpoints.single(args.endpoint) if args.endpoint else Endpoints.production()
    if is_postgres_dsn(args.journal):
        from store_async.cli._fleet import run_worker

        return run_worker(args, endpoints)
    try:
        ssl_context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    except (OSError, ssl.SSLError) as error:
        # ssl.SSLError is an OSError too, with OpenSSL's words as its strerror.
        reason = (
            "not a PEM CA certificate bundle"
            if isinstance(error, ssl.SSLError)
            else error.strerror or str(error)
        )
        print(f"store-async fulfill: --ca-file {args.ca_file}: {reason}", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        # Opened before any work: a report that cannot be written is a usage error now, not
        # after an hour of fulfillment.
        with _report_file(args.report) as report_file:
            report = run_loop(_fulfill(args, endpoints, ssl_context), args.loop)
            summary = sys.stderr if args.report == "-" else sys.stdout
            _print_report(report, summary)
            if report_file is not None:
                report_file.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
                report_file.write(b"\n")
                report_file.flush()
    except OSError as error:  # unreadable input, unwritable report
        where = error.filename or args.report
        print(f"store-async fulfill: {error.strerror or error}: {where}", file=sys.stderr)
        return int(ExitCode.USAGE)
    return int(report.exit_code)


def _input_problem(path: str) -> str | None:
    """Why ``path`` cannot be the input, in words (``None``: it can)."""
    if path == "-":
        return None
    if os.path.isdir(path):
        return f"{path} is a directory; give a JSON Lines file (or - for standard input)"
    if not os.path.exists(path):
        return f"no input file {path}"
    return None


@contextlib.contextmanager
def _report_file(path: str | None) -> Any:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout.buffer
    else:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "--report is a directory", path)
        with open(path, "wb") as file:
            yield file


def _credential(args: argparse.Namespace) -> Any:
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if token:
        return StaticTokenCredential(token)
    from azure.identity.aio import DefaultAzureCredential

    if args.ca_file:  # the token endpoint (an emulator's authority) is behind the same CA
        return DefaultAzureCredential(connection_verify=args.ca_file)
    return DefaultAzureCredential()


def _source(path: str) -> Any:
    """The input lines: a file, or standard input for ``-``."""
    return read_jsonl(sys.stdin.buffer if path == "-" else path)


async def _fulfill(
    args: argparse.Namespace, endpoints: Endpoints, ssl_context: ssl.SSLContext | None
) -> FulfillmentReport:
    from store_async import StoreClient  # imported here: aiohttp loads only when used

    async with contextlib.AsyncExitStack() as stack:
        journal = await stack.enter_async_context(
            SqliteJournal(args.journal, synchronous=args.sync, writer=args.journal_writer)
        )
        credential = _credential(args)
        stack.push_async_callback(credential.close)
        client = await stack.enter_async_context(
            StoreClient(
                credential,
                endpoints=endpoints,
                limit=max(100, args.concurrency),
                ssl_context=ssl_context,
            )
        )
        rate = _user_rate(args)
        progress = ProgressBar(
            lambda: fulfiller.stats,
            None if args.input == "-" else args.input,
            enabled=False if args.no_progress or args.quiet else None,
            paced=rate is not None,
        )
        fulfiller = Fulfiller(
            client,
            journal,
            concurrency=args.concurrency,
            grace=args.grace,
            retry_failed=args.retry_failed,
            on_rejected=_live_rejections(progress),
            max_listed=10_000,
            user_rate=rate,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(signum).name
            loop.add_signal_handler(signum, fulfiller.stop, f"{name} received")
            stack.callback(loop.remove_signal_handler, signum)
        async with progress:
            return await fulfiller.run(_source(args.input))


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


def _print_report(report: FulfillmentReport, out: IO[str]) -> None:
    print(report.summary(), file=out)
    for row in report.failures[:LISTED_FAILURES]:
        print(f"  {row}", file=out)
    more = report.failed + report.already_failed - min(len(report.failures), LISTED_FAILURES)
    if more > 0:
        print(
            f"  ... and {more} more failed rows (--report FILE, or: store-async journal PATH)",
            file=out,
        )
    out.flush()
