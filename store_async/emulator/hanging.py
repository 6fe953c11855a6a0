"""Requests held by a ``HANG`` fault until the test releases them.

A test that needs a request "in flight" (to cancel its caller, to fill a connection pool, to
time an attempt out) awaits :meth:`HangingRequests.wait_for` instead of sleeping, then calls
:meth:`HangingRequests.release`; the held requests then run as usual (and may apply).
"""

from __future__ import annotations

import asyncio

__all__ = ["HangingRequests"]


class HangingRequests:
    """The requests of one emulator held by ``HANG``."""

    __slots__ = ("_changed", "_gate", "_running", "held")

    def __init__(self) -> None:
        self.held = 0
        """Requests holding now."""
        self._running = 0  # held or released and not yet answered
        self._gate = asyncio.Event()
        self._changed = asyncio.Condition()

    async def hold(self) -> None:
        """Hold one request until :meth:`release` (called by the emulator's pipeline)."""
        gate = self._gate
        self.held += 1
        self._running += 1
        await self._notify()
        try:
            await gate.wait()
        finally:
            if not gate.is_set():  # cancelled while held (the emulator stopped)
                self.held -= 1

    async def done(self) -> None:
        """A request that was held has been answered (or cut, or cancelled)."""
        self._running -= 1
        await self._notify()

    def release(self) -> int:
        """Let every request held now continue; later ``HANG`` decisions hold again.

        :returns: how many requests were released.
        """
        released, self.held = self.held, 0
        self._gate.set()
        self._gate = asyncio.Event()
        return released

    async def wait_for(self, count: int = 1) -> None:
        """Return once at least ``count`` requests are held."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    async def wait_answered(self) -> None:
        """Return once every request that was held has been answered (after a release)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._running == 0)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
