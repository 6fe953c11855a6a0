"""``store-async refunds``: refund events (clawback v2) from the Store's queue into a journal.

``refunds sync --journal PATH [--endpoint URL] [--token T] [--until-empty]`` receives the queue's
messages, records each event once per event id in the refund journal (a SQLite file of its own,
or, given ``postgresql://...``, tables of their own in a PostgreSQL database such as a fleet's
fulfillment journal), and deletes each message only after its record is committed. Exit codes:

- 0: the queue was drained (an empty receive, and no message left in flight);
- 2: drained, and some messages were unreadable: recorded as rejected (see ``export
  --rejected``) and deleted;
- 3: stopped before the queue was empty (a signal, or messages still hidden after a reader
  died: run again, or use ``--until-empty`` to wait for them);
- 1: usage or configuration error (no token, bad journal file, queue not onboarded...).

``refunds export --journal PATH [--state S ...] [--unhandled] [--rejected]`` prints JSON Lines:
one decoded event, exactly as received, per event id (``--rejected``: the rejected messages
instead, with their raw text and reason).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any, Final, NoReturn

import orjson

from store_async.cli._arguments import integer, real

__all__ = ["configure", "run"]

TOKEN_VARIABLE: Final = "STORE_ASYNC_ACCESS_TOKEN"
EXIT_DRAINED: Final = 0
EXIT_USAGE: Final = 1
EXIT_REJECTED: Final = 2
EXIT_NOT_EMPTY: Final = 3
JOURNAL_HELP: Final = (
    "refund journal: a SQLite file, or postgresql://user@host/db (tables of their own, beside "
    "a fleet's fulfillment journal; password in PGPASSWORD or ~/.pgpass)"
)


def _exit_1_on_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse exits 2 on usage errors, but 2 means "some rejected" here."""

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def configure(parser: argparse.ArgumentParser) -> None:
    _exit_1_on_usage_errors(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sync = actions.add_parser(
        "sync", help="drain the refund queue into the journal, once per event id"
    )
    _exit_1_on_usage_errors(sync)
    sync.add_argument("--journal", required=True, metavar="PATH|DSN", help=JOURNAL_HELP)
    sync.add_argument(
        "--endpoint", metavar="URL", help="the Store's base URL (an emulator); default: Microsoft"
    )
    sync.add_argument(
        "--token",
        help=f"bearer access token (or set {TOKEN_VARIABLE}); default: "
        "azure-identity's DefaultAzureCredential",
    )
    sync.add_argument(
        "--until-empty",
        action="store_true",
        help="also wait for messages hidden by a reader that died, until none is left",
    )
    sync.add_argument(
        "--max-wait",
        type=real(0.0),
        default=None,
        metavar="SECONDS",
        help="with --until-empty: most seconds to wait for hidden messages "
        "(default: the visibility timeout + 30)",
    )
    sync.add_argument(
        "--visibility-timeout",
        type=integer(1, 7 * 24 * 3600),
        default=30,
        metavar="SECONDS",
        help="seconds a received message stays hidden from other readers (default 30)",
    )
    sync.add_argument(
        "--sync",
        choices=("full", "normal"),
        default="full",
        help="SQLite journal durability: full survives power loss (default), normal only "
        "crashes (a PostgreSQL journal commits every batch with synchronous_commit on)",
    )
    sync.add_argument("--no-progress", action="store_true", help="no progress bar")
    export = actions.add_parser(
        "export", help="print the recorded events as JSON Lines, one per event id"
    )
    _exit_1_on_usage_errors(export)
    export.add_argument("--journal", required=True, metavar="PATH|DSN", help=JOURNAL_HELP)
    export.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only events in this state (Revoked, Returned, Refunded, ChargebackReversal, or "
        "any other text the service sent); repeat for several",
    )
    export.add_argument(
        "--unhandled", action="store_true", help="only events not marked handled yet"
    )
    export.add_argument(
        "--rejected",
        action="store_true",
        help="print the rejected (unreadable) messages instead: message id, reason, raw text",
    )


def run(args: argparse.Namespace) -> int:
    _warn_about_a_password(args.journal)
    if args.action == "export":
        return asyncio.run(_export(args))
    return asyncio.run(_sync(args))


def _warn_about_a_password(journal: str) -> None:
    from store_async._dsn import dsn_password, is_postgres_dsn, redact_dsn

    if is_postgres_dsn(journal) and dsn_password(journal):
        print(
            f"store-async refunds: warning: the DSN {redact_dsn(journal)} carries a password, "
            "which every local user can read in the process list; use PGPASSWORD or a passfile "
            "(~/.pgpass) instead",
            file=sys.stderr,
        )


def _credential(args: argparse.Namespace) -> Any:
    from store_async.credentials import StaticTokenCredential

    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if token:
        return StaticTokenCredential(token)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


async def _sync(args: argparse.Namespace) -> int:
    # Imported here: `store-async refunds export` and `--help` need no aiohttp or Azure.
    from store_async import StoreClient
    from store_async.endpoints import Endpoints
    from store_async.refunds import RefundQueue, RefundSync, SyncReport, open_refund_journal

    # Azure's SDK warns on stderr about failures our own one-line error reports anyway.
    logging.getLogger("azure").setLevel(logging.ERROR)
    endpoints = Endpoints.single(args.endpoint) if args.endpoint else Endpoints.production()
    max_wait = args.visibility_timeout + 30.0 if args.max_wait is None else args.max_wait
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        journal = await open_refund_journal(args.journal, synchronous=args.sync)
        stack.push_async_callback(journal.close)
        credential = _credential(args)
        stack.push_async_callback(credential.close)
        store = await stack.enter_async_context(StoreClient(credential, endpoints=endpoints))
        queue = await stack.enter_async_context(
            RefundQueue(store, visibility_timeout=args.visibility_timeout)
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
            stack.callback(loop.remove_signal_handler, signum)
        sync = RefundSync(queue, journal)
        progress = _progress(enabled=not args.no_progress and sys.stderr.isatty())
        stack.callback(progress.close)

        def on_batch(report: SyncReport) -> None:
            progress.update(report.received - progress.n)
            progress.set_postfix(
                new=report.recorded, duplicates=report.duplicates, rejected=report.rejected
            )

        report = await sync.run(
            until_empty=args.until_empty, max_wait=max_wait, stop=stop, on_batch=on_batch
        )
        where = queue.sas.redacted_uri if queue.sas is not None else "the queue"
    state = "drained" if report.drained else "stopped before empty"
    print(
        f"refunds sync: {report.received} messages from {where}: {report.recorded} new events, "
        f"{report.duplicates} duplicates, {report.rejected} rejected; {report.deleted} deleted; "
        f"queue {state}"
    )
    sys.stdout.flush()
    if not report.drained:
        return EXIT_NOT_EMPTY
    return EXIT_REJECTED if report.rejected else EXIT_DRAINED


def _progress(*, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=None, unit="msg", desc="refunds", disable=not enabled, file=sys.stderr, leave=False
    )


async def _export(args: argparse.Namespace) -> int:
    from store_async.refunds import open_refund_journal

    out = sys.stdout.buffer
    async with await open_refund_journal(args.journal, create=False) as journal:
        try:
            if args.rejected:
                async for message in journal.rejected():
                    line = {
                        "messageId": message.message_id,
                        "reason": message.reason,
                        "text": message.text,
                        "dequeueCount": message.dequeue_count,
                    }
                    out.write(orjson.dumps(line) + b"\n")
            else:
                async for event in journal.events(states=args.state, unhandled_only=args.unhandled):
                    # The event as received: its decoded JSON, re-serialised on one line.
                    out.write(orjson.dumps(orjson.loads(event.json)) + b"\n")
            out.flush()
        except BrokenPipeError:  # e.g. `| head`: stop quietly, say so once
            # Python would flush stdout again at exit and complain a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            print(
                "store-async refunds: the export was cut short: stdout was closed", file=sys.stderr
            )
            return EXIT_USAGE
    return EXIT_DRAINED
