"""v8 consumes (``productId`` + ``quantity``) through the fleet's PostgreSQL journal: sent as v8
consumes, journaled with their four deduplicated values, answers (balance, order ids) kept,
exactly once under faults and SIGKILL, and read back by ``store-async journal``.

The input files and the ledger check are the SQLite CLI tests' (:mod:`tests.test_cli_fulfill`),
the worker processes the fleet tests' (:mod:`tests.test_fleet_chaos`): the same lines must come
out the same whichever journal carries them.
"""

from __future__ import annotations

import asyncio
import signal
from asyncio.subprocess import Process
from pathlib import Path

import asyncpg
import orjson
import pytest

from store_async.emulator import FaultPlan, StoreEmulator
from store_async.errors import InvalidRequestError
from store_async.fulfillment import (
    ClaimOutcome,
    Fulfillment,
    JournalError,
    JournalRow,
    RowState,
    SqliteJournal,
    _pg_schema,
)
from store_async.fulfillment._pg_schema import SCHEMA_VERSION
from store_async.fulfillment.postgres_journal import PostgresJournal, user_key
from store_async.fulfillment.report import ExitCode
from store_async.models import ConsumeRequest
from tests.support.postgres import PostgresServer
from tests.test_cli_fleet import fulfill
from tests.test_cli_fulfill import assert_rows_applied_once, write_input
from tests.test_fleet_chaos import journal_state, start_worker
from tests.test_journal_v8 import ORDERS, TRACKING, USER, result, v8
from tests.test_postgres_journal import run_cli, sql


async def journal_rows(dsn: str) -> list[JournalRow]:
    async with PostgresJournal(dsn, pool_size=1) as journal:
        return [row async for row in journal.rows()]


async def test_v8_lines_are_sent_as_v8_consumes_and_keep_their_answers(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    input_path = tmp_path / "in.jsonl"
    write_input(input_path, 12, v8_every=3)  # lines 3, 6, 9, 12: v8, with order ids asked
    async with StoreEmulator(auto_create=True) as emu:
        code, out, err, _ = await fulfill(
            postgres_server.env(), str(input_path), "--journal", postgres_dsn,
            "--endpoint", emu.url, "--token", emu.dev_token, "--no-progress",
        )  # fmt: skip
        assert code == ExitCode.ALL_DONE, (out, err)
        rows = await journal_rows(postgres_dsn)
        assert_rows_applied_once(emu, rows, 12, v8_every=3)
        v8 = {row.key: row for row in rows if row.request.is_v8}
        assert sorted(v8) == ["order-12", "order-3", "order-6", "order-9"]
        for key, row in v8.items():
            n = int(key.split("-")[1])
            user, product = f"opaque-user-{n % 7}", f"9NV8PRODUCT{n % 5}"
            assert (row.request.product_id, row.request.remove_quantity) == (product, 1 + n % 3)
            assert row.request.include_order_ids is True
            # The balance this consume left (each of these users/products is consumed once).
            assert row.new_quantity == emu.balance_of(user, product) == 1_000_000 - (1 + n % 3)
            assert row.order_transactions, key


async def requests_or_exit(emu: StoreEmulator, count: int, process: Process) -> bool:
    """Wait until the emulator has received ``count`` consumes (the request wakes us) or the
    process has ended, whichever comes first; True for the former."""
    reached = asyncio.create_task(emu.wait_for_requests(count))
    ended = asyncio.create_task(process.wait())
    await asyncio.wait((reached, ended), return_when=asyncio.FIRST_COMPLETED)
    ended.cancel()
    if reached.done():
        return True
    reached.cancel()
    return False


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_two_workers_under_faults_and_sigkill_apply_mixed_lines_exactly_once(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    lines = 360
    input_path = tmp_path / "in.jsonl"
    write_input(input_path, lines, v8_every=3)  # v6 by item and v8 lines, interleaved
    plan = FaultPlan(rate=0.15, seed=88, retry_after=0.0, slow_seconds=0.001)
    async with StoreEmulator(faults=plan, auto_create=True) as emu:

        async def worker(name: str) -> Process:
            return await start_worker(
                postgres_server, postgres_dsn, input_path, emu.url, emu.dev_token, name,
                "--lease-seconds", "1", "--concurrency", "16",
            )  # fmt: skip

        first, second = await worker("w-1"), await worker("w-2")
        try:
            # Both workers are mid-run: 360 lines need at least 360 consumes to settle, and
            # each kill comes earlier. The first kill leaves rows of its leased users pending
            # (and maybe sent); the second worker takes them once the lease expires.
            assert await requests_or_exit(emu, 120, first), "w-1 ended before the 120th consume"
            first.kill()
            assert await first.wait() == -signal.SIGKILL
            assert await requests_or_exit(emu, 240, second), "w-2 ended before the 240th"
            second.kill()
            assert await second.wait() == -signal.SIGKILL
            left = await journal_state(postgres_server, postgres_dsn)
            assert left["pending"] > 0, left
            # The rerun: two new workers on the same input and journal finish the work.
            for attempt in range(5):
                reruns = [await worker(f"rerun-{attempt}-{n}") for n in (1, 2)]
                outputs = [await process.communicate() for process in reruns]
                codes = [process.returncode for process in reruns]
                if codes == [0, 0]:
                    break
                assert set(codes) <= {0, 3}, outputs  # 3: rows parked after faults: rerun
            assert codes == [0, 0], outputs
        finally:
            for process in (first, second):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        for out, err in outputs:
            assert postgres_server.password.encode() not in out + err
        print(  # the figures, with -s
            f"killed at the 120th and 240th consume with {left['pending']} rows pending; "
            f"settled by {attempt + 1} reruns of 2 workers; "
            f"{sum(emu.stats.faults.values())} faults injected; {emu.ledger.total} applied"
        )
        rows = await journal_rows(postgres_dsn)
        assert_rows_applied_once(emu, rows, lines, v8_every=3)
        assert sum(emu.stats.faults.values()) > 20  # the faults really happened
        v8 = [row for row in rows if row.request.is_v8]
        assert len(v8) == lines // 3
        final: dict[tuple[str, str], int] = {}
        for row in v8:
            request = row.request
            pair = (request.beneficiary.identity_value, request.product_id or "")
            balance = emu.balance_of(*pair)
            # The answer's balance: what was left when the Store answered (a replay answers the
            # balance as it is then), never more than before this consume nor less than now.
            assert row.new_quantity is not None
            assert balance <= row.new_quantity <= 1_000_000 - (request.remove_quantity or 0)
            final[pair] = min(final.get(pair, 1_000_000), row.new_quantity)
            # The order ids of the answer, kept: the units drawn add up to the quantity.
            assert sum(t.quantity_consumed or 0 for t in row.order_transactions) == (
                request.remove_quantity
            ), row.key
        # The last consume of each balance answered the final balance.
        assert final == {pair: emu.balance_of(*pair) for pair in final}
    state = await journal_state(postgres_server, postgres_dsn)
    assert state == {
        "pending": 0, "done": lines, "failed": 0, "leases": 0, "user_pending": 0
    }  # fmt: skip


async def test_a_version_1_database_is_upgraded_in_place(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    connection = await asyncpg.connect(postgres_dsn, password=postgres_server.password)
    try:
        for statement in _pg_schema._CREATE:  # exactly what schema version 1 created
            await connection.execute(statement)
        await connection.execute("INSERT INTO store_async_journal_version (version) VALUES (1)")
        await connection.execute(
            "INSERT INTO store_async_runs (worker, retry_failed) VALUES ('old:1', false)"
        )
        await connection.execute(
            "INSERT INTO store_async_users (user_key, identity_value, pending) "
            "VALUES ($1, 'eyJ-SECRET-key', 1)",
            user_key(USER),
        )
        await connection.execute(
            "INSERT INTO store_async_fulfillments (key, idempotency_key, caller_chosen, item_id, "
            "identity_type, local_ticket_reference, user_id, run_id, line) "
            "VALUES ('old', $1, true, 'item-9', 'b2b', 'user-1', 1, 1, 1)",
            TRACKING,
        )
    finally:
        await connection.close()
    version = "SELECT version FROM store_async_journal_version"
    # A reader (store-async journal) reads version 1 as it is and upgrades nothing.
    exported = tmp_path / "pending.jsonl"
    export = await asyncio.to_thread(
        run_cli, "journal", postgres_dsn, "--export", "pending", "--output", str(exported),
        env=postgres_server.env(),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert orjson.loads(exported.read_bytes()) == {
        "key": "old", "beneficiary": {"identityValue": "eyJ-SECRET-key",
        "localTicketReference": "user-1"}, "itemId": "item-9", "trackingId": TRACKING,
    }  # fmt: skip
    async with PostgresJournal(postgres_dsn, read_only=True) as reader:
        assert [row.key async for row in reader.rows()] == ["old"]
        with pytest.raises(JournalError) as caught:
            await reader.begin_run()
        assert str(caught.value) == f"journal {reader.where} is open read-only"
    assert await sql(postgres_dsn, postgres_server, version) == 1
    new = Fulfillment(
        key="new",
        request=ConsumeRequest.for_quantity(USER, "9NCOINS", 3, key="new", include_order_ids=True),
    )
    async with PostgresJournal(postgres_dsn) as journal:
        old = await journal.row("old")
        assert old is not None
        assert (old.state, old.request) == (
            RowState.PENDING,
            ConsumeRequest.for_item(USER, "item-9", TRACKING),
        )
        await journal.begin_run()
        (claim,) = await journal.load([new])
        assert claim.outcome is ClaimOutcome.SEND
        (lease,) = await journal.lease(users=5, rows_per_user=5, seconds=30)
        # The old row first (load order), then the v8 one as it was claimed.
        assert [row.request for row in lease.rows] == [old.request, new.request]
        assert await journal.settle(
            done=[("new", lease.token, result(ORDERS, 5))], release=[(lease.user_id, lease.token)]
        ) == {"new"}
        row = await journal.row("new")
    assert row is not None
    assert (row.state, row.new_quantity, row.order_transactions) == (RowState.DONE, 5, ORDERS)
    connection = await asyncpg.connect(postgres_dsn, password=postgres_server.password)
    try:
        assert await connection.fetchval(version) == SCHEMA_VERSION == 2
        columns = dict(
            await connection.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'store_async_fulfillments' AND column_name IN "
                "('order_ids', 'order_transactions', 'quantity', 'new_quantity')"
            )
        )
    finally:
        await connection.close()
    assert columns == {
        "order_transactions": "jsonb",
        "quantity": "bigint",
        "new_quantity": "bigint",
    }


async def test_journal_json_and_export_show_v8_rows_like_the_sqlite_journal(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    done = v8("done", include_order_ids=True)
    failed = Fulfillment(
        key="failed",
        request=ConsumeRequest.for_quantity(USER, "9NGEMS", 2, key="failed", sandbox_id="XDKS.1"),
    )
    pending = Fulfillment(
        key="pending", request=ConsumeRequest.for_quantity(USER, "9NCOINS", 1, key="pending")
    )
    refused = InvalidRequestError("not enough units", status=409, code="InsufficientQuantity")
    sqlite_path = tmp_path / "journal.sqlite"
    for journal in (PostgresJournal(postgres_dsn), SqliteJournal(sqlite_path)):
        async with journal:
            await journal.begin_run()
            for fulfillment in (done, failed, pending):
                await journal.claim(fulfillment)
            await journal.mark_done("done", result(ORDERS, 4))
            await journal.mark_failed("failed", refused)
    documents, exports = [], []
    for target in (postgres_dsn, str(sqlite_path)):
        summary = await asyncio.to_thread(
            run_cli, "journal", target, "--json", env=postgres_server.env()
        )
        assert summary.returncode == 0, summary.stderr
        documents.append(orjson.loads(summary.stdout))
        output = tmp_path / f"export-{len(exports)}.jsonl"
        export = await asyncio.to_thread(
            run_cli, "journal", target, "--export", "done,failed,pending", "--output", str(output),
            env=postgres_server.env(),
        )  # fmt: skip
        assert (export.returncode, export.stderr) == (
            0,
            f"exported 3 done,failed,pending rows to {output}\n",
        )
        exports.append(output.read_bytes())
    for document in documents:
        assert document["failed"] == [
            {
                "key": "failed", "line": None, "idempotencyKey": failed.request.tracking_id,
                "error": "InvalidRequestError", "status": 409, "code": "InsufficientQuantity",
                "innerCode": None, "message": "not enough units", "cv": None,
            }
        ]  # fmt: skip
        assert "eyJ-SECRET-key" not in orjson.dumps(document).decode()
    beneficiary = {"identityValue": "eyJ-SECRET-key", "localTicketReference": "user-1"}
    assert exports[0] == exports[1]  # the same lines, in load order, whichever journal
    assert [orjson.loads(line) for line in exports[0].splitlines()] == [
        {
            "key": "done", "beneficiary": beneficiary, "productId": "9NCOINS", "quantity": 3,
            "trackingId": TRACKING, "newQuantity": 4,
            "orderTransactions": [
                {"orderId": "o-1", "orderLineItemId": "l-1", "quantityConsumed": 2},
                {"orderId": "o-2", "orderLineItemId": "l-2", "quantityConsumed": 1},
            ],
        },
        {
            "key": "failed", "beneficiary": beneficiary, "productId": "9NGEMS", "quantity": 2,
            "trackingId": failed.request.tracking_id, "sandboxId": "XDKS.1",
            "includeOrderIds": False,
        },
        {
            "key": "pending", "beneficiary": beneficiary, "productId": "9NCOINS", "quantity": 1,
            "trackingId": pending.request.tracking_id, "includeOrderIds": False,
        },
    ]  # fmt: skip


async def test_reading_a_database_without_a_journal_creates_nothing(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    summary = await asyncio.to_thread(run_cli, "journal", postgres_dsn, env=postgres_server.env())
    assert (summary.returncode, summary.stdout) == (1, "")
    assert f"{postgres_dsn} holds no store_async journal" in summary.stderr
    tables = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'store_async%'"
    assert await sql(postgres_dsn, postgres_server, tables) == 0
