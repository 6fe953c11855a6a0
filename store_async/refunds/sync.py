"""Moving refund events from the queue into the journal: receive, record (commit), delete.

One :meth:`RefundSync.step` receives up to 32 messages (hidden for the visibility timeout),
decodes them, records the whole batch in one journal transaction, and only then deletes them.
Whatever is killed where, no event is lost (a message is deleted only after its record is
durable) and none is recorded twice (its event id is the journal's key).

:meth:`RefundSync.run` repeats steps until the queue is empty. The queue is *drained* when a
receive finds nothing visible **and** the queue's approximate message count is 0 (messages
received by a reader that died are hidden, not gone, until their visibility timeout passes).
Without ``until_empty`` the run stops at the first empty receive; with it, it also waits (at
most ``max_wait`` seconds) for hidden messages to reappear and records them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import attrs

from store_async.errors import ValidationError
from store_async.refunds.journal import ReceivedMessage, RecordOutcome, RefundJournal
from store_async.refunds.message import decode_message
from store_async.refunds.queue import RefundQueue

__all__ = ["RefundSync", "SyncReport"]


@attrs.define(kw_only=True)
class SyncReport:
    """What a sync did (cumulative over its steps)."""

    received: int = 0
    """Messages received (every copy)."""
    recorded: int = 0
    """New events recorded."""
    duplicates: int = 0
    """Copies of events (or rejected messages) recorded before: deleted, nothing added."""
    rejected: int = 0
    """Unreadable messages recorded as rejected."""
    deleted: int = 0
    delete_missed: int = 0
    """Deletes the queue refused because the copy was received again elsewhere (harmless:
    that copy is a duplicate for its reader)."""
    batches: int = 0
    drained: bool = False
    """The run ended with the queue empty."""
    stopped: bool = False
    """The run was asked to stop (a signal) before the queue was empty."""


class RefundSync:
    """Receive -> record -> delete, over one :class:`RefundQueue` and one journal.

    :param queue: the refund queue (its SAS source and visibility timeout).
    :param journal: where events are recorded once per event id.
    :param sleep: the wait between polls for hidden messages (inject a fake one in tests).
    :param clock: monotonic clock bounding that wait.
    """

    def __init__(
        self,
        queue: RefundQueue,
        journal: RefundJournal,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.journal = journal
        self.report = SyncReport()
        self._sleep = sleep
        self._clock = clock

    async def step(self) -> int:
        """One batch: returns how many messages were received (0: none visible now)."""
        messages = await self.queue.receive()
        if not messages:
            return 0
        batch = [
            ReceivedMessage(
                message_id=message.message_id,
                dequeue_count=message.dequeue_count,
                decoded=decode_message(message.text),
            )
            for message in messages
        ]
        outcomes = await self.journal.record(batch)  # committed: now the deletes are safe
        report = self.report
        report.batches += 1
        report.received += len(messages)
        report.recorded += outcomes.count(RecordOutcome.RECORDED)
        report.duplicates += outcomes.count(RecordOutcome.DUPLICATE)
        report.rejected += outcomes.count(RecordOutcome.REJECTED)
        deleted = await asyncio.gather(*(self.queue.delete(message) for message in messages))
        report.deleted += sum(deleted)
        report.delete_missed += len(deleted) - sum(deleted)
        return len(messages)

    async def run(
        self,
        *,
        until_empty: bool = False,
        max_wait: float = 60.0,
        poll_interval: float = 1.0,
        stop: asyncio.Event | None = None,
        on_batch: Callable[[SyncReport], None] | None = None,
    ) -> SyncReport:
        """Steps until the queue is drained (see the module docstring) or ``stop`` is set.

        :param until_empty: also wait for hidden (in-flight) messages to reappear.
        :param max_wait: most seconds spent waiting for hidden messages.
        :param poll_interval: seconds between receives while waiting for them.
        :param stop: set it to end after the current batch (``report.stopped``).
        :param on_batch: called with the report after each batch (progress).
        """
        if not max_wait >= 0 or not poll_interval > 0:
            raise ValidationError("max_wait must be >= 0 and poll_interval > 0 seconds")
        report = self.report
        waiting_since: float | None = None
        while True:
            if stop is not None and stop.is_set():
                report.stopped = True
                return report
            if await self.step():
                waiting_since = None
                if on_batch is not None:
                    on_batch(report)
                continue
            if await self.queue.approximate_count() == 0:
                report.drained = True
                return report
            if not until_empty:
                return report
            now = self._clock()
            if waiting_since is None:
                waiting_since = now
            elif now - waiting_since >= max_wait:
                return report
            await self._sleep(poll_interval)
