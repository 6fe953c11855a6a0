"""Counters of what the emulator saw: requests, injected faults and answers, by endpoint."""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from store_async.emulator.faults import FaultKind

__all__ = ["EmulatorStats"]

ABORTED = 0
"""The status recorded for a request whose connection was cut instead of answered."""


class EmulatorStats:
    """Live counters; read them after (or during) a run."""

    __slots__ = ("_watches", "answers", "fault_log", "faults", "requests")

    def __init__(self, *, log_size: int = 100_000) -> None:
        self.requests: Counter[str] = Counter()
        """Requests by endpoint name (``consume``, ``query``, ``token``...)."""
        self.faults: Counter[tuple[str, FaultKind]] = Counter()
        """Injected faults by ``(endpoint, kind)``."""
        self.answers: Counter[tuple[str, int]] = Counter()
        """Answers by ``(endpoint, status)``; status 0 means the connection was cut."""
        self.fault_log: deque[tuple[int, str, FaultKind]] = deque(maxlen=log_size)
        """The latest faults as ``(request number, endpoint, kind)``, in arrival order."""
        self._watches: list[tuple[str, int, asyncio.Future[None]]] = []

    def counted(self, endpoint: str) -> None:
        """Count one request to ``endpoint`` and wake the :meth:`wait_for_requests` it
        satisfies."""
        self.requests[endpoint] += 1
        if self._watches:
            count = self.requests[endpoint]
            for watch in [w for w in self._watches if w[0] == endpoint and w[1] <= count]:
                self._watches.remove(watch)
                if not watch[2].done():
                    watch[2].set_result(None)

    async def wait_for_requests(self, count: int, endpoint: str) -> None:
        """Return once ``endpoint`` has received ``count`` requests in all (woken by the
        request itself: no polling)."""
        if self.requests[endpoint] >= count:
            return
        watch = (endpoint, count, asyncio.get_running_loop().create_future())
        self._watches.append(watch)
        try:
            await watch[2]
        finally:
            if watch in self._watches:  # cancelled: no stale watch left behind
                self._watches.remove(watch)

    def faults_by_kind(self, endpoint: str | None = None) -> Counter[FaultKind]:
        """Injected faults by kind (of one endpoint, or all)."""
        counts: Counter[FaultKind] = Counter()
        for (name, kind), count in self.faults.items():
            if endpoint is None or name == endpoint:
                counts[kind] += count
        return counts

    def __repr__(self) -> str:
        return (
            f"EmulatorStats(requests={sum(self.requests.values())}, "
            f"faults={sum(self.faults.values())})"
        )
