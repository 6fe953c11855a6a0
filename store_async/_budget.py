"""``RetryBudget``: the client-wide token bucket that bounds retries during an outage.

Its own small object (as botocore's retry quota): the engine withdraws one retry's cost before
each resend and deposits a little after each success; the bucket also refills with time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store_async._policy import RetryPolicy

__all__ = ["RetryBudget"]


class RetryBudget:
    """A client-wide token bucket that bounds retries during an outage (retry storms).

    Each retry withdraws ``retry_cost``; each successful call deposits ``success_deposit``; the
    bucket also refills at ``refill_per_second`` (computed lazily, on withdrawal) and never holds
    more than ``size``. When it is empty, calls fail fast with their last error instead of
    multiplying the load on a service that is down. First attempts never need a token.
    """

    __slots__ = ("_clock", "_cost", "_deposit", "_refill", "_refilled_at", "_size", "tokens")

    def __init__(
        self,
        *,
        size: float,
        retry_cost: float,
        success_deposit: float,
        refill_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._cost = retry_cost
        self._deposit = success_deposit
        self._refill = refill_per_second
        self._clock = clock
        self._refilled_at = clock()
        self.tokens = size
        """Tokens in the bucket now (before any pending time refill)."""

    @classmethod
    def from_policy(
        cls, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic
    ) -> RetryBudget:
        """The budget a client builds from its :class:`RetryPolicy`."""
        return cls(
            size=policy.budget_size,
            retry_cost=policy.budget_retry_cost,
            success_deposit=policy.budget_success_deposit,
            refill_per_second=policy.budget_refill_per_second,
            clock=clock,
        )

    def deposit(self) -> None:
        """A call succeeded (hot path: one addition and one comparison)."""
        tokens = self.tokens + self._deposit
        self.tokens = tokens if tokens < self._size else self._size

    def try_withdraw(self) -> bool:
        """Take the cost of one retry; ``False`` (nothing taken) when the bucket is short."""
        now = self._clock()
        if self._refill:
            self.tokens = min(self._size, self.tokens + (now - self._refilled_at) * self._refill)
        self._refilled_at = now
        if self.tokens < self._cost:
            return False
        self.tokens -= self._cost
        return True
