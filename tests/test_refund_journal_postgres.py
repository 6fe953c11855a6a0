"""PostgresRefundJournal's own behaviour on a real PostgreSQL server: beside the fleet's
fulfillment journal in one database, its schema version, what PostgreSQL text cannot hold,
keyset readers under concurrent syncers, and DSN passwords that never show."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from store_async.fulfillment.postgres_journal import PostgresJournal
from store_async.refunds import (
    DecodedEvent,
    PostgresRefundJournal,
    RecordOutcome,
    RefundJournalError,
    SqliteRefundJournal,
    decode_message,
    open_refund_journal,
)
from store_async.refunds.postgres_journal import SCHEMA_VERSION
from tests.support.postgres import PostgresServer
from tests.test_refund_journal import event_text, received
from tests.test_refund_models import message, with_state


async def sql(dsn: str, server: PostgresServer, query: str) -> object:
    connection = await asyncpg.connect(dsn, password=server.password)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


async def test_the_spec_picks_the_journal_by_its_scheme(postgres_dsn: str, tmp_path: Path) -> None:
    async with await open_refund_journal(tmp_path / "refunds.db") as sqlite:
        assert isinstance(sqlite, SqliteRefundJournal)
    async with await open_refund_journal(str(tmp_path / "r.db")) as sqlite:
        assert isinstance(sqlite, SqliteRefundJournal)
    for dsn in (postgres_dsn, postgres_dsn.replace("postgresql://", "postgres://")):
        async with await open_refund_journal(dsn) as journal:
            assert isinstance(journal, PostgresRefundJournal)
            assert repr(journal) == f"PostgresRefundJournal({dsn!r})"


async def test_it_shares_a_database_with_the_fleet_journal_in_tables_of_its_own(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    async with (
        PostgresJournal(postgres_dsn) as fleet,
        PostgresRefundJournal(postgres_dsn) as refunds,
    ):
        await fleet.begin_run()
        assert await refunds.record([received(event_text("e-1"), "m-1")]) == [
            RecordOutcome.RECORDED
        ]
    # Opened the other way round, on a database that has both already: nothing is touched.
    async with PostgresRefundJournal(postgres_dsn) as refunds, PostgresJournal(postgres_dsn):
        assert (await refunds.counts()).events == 1
    tables = await sql(
        postgres_dsn,
        postgres_server,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    assert [row["tablename"] for row in tables] == [  # type: ignore[attr-defined]
        "store_async_fulfillments",
        "store_async_journal_version",
        "store_async_refund_events",
        "store_async_refund_rejected",
        "store_async_refund_version",
        "store_async_runs",
        "store_async_users",
    ]


async def test_schema_versions_are_checked_and_readers_never_create_one(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    with pytest.raises(RefundJournalError) as missing:
        await open_refund_journal(postgres_dsn, create=False)
    assert str(missing.value) == (
        f"no refund journal in {postgres_dsn}: no refund event was recorded there yet"
    )
    # Several processes starting together on an empty database: one creates the schema.
    journals = [PostgresRefundJournal(postgres_dsn) for _ in range(4)]
    await asyncio.gather(*(journal.open() for journal in journals))
    for journal in journals:
        await journal.close()
    version = "SELECT version FROM store_async_refund_version"
    assert await sql(postgres_dsn, postgres_server, version) == [(SCHEMA_VERSION,)]
    await sql(postgres_dsn, postgres_server, "UPDATE store_async_refund_version SET version = 99")
    with pytest.raises(RefundJournalError, match=r"schema version 99.*upgrade store_async"):
        await open_refund_journal(postgres_dsn)
    await sql(postgres_dsn, postgres_server, "DELETE FROM store_async_refund_version")
    with pytest.raises(RefundJournalError, match="damaged store_async refund journal"):
        await open_refund_journal(postgres_dsn)


async def test_a_journal_that_is_not_open_or_closed_says_so(postgres_dsn: str) -> None:
    journal = PostgresRefundJournal(postgres_dsn)
    with pytest.raises(RefundJournalError, match="is not open"):
        await journal.counts()
    await journal.open()
    await journal.close()
    await journal.close()
    with pytest.raises(RefundJournalError, match="is closed"):
        await journal.mark_handled("e-1")
    with pytest.raises(RefundJournalError, match="is closed"):
        await journal.open()
    with pytest.raises(RefundJournalError, match="pool_size"):
        PostgresRefundJournal(postgres_dsn, pool_size=0)


async def test_what_postgresql_text_cannot_hold_is_kept_whole_and_never_fails_a_batch(
    postgres_dsn: str,
) -> None:
    nul_document = {**with_state("Revoked"), "id": "e-\x00"}
    nul_event = message(nul_document)
    assert isinstance(decode_message(nul_event), DecodedEvent)  # a readable event elsewhere
    odd_text = "not base64 \x00 \u2603 \U0001f600 \udcff"  # NUL, non-ASCII, a lone surrogate
    async with PostgresRefundJournal(postgres_dsn) as journal:
        outcomes = await journal.record(
            [
                received(event_text("e-1"), "m-1"),
                received(nul_event, "m-2"),
                received(odd_text, "m-3", dequeue_count=4),
            ]
        )
        assert outcomes == [RecordOutcome.RECORDED, RecordOutcome.REJECTED, RecordOutcome.REJECTED]
        assert await journal.mark_handled("e-\x00") is False
        rejected = [message async for message in journal.rejected()]
        assert [(r.message_id, r.dequeue_count) for r in rejected] == [("m-2", 1), ("m-3", 4)]
        assert orjson.loads(rejected[0].text) == nul_document
        assert "NUL" in rejected[0].reason
        assert rejected[1].text == odd_text  # byte for byte
        counts = await journal.counts()
        assert (counts.events, counts.rejected) == (1, 2)


async def test_a_keyset_reader_misses_nothing_while_several_syncers_record(
    postgres_dsn: str,
) -> None:
    """Readers page by ``sequence > after``: batches committing out of sequence order would let
    a reader pass an event for good. Four syncers record at once while a reader pages."""
    writers = [PostgresRefundJournal(postgres_dsn) for _ in range(4)]
    reader = PostgresRefundJournal(postgres_dsn)
    for journal in (*writers, reader):
        await journal.open()
    try:
        expected = {f"w{w}-{n:03d}" for w in range(4) for n in range(160)}

        async def write(w: int) -> None:
            for k in range(0, 160, 2):
                batch = [
                    received(event_text(f"w{w}-{n:03d}"), f"m{w}-{n}") for n in range(k, k + 2)
                ]
                await writers[w].record(batch)

        seen: list[str] = []
        after = 0

        async def read_page() -> int:
            nonlocal after
            page = await reader.unhandled(after=after, limit=3)
            for event in page:
                seen.append(event.event_id)
                after = event.sequence
            return len(page)

        async def read_while(task: asyncio.Future[list[None]]) -> None:
            while not task.done():
                await read_page()
                await asyncio.sleep(0)

        writing = asyncio.gather(*(write(w) for w in range(4)))
        await asyncio.gather(writing, read_while(writing))
        while await read_page():
            pass
        assert len(seen) == len(set(seen))
        assert set(seen) == expected
    finally:
        for journal in (*writers, reader):
            await journal.close()


async def test_a_password_never_shows_in_reprs_or_errors(
    postgres_server: PostgresServer, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD")
    secret = "s3cret-Refund-Passw0rd"
    dsn = postgres_dsn.replace("postgres@", f"postgres:{secret}@")
    journal = PostgresRefundJournal(dsn)
    assert secret not in repr(journal)
    assert secret not in journal.where
    with pytest.raises(RefundJournalError) as caught:
        await journal.open()
    assert secret not in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    assert "postgres:***@127.0.0.1" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    in_parameter = f"{postgres_dsn}?password={secret}"
    with pytest.raises(RefundJournalError) as caught:
        await open_refund_journal(in_parameter)
    assert secret not in str(caught.value)
    assert "password=***" in str(caught.value)
    # The right password in the DSN works, and still shows nowhere.
    good = postgres_dsn.replace("postgres@", f"postgres:{postgres_server.password}@")
    async with await open_refund_journal(good) as opened:
        assert postgres_server.password not in repr(opened)


async def test_without_asyncpg_the_error_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg -> ImportError
    with pytest.raises(RefundJournalError) as caught:
        await open_refund_journal("postgresql://refunds@127.0.0.1:1/store")
    assert str(caught.value) == (
        "a PostgreSQL refund journal needs asyncpg: pip install 'store-async[postgres]'"
    )
