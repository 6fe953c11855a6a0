"""When each request starts: a constant arrival rate, then optional linear ramps.

The schedule is a pure function of the request's number, so generator processes share one
schedule without talking to each other: process ``k`` of ``N`` takes requests ``k, k+N, ...``
and together they start exactly the requests one process would have started, at the same
instants. Nothing here waits for an answer: that is the *open model*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from store_async.errors import ValidationError

__all__ = ["Schedule", "Stage"]


@dataclass(frozen=True, slots=True)
class Stage:
    """Ramp linearly from the previous rate to ``rate`` (calls/s) over ``duration`` seconds."""

    duration: float
    rate: float

    @classmethod
    def parse(cls, text: str) -> Stage:
        """``"30:500"``: 30 seconds ramping to 500 calls/s."""
        duration, separator, rate = text.partition(":")
        try:
            stage = cls(float(duration), float(rate))
        except ValueError:
            raise ValidationError(f"a stage is SECONDS:RATE, e.g. 30:500; got {text!r}") from None
        if not separator:
            raise ValidationError(f"a stage is SECONDS:RATE, e.g. 30:500; got {text!r}")
        return stage


@dataclass(frozen=True, slots=True)
class _Piece:
    start: float  # seconds from the start of the run
    duration: float
    rate_from: float
    rate_to: float
    before: float  # requests scheduled before this piece (a real number)

    @property
    def count(self) -> float:
        return (self.rate_from + self.rate_to) / 2 * self.duration


class Schedule:
    """``rate`` calls/s for ``duration`` seconds, then each :class:`Stage` in turn.

    :param rate: the starting rate (calls/s, >= 0).
    :param duration: seconds at that constant rate (>= 0).
    :param stages: ramps after it.
    :raises ValidationError: a negative or non-finite number, or a schedule with no calls.
    """

    def __init__(self, rate: float, duration: float, stages: Sequence[Stage] = ()) -> None:
        for name, value in (("rate", rate), ("duration", duration)):
            if not math.isfinite(value) or value < 0:
                raise ValidationError(f"{name} must be a finite number >= 0, got {value}")
        pieces: list[_Piece] = []
        start, before, previous = 0.0, 0.0, rate
        for segment in (Stage(duration, rate), *stages):
            if not (math.isfinite(segment.duration) and math.isfinite(segment.rate)):
                raise ValidationError("stage durations and rates must be finite")
            if segment.duration < 0 or segment.rate < 0:
                raise ValidationError("stage durations and rates must be >= 0")
            if segment.duration > 0:
                piece = _Piece(start, segment.duration, previous, segment.rate, before)
                pieces.append(piece)
                start += segment.duration
                before += piece.count
            previous = segment.rate
        self.rate = rate
        self.stages = tuple(stages)
        self.duration = start
        """Seconds of the whole schedule."""
        self.count = math.floor(before + 1e-9)
        """Requests in the whole schedule."""
        if self.count == 0:
            raise ValidationError("the schedule starts no call: give a rate and a duration > 0")
        self._pieces = tuple(pieces)

    @property
    def mean_rate(self) -> float:
        """Scheduled calls per second over the whole run (the target rate)."""
        return self.count / self.duration

    def time_of(self, number: int) -> float:
        """Seconds from the start at which request ``number`` (0-based) is due."""
        target = float(number)
        for piece in self._pieces:
            if target < piece.before + piece.count or piece is self._pieces[-1]:
                return piece.start + _time_within(piece, target - piece.before)
        raise AssertionError("unreachable: a schedule has at least one piece")  # pragma: no cover

    def count_before(self, offset: float) -> int:
        """How many calls are due before ``offset`` seconds (for per-second targets)."""
        for piece in self._pieces:
            if offset < piece.start + piece.duration:
                t = max(0.0, offset - piece.start)
                slope = (piece.rate_to - piece.rate_from) / piece.duration
                due = piece.before + piece.rate_from * t + slope * t * t / 2
                return min(self.count, max(0, math.ceil(due - 1e-9)))
        return self.count

    def rate_at(self, offset: float) -> float:
        """The scheduled rate at ``offset`` seconds (for plots)."""
        for piece in self._pieces:
            if offset < piece.start + piece.duration:
                fraction = max(0.0, offset - piece.start) / piece.duration
                return piece.rate_from + (piece.rate_to - piece.rate_from) * fraction
        return self._pieces[-1].rate_to


def _time_within(piece: _Piece, n: float) -> float:
    """Solve ``r0 t + (r1 - r0) t^2 / (2 d) = n`` for the time ``t`` of the n-th call."""
    r0, slope = piece.rate_from, (piece.rate_to - piece.rate_from) / piece.duration
    if abs(slope) < 1e-12:
        return n / r0 if r0 > 0 else 0.0
    discriminant = max(0.0, r0 * r0 + 2 * slope * n)
    t = (math.sqrt(discriminant) - r0) / slope
    return min(max(t, 0.0), piece.duration)
