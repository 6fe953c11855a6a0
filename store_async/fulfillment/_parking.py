"""The fulfiller's inbox: a bounded FIFO from the feeder, and per-user parking for pacing.

Workers take rows from two lanes: rows *released* from a user's parking (first) and rows from
the feeder. A worker that finds a row's user over its rate (:class:`~store_async.pacing.UserPacer`)
parks the row and takes another: a parked user holds no worker, and the other users' rows go
ahead. One timer per parked user releases its rows one at a time, each when the pacer allows
it; the worker that sends a released row schedules the next, so a user's backlog drains at
exactly its rate. A user's rows keep their input order.

Memory stays bounded: the feeder waits while ``max_parked`` rows are parked (or ``capacity``
fed rows wait), so a hot user's backlog cannot grow without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from store_async.pacing import UserPacer

__all__ = ["Inbox", "Released"]

F = TypeVar("F")  # a row as the feeder queues it
P = TypeVar("P")  # a row ready to send, as it is parked


class Released(Generic[P]):
    """A parked row, released to be sent (the worker asks the pacer again)."""

    __slots__ = ("row", "user")

    def __init__(self, user: str, row: P) -> None:
        self.user = user
        self.row = row


class _Parking(Generic[P]):
    """One parked user: its waiting rows, its release timer, rows released but not taken."""

    __slots__ = ("released", "rows", "timer")

    def __init__(self) -> None:
        self.rows: deque[P] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.released = 0


class Inbox(Generic[F, P]):
    """What the workers take rows from (see the module docstring).

    :param capacity: fed rows waiting at most (the feeder waits beyond).
    :param pacer: the per-user pacer; ``None``: no pacing (:meth:`admit` must not be called).
    :param max_parked: parked rows at most before the feeder waits.
    :param on_change: called when the number of parked users or rows changes (for counters).
    """

    def __init__(
        self,
        capacity: int,
        pacer: UserPacer | None,
        *,
        max_parked: int = 10_000,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self._capacity = capacity
        self._pacer = pacer
        self._max_parked = max_parked
        self._on_change = on_change
        self._feed: deque[F] = deque()
        self._ready: deque[Released[P]] = deque()
        self._parked: dict[str, _Parking[P]] = {}
        self._parked_rows = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.users_parked = 0
        """Users parked at least once (a user parked twice counts twice)."""

    @property
    def parked_users(self) -> int:
        return len(self._parked)

    @property
    def parked_rows(self) -> int:
        return self._parked_rows

    # -- the feeder's side --------------------------------------------------------------------

    async def put(self, row: F) -> None:
        """Queue a fed row; wait while the inbox is full (fed or parked rows)."""
        while len(self._feed) >= self._capacity or self._parked_rows >= self._max_parked:
            await self._wait(self._putters)
        self._feed.append(row)
        self._wake(self._getters)

    def close(self) -> None:
        """No more fed rows: workers get ``None`` once every row is taken and none is parked."""
        self._closed = True
        self._wake_all_if_done()

    # -- the workers' side --------------------------------------------------------------------

    async def get(self) -> F | Released[P] | None:
        """The next row: a released one first, then a fed one; ``None`` when all is done."""
        while True:
            if self._ready:
                released = self._ready.popleft()
                parking = self._parked.get(released.user)
                if parking is not None:
                    parking.released -= 1
                return released
            if self._feed:
                row = self._feed.popleft()
                self._wake(self._putters)
                if not self._feed:
                    self._wake_all_if_done()  # the idle workers may end: this row is taken
                return row
            if self._closed and not self._parked:
                return None
            await self._wait(self._getters)

    def admit(self, user: str, row: P, *, released: bool) -> float | None:
        """Send ``row`` now: the send's stamp (recorded; pass it to :meth:`answered`); or
        ``None``: it was parked.

        A fed row of a user with a backlog waits behind it; a released row goes back to the
        front of its user's backlog if the pacer (or a 429 park) still says wait.
        """
        pacer = self._pacer
        assert pacer is not None, "admit() is for paced inboxes"
        parking = self._parked.get(user)
        if parking is not None and not released:
            self._park(user, parking, row, front=False)
            return None
        if pacer.delay(user) > 0.0:
            if parking is None:
                parking = self._parked[user] = _Parking()
                self.users_parked += 1
            self._park(user, parking, row, front=released)
            return None
        stamp = pacer.record(user)
        if parking is not None:
            if parking.rows:
                self._schedule(user, parking)
            elif not parking.released and parking.timer is None:
                self._forget(user)
        return stamp

    def answered(self, user: str, stamp: float) -> None:
        """The send stamped ``stamp`` is over: count it from now (see ``UserPacer.answered``)."""
        assert self._pacer is not None
        self._pacer.answered(user, stamp)

    def throttled(self, user: str, retry_after: float | None, row: P) -> None:
        """The Store answered 429 for ``row``: park its user for ``retry_after`` seconds (at
        least until its window allows another send) and put the row at the front of the
        user's backlog: it is sent again after the park. Needs a pacer."""
        pacer = self._pacer
        assert pacer is not None, "throttled() is for paced inboxes"
        if retry_after is not None:
            pacer.park(user, retry_after)
        parking = self._parked.get(user)
        if parking is None:
            parking = self._parked[user] = _Parking()
            self.users_parked += 1
        self._park(user, parking, row, front=True)

    def drain(self) -> list[F | Released[P]]:
        """After a stop: every row not taken, fed or parked; cancels the release timers."""
        rows: list[F | Released[P]] = [*self._ready, *self._feed]
        for user, parking in self._parked.items():
            if parking.timer is not None:
                parking.timer.cancel()
            rows.extend(Released(user, row) for row in parking.rows)
        self._ready.clear()
        self._feed.clear()
        self._parked.clear()
        self._parked_rows = 0
        return rows

    # -- parking ------------------------------------------------------------------------------

    def _park(self, user: str, parking: _Parking[P], row: P, *, front: bool) -> None:
        if front:
            parking.rows.appendleft(row)
        else:
            parking.rows.append(row)
        self._parked_rows += 1
        self._schedule(user, parking)
        self._changed()

    def _schedule(self, user: str, parking: _Parking[P]) -> None:
        if parking.timer is None and parking.rows:
            assert self._pacer is not None
            loop = asyncio.get_running_loop()
            parking.timer = loop.call_later(self._pacer.delay(user), self._release, user)

    def _release(self, user: str) -> None:
        parking = self._parked.get(user)
        if parking is None:
            return
        parking.timer = None
        if not parking.rows:
            if not parking.released:
                self._forget(user)
            return
        self._ready.append(Released(user, parking.rows.popleft()))
        parking.released += 1
        self._parked_rows -= 1
        self._changed()
        self._wake(self._getters)
        self._wake(self._putters)

    def _forget(self, user: str) -> None:
        del self._parked[user]
        self._changed()
        self._wake_all_if_done()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self._parked), self._parked_rows)

    # -- waiting ------------------------------------------------------------------------------

    async def _wait(self, waiters: deque[asyncio.Future[None]]) -> None:
        future = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._wake(waiters)  # pass the wake-up on: it was meant for someone
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
            raise

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return

    def _wake_all_if_done(self) -> None:
        if self._closed and not self._feed and not self._ready and not self._parked:
            while self._getters:
                future = self._getters.popleft()
                if not future.done():
                    future.set_result(None)
