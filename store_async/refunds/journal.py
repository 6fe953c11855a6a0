"""The refund journal: what a journal must do, and the records it keeps.

Exactly once per event id rests on one order of steps: a received batch is **recorded and
committed first**, and only then are its messages deleted from the queue. A crash between the
two leaves messages that reappear after their visibility timeout; recording them again finds
their event ids and adds nothing (a *duplicate*), and they are deleted then. Unreadable
messages are recorded as *rejected*, keyed by their queue message id, and deleted the same way.

The application side reads recorded events that are not yet *handled*, in the order they were
recorded (a sequence number), and marks each handled after acting on it; a crash in between
hands the same event out again, so a handler must be idempotent per event id for that one
window (or use :meth:`RefundJournal.mark_handled`'s answer: ``False`` means another consumer
marked it first).

:class:`RefundJournal` is a protocol: :class:`~store_async.refunds.SqliteRefundJournal` is the
embedded default; :class:`~store_async.refunds.PostgresRefundJournal` keeps the same records in
a PostgreSQL database (a fleet's), and :func:`~store_async.refunds.open_refund_journal` picks
one by path or DSN.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import attrs
import orjson

from store_async.codec import structure
from store_async.errors import StoreError
from store_async.models.refunds import RefundEvent, RefundEventState
from store_async.refunds.message import DecodedEvent, Rejection

__all__ = [
    "JournaledEvent",
    "ReceivedMessage",
    "RecordOutcome",
    "RefundJournal",
    "RefundJournalCounts",
    "RefundJournalError",
    "RejectedMessage",
    "state_name",
]


class RefundJournalError(StoreError):
    """The refund journal cannot be used (not a refund journal, newer schema, unwritable)."""


class RecordOutcome(enum.Enum):
    """What recording one received message did."""

    RECORDED = "recorded"
    """A new event id: recorded, not yet handled."""
    DUPLICATE = "duplicate"
    """The event id (or the rejected message id) was recorded before: nothing added."""
    REJECTED = "rejected"
    """An unreadable message: recorded as rejected with its raw text."""


@attrs.frozen(kw_only=True)
class ReceivedMessage:
    """One received queue message, decoded (or not)."""

    message_id: str
    dequeue_count: int
    decoded: DecodedEvent | Rejection


@attrs.frozen(kw_only=True)
class JournaledEvent:
    """A recorded event. ``json`` is the event exactly as decoded from the queue."""

    sequence: int
    """Order of recording (what the feed resumes from)."""
    event_id: str
    bundle_key: str
    state: str
    """``data.eventState`` as the documented name (``Revoked``...) or the service's text."""
    json: bytes = attrs.field(repr=False)
    message_id: str
    received_at: float
    deliveries: int
    """How many copies of this event were received (1 + duplicates and redeliveries)."""
    handled_at: float | None

    @property
    def event(self) -> RefundEvent:
        """The typed event (parsed again from :attr:`json`)."""
        return structure(orjson.loads(self.json), RefundEvent)


@attrs.frozen(kw_only=True)
class RejectedMessage:
    """A message that was not a readable event, kept with its raw text."""

    message_id: str
    reason: str
    text: str = attrs.field(repr=False)
    dequeue_count: int
    rejected_at: float


@attrs.frozen(kw_only=True)
class RefundJournalCounts:
    events: int
    handled: int
    rejected: int
    deliveries: int
    """Copies of events received in all (``deliveries - events`` were duplicates)."""

    @property
    def unhandled(self) -> int:
        return self.events - self.handled


def state_name(state: RefundEventState | str) -> str:
    """The journal's text for a state: the documented name, or the service's own text."""
    return state.value if isinstance(state, RefundEventState) else state


class RefundJournal(Protocol):
    """Where refund events are recorded once per event id (see the module docstring).

    Every method is a coroutine; a journal is shared by the sync loop and the feed of one
    process, and may be shared between processes (SQLite: one file; PostgreSQL: one database).
    """

    async def record(self, messages: Sequence[ReceivedMessage]) -> list[RecordOutcome]:
        """Record a received batch in **one committed transaction**, durable when this returns;
        one outcome per message, in order. Idempotent: recording a batch again changes nothing
        but the delivery counts."""
        ...

    async def unhandled(self, *, after: int = 0, limit: int = 100) -> list[JournaledEvent]:
        """Recorded, not yet handled events with ``sequence > after``, in sequence order."""
        ...

    async def mark_handled(self, event_id: str) -> bool:
        """Mark an event handled; ``False`` if it was handled already (or is unknown)."""
        ...

    def events(
        self, *, states: Sequence[str] = (), unhandled_only: bool = False
    ) -> AsyncIterator[JournaledEvent]:
        """Every recorded event (one per event id) in sequence order, optionally filtered by
        state name (case-insensitive) and by not being handled."""
        ...

    def rejected(self) -> AsyncIterator[RejectedMessage]:
        """Every rejected message, in the order they were recorded."""
        ...

    async def counts(self) -> RefundJournalCounts: ...

    async def close(self) -> None: ...
