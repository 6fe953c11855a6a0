"""``store-async journal PATH|DSN``: summarise a fulfillment journal; export rows for re-drive.

``PATH`` is a SQLite journal file, ``DSN`` a PostgreSQL journal (``postgresql://...``; the
summary then also counts leased and parked rows and lists the live leases by worker).
``--json`` prints the summary as one JSON document::

    {"journal": "...", "runs": 3, "counts": {"pending": 0, "done": 9, "failed": 1, ...},
     "failed": [{"key": ..., "line": ..., "idempotencyKey": ..., "error": ..., ...}]}

The summary (counts by state, the failed rows) never shows a Store ID key. ``--export``
writes pending and/or failed rows as JSON Lines in the ``fulfill`` input format, *with* their
Store ID keys and original tracking ids, so that feeding them to ``store-async fulfill``
(with any journal) settles them exactly once. The export is the user's own data going to the
user's own file: it is written with mode 0600, and never to a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from typing import IO, Any, Final

import orjson

from store_async.cli._arguments import integer
from store_async.cli.fulfill import exit_1_on_usage_errors
from store_async.fulfillment import JournalReader, JournalRow, RowState
from store_async.fulfillment._pg_schema import is_postgres_dsn

__all__ = ["configure", "run", "to_input_line"]

EXIT_OK: Final = 0
EXIT_USAGE: Final = 1


def _states(text: str) -> tuple[RowState, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        states = tuple(RowState(name) for name in names)
    except ValueError:
        states = ()
    if not states:
        raise argparse.ArgumentTypeError("give pending, failed, done or a list: pending,failed")
    return states


def configure(parser: argparse.ArgumentParser) -> None:
    exit_1_on_usage_errors(parser)
    parser.add_argument(
        "path", metavar="PATH|DSN", help="the journal file, or postgresql://user@host/db"
    )
    parser.add_argument(
        "--export",
        type=_states,
        metavar="pending|failed|done|pending,failed",
        help="write these rows as JSON Lines in the fulfill input format (with Store ID keys); "
        "done v8 rows carry their newQuantity and orderTransactions",
    )
    parser.add_argument("--output", metavar="FILE", help="export to FILE (mode 0600)")
    parser.add_argument(
        "--limit",
        type=integer(0),
        default=50,
        metavar="N",
        help="failed rows listed in the summary (default 50)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _refuse_terminal(args: argparse.Namespace) -> bool:
    if args.output is None and sys.stdout.isatty():
        print(
            "store-async journal: the export holds Store ID keys; write it to a file with "
            "--output FILE (or redirect stdout)",
            file=sys.stderr,
        )
        return True
    return False


def run(args: argparse.Namespace) -> int:
    if is_postgres_dsn(args.path):
        return asyncio.run(_run_postgres(args))
    with JournalReader(args.path) as reader:
        if args.export is None:
            if args.json:
                failed = _failed_rows(reader.rows((RowState.FAILED,)), args.limit)
                _print_json(reader.path, reader.runs(), _by_name(reader.counts()), failed)
            else:
                _summarise(reader, args.limit, sys.stdout)
            return EXIT_OK
        if _refuse_terminal(args):
            return EXIT_USAGE
        # Closed before the reader is: a generator left open would be finalised later, on a
        # closed database.
        with contextlib.closing(reader.rows(args.export)) as rows:
            if args.output is None:
                try:
                    count = _export(rows, sys.stdout.buffer)
                except BrokenPipeError:  # e.g. `| head`: stop quietly, say so once
                    # Python would flush stdout again at exit and complain a second time.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    print(
                        "store-async journal: the export was cut short: stdout was closed",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
                where = "stdout"
            else:
                try:
                    descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                except OSError as error:
                    print(f"store-async journal: {error.strerror}: {args.output}", file=sys.stderr)
                    return EXIT_USAGE
                with open(descriptor, "wb") as file:
                    count = _export(rows, file)
                where = args.output
        states = ",".join(state.value for state in args.export)
        print(f"exported {count} {states} rows to {where}", file=sys.stderr)
    return EXIT_OK


def to_input_line(row: JournalRow) -> dict[str, Any]:
    """The ``fulfill`` input line that re-drives ``row`` under its original idempotency key."""
    request = row.request
    beneficiary: dict[str, str] = {
        "identityValue": request.beneficiary.identity_value,
        "localTicketReference": request.beneficiary.local_ticket_reference,
    }
    if request.beneficiary.identity_type != "b2b":
        beneficiary["identityType"] = request.beneficiary.identity_type
    line: dict[str, Any] = {"key": row.key, "beneficiary": beneficiary}
    if request.remove_quantity is not None:
        line.update(
            productId=request.product_id,
            quantity=request.remove_quantity,
            trackingId=request.tracking_id,
        )
        if request.sandbox_id is not None:
            line["sandboxId"] = request.sandbox_id
        if not request.include_order_ids:
            line["includeOrderIds"] = False
        if row.state is RowState.DONE:  # what the Store answered (ignored on input)
            if row.new_quantity is not None:
                line["newQuantity"] = row.new_quantity
            line["orderTransactions"] = [
                {
                    "orderId": transaction.order_id,
                    "orderLineItemId": transaction.order_line_item_id,
                    "quantityConsumed": transaction.quantity_consumed,
                }
                for transaction in row.order_transactions
            ]
    elif request.item_id is not None:
        line.update(itemId=request.item_id, trackingId=request.tracking_id)
    else:
        line.update(productId=request.product_id, transactionId=request.transaction_id)
    return line


def _by_name(counts: dict[RowState, int]) -> dict[str, int]:
    return {state.value: count for state, count in counts.items()}


def _failed_rows(rows: Generator[JournalRow, None, None], limit: int) -> list[dict[str, Any]]:
    with contextlib.closing(rows):
        return [_failed_entry(row) for _, row in zip(range(limit), rows, strict=False)]


def _failed_entry(row: JournalRow) -> dict[str, Any]:
    """A failed row for ``--json``: ids and the reason, never the Store ID key."""
    failure = row.failure
    return {
        "key": row.key,
        "line": row.line,
        "idempotencyKey": row.request.idempotency_key,
        "error": failure.error_type if failure else None,
        "status": failure.status if failure else None,
        "code": failure.code if failure else None,
        "innerCode": failure.inner_code if failure else None,
        "message": failure.message if failure else None,
        "cv": row.cv,  # the MS-CV sent with the failed attempt (for Microsoft support)
    }


def _print_json(
    where: str,
    runs: int,
    counts: dict[str, int],
    failed: list[dict[str, Any]],
    **extra: Any,
) -> None:
    document = {"journal": where, "runs": runs, "counts": counts, "failed": failed, **extra}
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


async def _run_postgres(args: argparse.Namespace) -> int:
    from store_async.fulfillment.postgres_journal import PostgresJournal

    async with PostgresJournal(args.path, pool_size=1, read_only=True) as journal:
        if args.export is None:
            counts, runs = await journal.counts(), await journal.runs()
            leases = await journal.leases()
            failed: list[JournalRow] = []
            if args.limit:
                async with contextlib.aclosing(journal.rows((RowState.FAILED,))) as rows:
                    async for row in rows:
                        failed.append(row)
                        if len(failed) >= args.limit:
                            break
            if args.json:
                _print_json(
                    journal.where,
                    runs,
                    counts,
                    [_failed_entry(row) for row in failed],
                    leases=[
                        {"worker": worker, "users": users, "expiresInSeconds": round(left, 3)}
                        for worker, users, left in leases
                    ],
                )
            else:
                _summarise_counts(journal.where, runs, counts, failed, sys.stdout)
                for worker, users, left in leases:
                    state = f"expires in {left:.1f}s" if left > 0 else f"expired {-left:.1f}s ago"
                    print(f"  lease: {worker} holds {users} users ({state})")
            return EXIT_OK
        if _refuse_terminal(args):
            return EXIT_USAGE
        exported = journal.rows(args.export)
        if args.output is None:
            count = await _export_async(exported, sys.stdout.buffer)
            where = "stdout"
        else:
            try:
                descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as error:
                print(f"store-async journal: {error.strerror}: {args.output}", file=sys.stderr)
                return EXIT_USAGE
            with open(descriptor, "wb") as file:  # noqa: ASYNC230 - a local file, small writes
                count = await _export_async(exported, file)
            where = args.output
    states = ",".join(state.value for state in args.export)
    print(f"exported {count} {states} rows to {where}", file=sys.stderr)
    return EXIT_OK


async def _export_async(rows: AsyncIterator[JournalRow], file: IO[bytes]) -> int:
    count = 0
    async for row in rows:
        file.write(orjson.dumps(to_input_line(row)) + b"\n")
        count += 1
    file.flush()
    return count


def _summarise_counts(
    where: str, runs: int, counts: dict[str, int], failed: list[JournalRow], out: IO[str]
) -> None:
    total = sum(counts[state.value] for state in RowState)
    print(f"journal {where}: {total} fulfillments in {runs} runs", file=out)
    for state in RowState:
        print(f"  {state.value:<8} {counts[state.value]}", file=out)
    print(
        f"  ({counts.get('leased', 0)} pending rows leased to a worker now, "
        f"{counts.get('parked', 0)} parked after repeated unknown outcomes)",
        file=out,
    )
    if counts[RowState.PENDING.value]:
        print(
            "pending rows are settled by running fulfill again with this journal "
            "(or: --export pending --output FILE)",
            file=out,
        )
    if counts[RowState.FAILED.value]:
        print(f"failed rows (first {len(failed)}):", file=out)
        for row in failed:
            where_line = f"line {row.line}, " if row.line is not None else ""
            print(
                f"  {row.key!r} ({where_line}{row.request.idempotency_key}): {row.failure}",
                file=out,
            )


def _export(rows: Iterator[JournalRow], file: IO[bytes]) -> int:
    count = 0
    for row in rows:
        file.write(orjson.dumps(to_input_line(row)) + b"\n")
        count += 1
    file.flush()
    return count


def _summarise(reader: JournalReader, limit: int, out: IO[str]) -> None:
    counts = reader.counts()
    total = sum(counts.values())
    print(f"journal {reader.path}: {total} fulfillments in {reader.runs()} runs", file=out)
    for state in RowState:
        print(f"  {state.value:<8} {counts[state]}", file=out)
    if counts[RowState.PENDING]:
        print(
            "pending rows are settled by running fulfill again with this journal "
            "(or: --export pending --output FILE)",
            file=out,
        )
    if counts[RowState.FAILED]:
        print(f"failed rows (first {min(limit, counts[RowState.FAILED])}):", file=out)
        for index, row in enumerate(reader.rows((RowState.FAILED,))):
            if index >= limit:
                break
            where = f"line {row.line}, " if row.line is not None else ""
            print(f"  {row.key!r} ({where}{row.request.idempotency_key}): {row.failure}", file=out)
