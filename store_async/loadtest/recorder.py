"""What a generator measured: HDR histograms and counters, mergeable exactly.

Latencies are recorded in microseconds into HdrHistogram (``hdrhistogram``): per operation and
outcome class for the whole run (3 significant digits) and per second of the schedule (2
digits: the plots need no more, and a long run keeps thousands of them). Histograms of the same
shape add bucket by bucket, so the histograms of N processes or N machines merge **exactly**:
the merged p99 is the p99 of all the calls, not an average of p99s.

A part (:meth:`Recorder.to_part`) is plain JSON: counters plus base64 HdrHistogram encodings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from hdrh.histogram import HdrHistogram

from store_async.errors import ValidationError

__all__ = ["PART_FORMAT", "Recorder", "new_histogram"]

PART_FORMAT: Final = "store-async-loadtest/1"
HIGHEST_US: Final = 3_600_000_000
"""One hour, in microseconds: the longest latency a histogram holds (longer is clamped)."""
OVERALL_DIGITS: Final = 3
SECOND_DIGITS: Final = 2

COUNTERS: Final = (
    "calls",
    "late_starts",
    "attempts",
    "throttled_429",
    "retry_after_s",
    "backoff_s",
    "token_requests",
    "cpu_s",
    "max_in_flight",
    "drain_cancelled",
    "dispatch_s",
    "wall_s",
    "warmup_calls",
)
_MAXIMA: Final = frozenset({"max_in_flight", "dispatch_s", "wall_s"})


def new_histogram(digits: int = OVERALL_DIGITS) -> HdrHistogram:
    """An empty latency histogram (1 µs .. 1 h)."""
    return HdrHistogram(1, HIGHEST_US, digits)


def _record(histogram: HdrHistogram, microseconds: int) -> None:
    histogram.record_value(min(max(microseconds, 1), HIGHEST_US))


class Recorder:
    """Histograms and counters of one generator (or of several, merged)."""

    def __init__(self) -> None:
        self.overall: dict[str, HdrHistogram] = {}
        """``"operation|outcome"`` -> latency histogram of the whole run."""
        self.seconds: dict[int, dict[str, HdrHistogram]] = {}
        """Second of the schedule -> ``"operation|outcome"`` -> latency histogram."""
        self.late_by_second: Counter[int] = Counter()
        self.start_lag = new_histogram()
        """How late each call started after its scheduled instant (µs)."""
        self.loop_lag = new_histogram()
        """How late a 10 ms timer fired on the generator's event loop (µs)."""
        self.counters: dict[str, float] = dict.fromkeys(COUNTERS, 0)

    def record(self, key: str, scheduled: float, start_lag: float, latency: float) -> None:
        """One finished call: ``key`` is ``"operation|outcome"``; times in seconds, ``scheduled``
        from the start of the run, ``latency`` from the scheduled instant."""
        microseconds = int(latency * 1e6)
        histogram = self.overall.get(key)
        if histogram is None:
            histogram = self.overall[key] = new_histogram()
        _record(histogram, microseconds)
        second = int(scheduled)
        per_second = self.seconds.get(second)
        if per_second is None:
            per_second = self.seconds[second] = {}
        histogram = per_second.get(key)
        if histogram is None:
            histogram = per_second[key] = new_histogram(SECOND_DIGITS)
        _record(histogram, microseconds)
        _record(self.start_lag, int(start_lag * 1e6))

    # -- merge and serialise -------------------------------------------------------------

    def merge(self, other: Recorder, *, second_shift: int = 0) -> None:
        """Add ``other`` into this recorder (exactly: bucket counts add)."""
        for key, histogram in other.overall.items():
            mine = self.overall.get(key)
            if mine is None:
                mine = self.overall[key] = new_histogram()
            mine.add(histogram)
        for second, histograms in other.seconds.items():
            target = self.seconds.setdefault(second + second_shift, {})
            for key, histogram in histograms.items():
                mine = target.get(key)
                if mine is None:
                    mine = target[key] = new_histogram(SECOND_DIGITS)
                mine.add(histogram)
        for second, count in other.late_by_second.items():
            self.late_by_second[second + second_shift] += count
        self.start_lag.add(other.start_lag)
        self.loop_lag.add(other.loop_lag)
        for name, value in other.counters.items():
            if name in _MAXIMA:
                self.counters[name] = max(self.counters.get(name, 0), value)
            else:
                self.counters[name] = self.counters.get(name, 0) + value

    def to_part(self) -> dict[str, Any]:
        """Counters and encoded histograms, as JSON-ready data."""
        return {
            "counters": dict(self.counters),
            "overall": {key: _encode(h) for key, h in sorted(self.overall.items())},
            "seconds": {
                str(second): {key: _encode(h) for key, h in sorted(histograms.items())}
                for second, histograms in sorted(self.seconds.items())
            },
            "late_by_second": {str(s): n for s, n in sorted(self.late_by_second.items())},
            "start_lag": _encode(self.start_lag),
            "loop_lag": _encode(self.loop_lag),
        }

    @classmethod
    def from_part(cls, part: Mapping[str, Any]) -> Recorder:
        """The recorder :meth:`to_part` described; ``ValidationError`` when it is malformed."""
        recorder = cls()
        try:
            for name, value in part["counters"].items():
                recorder.counters[str(name)] = float(value)
            recorder.overall = {str(k): _decode(v) for k, v in part["overall"].items()}
            recorder.seconds = {
                int(second): {str(k): _decode(v) for k, v in histograms.items()}
                for second, histograms in part["seconds"].items()
            }
            recorder.late_by_second = Counter(
                {int(s): int(n) for s, n in part.get("late_by_second", {}).items()}
            )
            recorder.start_lag = _decode(part["start_lag"])
            recorder.loop_lag = _decode(part["loop_lag"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValidationError(f"not a load-test histogram part ({error!s})") from None
        return recorder

    # -- reading -------------------------------------------------------------------------

    def combined(self, keys: Iterable[str] | None = None) -> HdrHistogram:
        """One histogram of every call (or of the given ``"operation|outcome"`` keys)."""
        total = new_histogram()
        for key, histogram in self.overall.items():
            if keys is None or key in keys:
                total.add(histogram)
        return total


def _encode(histogram: HdrHistogram) -> str:
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def _decode(text: object) -> HdrHistogram:
    if not isinstance(text, str) or not text:
        raise ValueError("a histogram must be a base64 string")
    try:
        return HdrHistogram.decode(text)
    except Exception as error:  # hdrh raises assorted errors on corrupt input
        raise ValueError(f"corrupt histogram: {type(error).__name__}") from None
