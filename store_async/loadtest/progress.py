"""Live progress on a terminal: one line, rewritten once a second."""

from __future__ import annotations

from typing import Any, TextIO

from store_async.loadtest.schedule import Schedule

__all__ = ["Progress"]


class Progress:
    """Sums the per-second snapshots of every generator process and shows them.

    :param stream: a terminal (``None``: show nothing, which costs nothing).
    """

    def __init__(self, stream: TextIO | None, schedule: Schedule, *, processes: int) -> None:
        self._stream = stream
        self._schedule = schedule
        self._latest: dict[int, dict[str, Any]] = {}
        self._processes = processes
        self._shown = False

    def update(self, snapshot: dict[str, Any]) -> None:
        """One process's snapshot of one second."""
        if self._stream is None:
            return
        self._latest[int(snapshot["index"])] = snapshot
        if len(self._latest) < self._processes:
            return
        snapshots = list(self._latest.values())
        second = max(int(s["second"]) for s in snapshots)
        started = sum(int(s["started"]) for s in snapshots)
        line = (
            f"\r[{second:>4d}/{self._schedule.duration:.0f} s] started {started:,} of "
            f"{self._schedule.count:,}  in flight {sum(int(s['in_flight']) for s in snapshots):,}"
            f"  errors {sum(int(s['errors']) for s in snapshots):,}"
            f"  late {sum(int(s['late_starts']) for s in snapshots):,}"
            f"  p99 {max(float(s['p99_ms']) for s in snapshots):,.1f} ms"
            f"  cpu {sum(float(s['cpu']) for s in snapshots):.0%}"
        )
        self._stream.write(line.ljust(100))
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the progress line."""
        if self._stream is not None and self._shown:
            self._stream.write("\n")
            self._stream.flush()
