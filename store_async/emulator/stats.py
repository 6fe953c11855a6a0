"""Counters of what the emulator saw: requests, injected faults and answers, by endpoint."""

from __future__ import annotations

from collections import Counter, deque

from store_async.emulator.faults import FaultKind

__all__ = ["EmulatorStats"]

ABORTED = 0
"""The status recorded for a request whose connection was cut instead of answered."""


class EmulatorStats:
    """Live counters; read them after (or during) a run."""

    __slots__ = ("answers", "fault_log", "faults", "requests")

    def __init__(self, *, log_size: int = 100_000) -> None:
        self.requests: Counter[str] = Counter()
        """Requests by endpoint name (``consume``, ``query``, ``token``...)."""
        self.faults: Counter[tuple[str, FaultKind]] = Counter()
        """Injected faults by ``(endpoint, kind)``."""
        self.answers: Counter[tuple[str, int]] = Counter()
        """Answers by ``(endpoint, status)``; status 0 means the connection was cut."""
        self.fault_log: deque[tuple[int, str, FaultKind]] = deque(maxlen=log_size)
        """The latest faults as ``(request number, endpoint, kind)``, in arrival order."""

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
