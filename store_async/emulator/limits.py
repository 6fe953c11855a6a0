"""Per-user rate limits, like the Store's fine-grained rate limiting (STORE_API.md 6 and 10).

The Store counts the operations of each user ({userId; publisherId}) over a window: 200 per 300 s
service-to-service, 100 per 300 s for queries. Over the limit it answers 429 with a
``Retry-After`` header and the text "The rate limit of {X} operations in {Y} seconds has been
exceeded for aspect {Z}.". Whether it counts in fixed or sliding windows is not documented; the
emulator takes the strict reading, a sliding window: at any moment, the arrivals of the last
``seconds`` (refused ones excluded) must stay below the limit.

``Retry-After`` is sent in fractional seconds (when the oldest counted arrival leaves the
window), so that tests at small limits run fast; the Store's granularity is not documented.

Deliberately written apart from :mod:`store_async.pacing` (the client's side): a bug there must
not be mirrored here, where the tests would miss it.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Final

from store_async.emulator.wire import ApiError

__all__ = ["QUERY_ENDPOINTS", "UserLimits"]

QUERY_ENDPOINTS: Final = frozenset({"query"})
"""Endpoints counted against the (lower) query limit; the others share the main one."""

ASPECT: Final = "{userId; publisherId}"


class UserLimits:
    """Sliding-window limits per user: ``ops`` per ``seconds`` (``query_ops`` for queries).

    :param ops: operations per window for consume, grant and the other limited endpoints.
    :param seconds: the window, in seconds.
    :param query_ops: operations per window for queries (default: half of ``ops``, as the
        Store's 100 to 200).
    :param clock: monotonic seconds (inject one to test without waiting).
    """

    def __init__(
        self,
        ops: int,
        seconds: float,
        *,
        query_ops: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(ops, bool) or not isinstance(ops, int) or ops < 1:
            raise ValueError(f"ops must be an int >= 1, got {ops!r}")
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        if query_ops is None:
            query_ops = max(1, ops // 2)
        if isinstance(query_ops, bool) or not isinstance(query_ops, int) or query_ops < 1:
            raise ValueError(f"query_ops must be an int >= 1, got {query_ops!r}")
        self.ops = ops
        self.seconds = float(seconds)
        self.query_ops = query_ops
        self._clock = clock
        self._arrivals: dict[tuple[str, bool], deque[float]] = {}
        self.throttled: Counter[str] = Counter()
        """429 answers by user id."""
        self.admitted: Counter[str] = Counter()
        """Counted (admitted) operations by user id."""

    @classmethod
    def parse(cls, text: str, *, clock: Callable[[], float] = time.monotonic) -> UserLimits:
        """``"OPS/SECONDS"``, e.g. ``"200/300"``; :class:`ValueError` if malformed."""
        ops, slash, seconds = text.partition("/")
        try:
            if not slash:
                raise ValueError
            return cls(int(ops), float(seconds), clock=clock)
        except ValueError:
            raise ValueError(
                f"a user limit is 'OPS/SECONDS' (e.g. '200/300'), got {text!r}"
            ) from None

    def check(self, user_id: str, endpoint: str) -> tuple[float, int] | None:
        """Count one operation of ``user_id``, or refuse it: ``(retry_after, limit)`` when over.

        A refused operation is not counted (it did not happen).
        """
        query = endpoint in QUERY_ENDPOINTS
        limit = self.query_ops if query else self.ops
        now = self._clock()
        arrivals = self._arrivals.get((user_id, query))
        if arrivals is None:
            if len(self._arrivals) > 100_000:  # bounded: forget users with an empty window
                self._forget(now)
            arrivals = self._arrivals[(user_id, query)] = deque()
        while arrivals and now - arrivals[0] >= self.seconds:
            arrivals.popleft()
        if len(arrivals) >= limit:
            self.throttled[user_id] += 1
            return self.seconds - (now - arrivals[0]), limit
        arrivals.append(now)
        self.admitted[user_id] += 1
        return None

    def enforce(self, user_id: str, endpoint: str) -> None:
        """Count one operation, or raise the Store's 429 (:class:`ApiError`) when over."""
        refused = self.check(user_id, endpoint)
        if refused is not None:
            retry_after, limit = refused
            raise ApiError(
                429,
                "RateLimitExceeded",
                self.message(limit),
                headers={"Retry-After": self.retry_after_header(retry_after)},
            )

    def message(self, limit: int) -> str:
        """The documented 429 text."""
        return (
            f"The rate limit of {limit} operations in {self.seconds:g} seconds has been "
            f"exceeded for aspect {ASPECT}."
        )

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        """``Retry-After`` in seconds, rounded up to the millisecond (never ``0``)."""
        return f"{max(math.ceil(seconds * 1000), 1) / 1000:g}"

    def _forget(self, now: float) -> None:
        self._arrivals = {
            key: arrivals
            for key, arrivals in self._arrivals.items()
            if arrivals and now - arrivals[-1] < self.seconds
        }

    def __repr__(self) -> str:
        return f"UserLimits({self.ops}/{self.seconds:g}, queries {self.query_ops})"
