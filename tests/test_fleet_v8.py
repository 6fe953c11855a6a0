"""v8 consumes (``productId`` + ``quantity``) through the fleet's PostgreSQL journal: sent as v8
consumes, journaled with their four deduplicated values, answers (balance, order ids) kept,
exactly once under faults and SIGKILL, and read back by ``store-async journal``.

The input files and the ledger check are the SQLite CLI tests' (:mod:`tests.test_cli_fulfill`),
the worker processes the fleet tests' (:mod:`tests.test_fleet_chaos`): the same lines must come
out the same whichever journal carries them.
"""

from __future__ import annotations

from pathlib import Path

from store_async.emulator import StoreEmulator
from store_async.fulfillment import JournalRow
from store_async.fulfillment.postgres_journal import PostgresJournal
from store_async.fulfillment.report import ExitCode
from tests.support.postgres import PostgresServer
from tests.test_cli_fleet import fulfill
from tests.test_cli_fulfill import assert_rows_applied_once, write_input


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
