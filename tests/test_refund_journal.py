"""The refund journals: once per event id, rejected messages kept whole, handled marks.

The protocol tests run against both journals (``journal_spec``: a SQLite file, or a fresh
database of the real PostgreSQL test server), opened the way applications open them, with
``open_refund_journal``; the file-specific refusals are SQLite's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from store_async.fulfillment import SqliteJournal
from store_async.refunds import (
    PostgresRefundJournal,
    ReceivedMessage,
    RecordOutcome,
    RefundEventState,
    RefundJournalCounts,
    RefundJournalError,
    SqliteRefundJournal,
    decode_message,
    open_refund_journal,
)
from tests.test_refund_models import message, with_state


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a refund journal lives: a SQLite file path, or a PostgreSQL DSN."""
    if request.param == "sqlite":
        return str(tmp_path / "refunds.db")
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


def received(text: str, message_id: str, dequeue_count: int = 1) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=message_id, dequeue_count=dequeue_count, decoded=decode_message(text)
    )


def event_text(event_id: str, state: str = "Revoked", product: str = "9NBLGGH4R315") -> str:
    document = with_state(state)
    document["id"] = event_id
    document["data"] = {**document["data"], "productId": product}  # type: ignore[dict-item]
    return message(document)


async def test_each_event_id_is_recorded_once_and_copies_count_as_deliveries(
    journal_spec: str,
) -> None:
    async with await open_refund_journal(journal_spec) as journal:
        outcomes = await journal.record(
            [
                received(event_text("e-1"), "m-1"),
                received(event_text("e-2"), "m-2"),
                received(event_text("e-1"), "m-3"),  # a duplicate in the same batch
                received("not base64!", "m-4"),
            ]
        )
        assert outcomes == [
            RecordOutcome.RECORDED,
            RecordOutcome.RECORDED,
            RecordOutcome.DUPLICATE,
            RecordOutcome.REJECTED,
        ]
        # The same batch again (a crash after the commit, before the deletes): nothing new.
        again = await journal.record(
            [received(event_text("e-2"), "m-2", 2), received("not base64!", "m-4", 2)]
        )
        assert again == [RecordOutcome.DUPLICATE, RecordOutcome.DUPLICATE]
        assert await journal.counts() == RefundJournalCounts(
            events=2, handled=0, rejected=1, deliveries=4
        )
        events = [event async for event in journal.events()]
        assert [(e.event_id, e.message_id, e.deliveries) for e in events] == [
            ("e-1", "m-1", 2),
            ("e-2", "m-2", 2),
        ]
        assert events[0].json == orjson.dumps({**with_state("Revoked"), "id": "e-1"})
        assert events[0].event.state is RefundEventState.REVOKED
        assert events[0].bundle_key == "order-1:line-1:9NBLGGH4R315"
        rejected = [item async for item in journal.rejected()]
        assert [(r.message_id, r.text, r.dequeue_count) for r in rejected] == [
            ("m-4", "not base64!", 1)
        ]
        assert "not base64" in rejected[0].reason


async def test_handled_marks_survive_reopening_and_filters_select_by_state(
    journal_spec: str,
) -> None:
    async with await open_refund_journal(journal_spec) as journal:
        await journal.record(
            [
                received(event_text("e-1", "Revoked"), "m-1"),
                received(event_text("e-2", "Refund"), "m-2"),  # the tables' spelling
                received(event_text("e-3", "ChargebackReversal"), "m-3"),
                received(event_text("e-4", "SomethingNew"), "m-4"),
            ]
        )
        assert await journal.mark_handled("e-1") is True
        assert await journal.mark_handled("e-1") is False  # once
        assert await journal.mark_handled("nope") is False
    async with await open_refund_journal(journal_spec, create=False) as journal:
        unhandled = await journal.unhandled()
        assert [event.event_id for event in unhandled] == ["e-2", "e-3", "e-4"]
        assert [e.event_id for e in await journal.unhandled(after=unhandled[0].sequence)] == [
            "e-3",
            "e-4",
        ]
        refunded = [e.event_id async for e in journal.events(states=["refunded"])]
        assert refunded == ["e-2"]  # stored under the documented name
        several = [e.event_id async for e in journal.events(states=["Revoked", "SomethingNew"])]
        assert several == ["e-1", "e-4"]
        still = [e.event_id async for e in journal.events(states=["Revoked"], unhandled_only=True)]
        assert still == []
        counts = await journal.counts()
        assert (counts.events, counts.handled, counts.unhandled) == (4, 1, 3)


async def test_many_events_page_through_in_order(journal_spec: str) -> None:
    async with await open_refund_journal(journal_spec, synchronous="normal") as journal:
        batch = [received(event_text(f"e-{n:04d}"), f"m-{n}") for n in range(1234)]
        assert set(await journal.record(batch)) == {RecordOutcome.RECORDED}
        ids = [event.event_id async for event in journal.events()]
        assert ids == [f"e-{n:04d}" for n in range(1234)]


async def test_files_that_are_not_refund_journals_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(RefundJournalError, match="no refund journal at"):
        SqliteRefundJournal(tmp_path / "missing.db", create=False)
    fulfillment = tmp_path / "fulfillment.db"
    await SqliteJournal(fulfillment).close()
    with pytest.raises(RefundJournalError, match="is a fulfillment journal"):
        SqliteRefundJournal(fulfillment)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(RefundJournalError, match="not a store_async refund journal"):
        SqliteRefundJournal(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(RefundJournalError, match="not a usable refund journal"):
        SqliteRefundJournal(garbage)
    newer = tmp_path / "newer.db"
    await SqliteRefundJournal(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(RefundJournalError, match="schema version 99"):
        SqliteRefundJournal(newer)
    with pytest.raises(RefundJournalError, match="synchronous"):
        SqliteRefundJournal(tmp_path / "x.db", synchronous="off")


async def test_a_closed_journal_says_so(journal_spec: str) -> None:
    journal = await open_refund_journal(journal_spec)
    await journal.close()
    await journal.close()  # twice is fine
    with pytest.raises(RefundJournalError, match="closed"):
        await journal.counts()


async def test_two_journals_on_one_store_record_each_id_once_and_mark_it_once(
    journal_spec: str,
) -> None:
    """Two syncers (and two consumers) sharing one file or one database: a copy of an event
    received by each at once is recorded by exactly one of them; one handled mark wins."""
    first = await open_refund_journal(journal_spec)
    second = await open_refund_journal(journal_spec)
    try:
        ids = [f"e-{n:03d}" for n in range(96)]
        # Overlapping batches, in opposite orders, 32 messages each (a receive's most).
        batches_a = [[received(event_text(i), f"a-{i}") for i in ids[k : k + 32]] for k in (0, 32)]
        batches_b = [
            [received(event_text(i), f"b-{i}") for i in reversed(ids[k : k + 32])] for k in (16, 48)
        ]

        async def run(
            journal: SqliteRefundJournal | PostgresRefundJournal,
            batches: list[list[ReceivedMessage]],
        ) -> list[str]:
            recorded = []
            for batch in batches:
                outcomes = await journal.record(batch)
                recorded += [
                    m.message_id.split("-", 1)[1]
                    for m, o in zip(batch, outcomes, strict=True)
                    if o is RecordOutcome.RECORDED
                ]
            return recorded

        by_a, by_b = await asyncio.gather(run(first, batches_a), run(second, batches_b))
        assert sorted(by_a + by_b) == ids[:80]  # each id recorded by exactly one of them
        counts = await second.counts()
        assert (counts.events, counts.deliveries) == (80, 128)
        marks = await asyncio.gather(
            *(journal.mark_handled(i) for i in ids[:80] for journal in (first, second))
        )
        assert marks.count(True) == 80
        assert (await first.counts()).handled == 80
    finally:
        await first.close()
        await second.close()


async def test_an_empty_batch_records_nothing(journal_spec: str) -> None:
    async with await open_refund_journal(journal_spec) as journal:
        assert await journal.record([]) == []
        assert await journal.counts() == RefundJournalCounts(
            events=0, handled=0, rejected=0, deliveries=0
        )
        assert await journal.unhandled() == []
