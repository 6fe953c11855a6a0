"""SqliteRefundJournal: once per event id, rejected messages kept whole, handled marks, files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from store_async.fulfillment import SqliteJournal
from store_async.refunds import (
    ReceivedMessage,
    RecordOutcome,
    RefundEventState,
    RefundJournalCounts,
    RefundJournalError,
    SqliteRefundJournal,
    decode_message,
)
from tests.test_refund_models import message, with_state


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
    tmp_path: Path,
) -> None:
    async with SqliteRefundJournal(tmp_path / "refunds.db") as journal:
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
    tmp_path: Path,
) -> None:
    path = tmp_path / "refunds.db"
    async with SqliteRefundJournal(path) as journal:
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
    async with SqliteRefundJournal(path, create=False) as journal:
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


async def test_many_events_page_through_in_order(tmp_path: Path) -> None:
    async with SqliteRefundJournal(tmp_path / "refunds.db", synchronous="normal") as journal:
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


async def test_a_closed_journal_says_so(tmp_path: Path) -> None:
    journal = SqliteRefundJournal(tmp_path / "refunds.db")
    await journal.close()
    await journal.close()  # twice is fine
    with pytest.raises(RefundJournalError, match="closed"):
        await journal.counts()
