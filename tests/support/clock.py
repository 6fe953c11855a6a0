"""A clock that only moves when told to."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that only moves when told to (or when ``sleep`` is awaited)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """A sleep that advances this clock instead of waiting (yields once to the loop)."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
