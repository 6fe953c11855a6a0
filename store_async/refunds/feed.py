"""``RefundFeed``: refund events for the application, each until it is marked handled.

::

    async with StoreClient(credential) as store, SqliteRefundJournal("refunds.db") as journal:
        async for refund in RefundFeed(store, journal):
            if refund.state is RefundEventState.REVOKED:
                await claw_back(refund.event)              # idempotent per refund.event_id
            await refund.mark_handled()

The feed first hands out what the journal recorded but nobody marked handled (what a crashed
run left), then syncs the queue batch by batch (receive, record, delete: see
:mod:`store_async.refunds.sync`) and hands out each newly recorded event. It ends when the queue
is drained, or polls for ever with ``follow=True``. An event that is not marked handled is
handed out again by the next feed, never twice by the same one. Two feeds on one journal (any
kind, any processes) are not exclusive: both may hand out the same event, and exactly one
:meth:`FeedEvent.mark_handled` answers ``True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from store_async.errors import ValidationError
from store_async.models.refunds import RefundEvent, RefundEventState, refund_event_state
from store_async.refunds.journal import JournaledEvent, RefundJournal
from store_async.refunds.queue import RefundQueue, SasSource
from store_async.refunds.sync import RefundSync, SyncReport

__all__ = ["FeedEvent", "RefundFeed"]


class FeedEvent:
    """One recorded refund event handed to the application."""

    __slots__ = ("_journal", "_record", "event")

    def __init__(self, record: JournaledEvent, journal: RefundJournal) -> None:
        self._record = record
        self._journal = journal
        self.event: RefundEvent = record.event
        """The typed event."""

    @property
    def event_id(self) -> str:
        return self._record.event_id

    @property
    def bundle_key(self) -> str:
        """``orderId:lineItemId:productId``: key your claw-back records by it."""
        return self._record.bundle_key

    @property
    def state(self) -> RefundEventState | str:
        return refund_event_state(self._record.state)

    @property
    def json(self) -> bytes:
        """The event as decoded from the queue."""
        return self._record.json

    @property
    def sequence(self) -> int:
        return self._record.sequence

    async def mark_handled(self) -> bool:
        """Record that the application acted on this event; ``False`` if it was marked already
        (by another consumer of the same journal)."""
        return await self._journal.mark_handled(self._record.event_id)

    def __repr__(self) -> str:
        return f"FeedEvent({self.event_id!r}, {self._record.state}, {self.bundle_key!r})"


class RefundFeed:
    """Recorded, not-yet-handled refund events, then the queue's new ones (``async for``).

    :param store: the SAS source (a ``StoreClient``), or ``None`` to hand out only what the
        journal already holds (no queue access).
    :param journal: the refund journal (:class:`~store_async.refunds.SqliteRefundJournal`...).
    :param follow: keep polling the queue when it is empty instead of ending.
    :param poll_interval: seconds between polls with ``follow``.
    :param visibility_timeout: seconds a received message stays hidden (see
        :class:`RefundQueue`).
    :param page: events read from the journal at a time.
    :param sleep: the wait between polls (inject a fake one in tests).
    """

    def __init__(
        self,
        store: SasSource | None,
        journal: RefundJournal,
        *,
        follow: bool = False,
        poll_interval: float = 5.0,
        visibility_timeout: int = 30,
        page: int = 100,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValidationError("page must be an int >= 1")
        if not poll_interval > 0:
            raise ValidationError("poll_interval must be > 0 seconds")
        self._store = store
        self._journal = journal
        self._follow = follow
        self._poll = poll_interval
        self._visibility = visibility_timeout
        self._page = page
        self._sleep = sleep
        self.report = SyncReport()
        """What the feed's queue syncs did (received, recorded, duplicates, rejected...)."""

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[FeedEvent]:
        journal = self._journal
        after = 0
        if self._store is None:
            queue = None
        else:
            queue = RefundQueue(self._store, visibility_timeout=self._visibility)
        try:
            sync = None if queue is None else RefundSync(queue, journal)
            if sync is not None:
                sync.report = self.report
            while True:
                page = await journal.unhandled(after=after, limit=self._page)
                for record in page:
                    after = record.sequence
                    yield FeedEvent(record, journal)
                if page:
                    continue
                if sync is None:
                    return
                if await sync.step():
                    continue
                if not self._follow:
                    return
                await self._sleep(self._poll)
        finally:
            if queue is not None:
                await queue.close()
