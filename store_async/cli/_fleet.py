"""``store-async fulfill INPUT --journal postgresql://...``: one worker of a fleet.

Kept apart from :mod:`store_async.cli.fulfill` (the SQLite path), which hands over to
:func:`run_worker` when the journal is a DSN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import orjson

from store_async.cli._loop import run as run_loop
from store_async.endpoints import Endpoints
from store_async.fulfillment import ExitCode, read_jsonl
from store_async.fulfillment._pg_schema import dsn_password, redact_dsn
from store_async.fulfillment.fleet import FleetReport, FleetWorker
from store_async.fulfillment.postgres_journal import PostgresJournal
from store_async.fulfillment.progress import ProgressBar

__all__ = ["run_worker"]

LISTED_FAILURES = 50


def run_worker(args: argparse.Namespace, endpoints: Endpoints) -> int:
    if dsn_password(args.journal):
        print(
            f"store-async fulfill: warning: the DSN {redact_dsn(args.journal)} carries a "
            "password, which every local user can read in the process list; use PGPASSWORD "
            "or a passfile (~/.pgpass) instead",
            file=sys.stderr,
        )
    try:
        report = run_loop(_work(args, endpoints), args.loop)
        print(report.summary())
        for row in report.report.failures[:LISTED_FAILURES]:
            print(f"  {row}")
        for error in report.report.rejections[:LISTED_FAILURES]:
            print(f"  rejected {error}")
        sys.stdout.flush()
        if args.report:
            with open(args.report, "wb") as file:
                file.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as error:  # unreadable input, unwritable report
        print(f"store-async fulfill: {error.strerror}: {error.filename}", file=sys.stderr)
        return int(ExitCode.USAGE)
    return int(report.exit_code)


async def _work(args: argparse.Namespace, endpoints: Endpoints) -> FleetReport:
    from store_async import StoreClient  # imported here: aiohttp loads only when used
    from store_async.cli.fulfill import _credential, _live_rejections

    async with contextlib.AsyncExitStack() as stack:
        journal = await stack.enter_async_context(
            PostgresJournal(args.journal, worker_id=args.worker_id)
        )
        credential = _credential(args)
        stack.push_async_callback(credential.close)
        client = await stack.enter_async_context(
            StoreClient(credential, endpoints=endpoints, limit=max(100, args.concurrency))
        )
        progress = ProgressBar(
            lambda: worker.stats, args.input, enabled=False if args.no_progress else None
        )
        worker = FleetWorker(
            client,
            journal,
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            grace=args.grace,
            retry_failed=args.retry_failed,
            on_rejected=_live_rejections(progress),
            max_listed=10_000,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(signum).name
            loop.add_signal_handler(signum, worker.stop, f"{name} received")
            stack.callback(loop.remove_signal_handler, signum)
        async with progress:
            return await worker.run(read_jsonl(args.input))
