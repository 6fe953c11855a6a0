"""Retries: the policy, the client-wide retry budget, and the tenacity-driven slow path.

The first attempt of every call runs *outside* this module (see :mod:`store_async.client`): a
``tenacity.AsyncRetrying`` costs ~25 µs and ~30 objects, which would halve loopback throughput if
it wrapped every request. Only after a retryable failure does :func:`retry_call` build a fresh
``AsyncRetrying`` for that one call (never shared between coroutines, tenacity issue #93),
seeded with the failure that brought it here, and drive the remaining attempts:

- full-jitter exponential backoff (``uniform(0, min(cap, base * 2**n))``), at least the
  service's ``Retry-After`` (clipped to :attr:`RetryPolicy.retry_after_cap`);
- one deadline across all attempts and waits: when the next wait would cross it, stop;
- the attempt count, and the client-wide :class:`RetryBudget` (every retry withdraws from it);
- a 401 whose token the service rejected is resent once at once with a fresh token (it was
  refused, so not applied); that resend does not count against the attempts or the budget;
- a *maybe applied* failure is retried only when the operation may be repeated (it carries an
  idempotency key, or it is a read), see :class:`Operation`;
- ``CancelledError`` (and any ``BaseException``) is never retried nor swallowed.

When the call fails for good after an attempt that may have been applied, a write raises
:class:`~store_async.errors.OutcomeUnknownError`: resending it later with the same key settles it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import attrs
import tenacity

from store_async.errors import (
    AuthenticationError,
    FailureKind,
    OutcomeUnknownError,
    StoreError,
    ValidationError,
)

__all__ = ["Operation", "RetryBudget", "RetryPolicy", "retry_call"]

T = TypeVar("T")

_logger: Final = logging.getLogger("store_async")
_INFO: Final = logging.INFO


def _seconds(
    minimum: float, *, inclusive: bool
) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        in_range = (
            ok_type
            and math.isfinite(value)
            and (value >= minimum if inclusive else value > minimum)
        )
        if not in_range:
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ValidationError(
                f"RetryPolicy.{attribute.name} must be a finite number {bound}, got {value!r}"
            )

    return check


def _check_attempts(_instance: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValidationError(f"RetryPolicy.attempts must be an int in 1..100, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a call is retried, timed and bounded. All times are seconds.

    The defaults recover a service that fails 25 % of attempts at random inside the call (the
    chance that ten attempts all fail is one in a million; their backoff adds up to 9 s at most),
    and keep a full outage from multiplying load: at most ``budget_size`` retries (plus
    refills) across the whole client once the budget is spent.
    """

    attempts: int = attrs.field(default=10, validator=_check_attempts)
    """Attempts per call, the first included (1 = never retry)."""
    deadline: float = attrs.field(default=30.0, validator=_seconds(0, inclusive=False))
    """Time for the whole call: all attempts and waits. Never slept past."""
    attempt_timeout: float = attrs.field(default=10.0, validator=_seconds(0, inclusive=False))
    """Time for one attempt (pool wait, connect, send, answer, body)."""
    connect_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_seconds(0, inclusive=False))
    )
    """Time to get a connection, pool wait included (``None``: half the attempt timeout, at
    most 5 s). A timeout in this phase is *not sent*; one after it is *maybe applied*. Keep it
    below ``attempt_timeout`` so the two stay apart."""
    backoff_base: float = attrs.field(default=0.05, validator=_seconds(0, inclusive=True))
    """First backoff ceiling; doubles per retry (full jitter picks uniformly below it)."""
    backoff_cap: float = attrs.field(default=2.0, validator=_seconds(0, inclusive=True))
    """Largest backoff ceiling."""
    retry_after_cap: float = attrs.field(default=10.0, validator=_seconds(0, inclusive=True))
    """Largest ``Retry-After`` honoured; longer requests are clipped to this."""
    budget_size: float = attrs.field(default=100.0, validator=_seconds(0, inclusive=True))
    """Capacity of the client-wide retry budget (token bucket); it starts full."""
    budget_retry_cost: float = attrs.field(default=1.0, validator=_seconds(0, inclusive=True))
    """Tokens one retry withdraws."""
    budget_success_deposit: float = attrs.field(default=0.5, validator=_seconds(0, inclusive=True))
    """Tokens a successful call returns: sustains up to one retry per two successes (a 33 %
    first-attempt failure rate) indefinitely."""
    budget_refill_per_second: float = attrs.field(
        default=1.0, validator=_seconds(0, inclusive=True)
    )
    """Tokens added per second regardless of traffic, so a quiet client recovers."""

    def __attrs_post_init__(self) -> None:
        if self.connect_timeout is not None and self.connect_timeout > self.attempt_timeout:
            raise ValidationError("RetryPolicy.connect_timeout must not exceed attempt_timeout")

    @property
    def connect_seconds(self) -> float:
        """The connect timeout in effect (see :attr:`connect_timeout`)."""
        if self.connect_timeout is not None:
            return self.connect_timeout
        return min(5.0, self.attempt_timeout / 2)


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


@attrs.frozen
class Operation:
    """What the engine must know about an operation to retry it safely (DESIGN rule 2)."""

    name: str
    """Name used in logs and hook events."""
    key_name: str | None
    """Wire name of the idempotency key fixed before the first send, if any."""
    repeatable: bool
    """May be sent again after a *maybe applied* failure (keyed, or a read)."""
    writes: bool
    """Changes state: ends in ``OutcomeUnknownError`` when a maybe-applied attempt is unsettled."""
    method: str = "POST"
    """The HTTP method (every operation but the refund queue's SAS token is a POST)."""


class _Attempts:
    """The mutable state of one retried call, and the tenacity callbacks that read it."""

    __slots__ = (
        "budget",
        "clock",
        "count",
        "deadline_at",
        "expired",
        "first_error",
        "key",
        "last_error",
        "max_attempts",
        "maybe_applied",
        "operation",
        "policy",
        "random",
        "resend_401",
        "resent_401",
        "stop_reason",
    )

    def __init__(
        self,
        operation: Operation,
        key: str | None,
        first_error: StoreError,
        policy: RetryPolicy,
        budget: RetryBudget,
        clock: Callable[[], float],
        deadline_at: float,
        max_attempts: int,
    ) -> None:
        self.operation = operation
        self.key = key
        self.first_error: StoreError | None = first_error
        self.policy = policy
        self.budget = budget
        self.clock = clock
        self.deadline_at = deadline_at
        self.max_attempts = max_attempts
        self.count = 1  # attempts sent so far (the first one ran before tenacity)
        self.maybe_applied = False
        self.resend_401 = False  # the last failure is a rejected token, to be resent at once
        self.resent_401 = False
        self.random = random.Random()
        self.stop_reason = "a final answer"
        self.last_error: StoreError = first_error
        self.expired = False  # a wait overslept the deadline: no attempt left to send

    def should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, StoreError):
            return False  # CancelledError, KeyboardInterrupt, bugs: never retried
        self.last_error = error
        if self.expired:
            return False
        if error.kind is FailureKind.MAYBE_APPLIED:
            self.maybe_applied = True
        self.resend_401 = False
        if isinstance(error, AuthenticationError):
            if error.token_rejected and not self.resent_401:
                self.resend_401 = self.resent_401 = True
                return True
            return False
        if not error.retryable:
            return False
        if error.kind is FailureKind.MAYBE_APPLIED and not self.operation.repeatable:
            self.stop_reason = "no idempotency key to repeat it safely"
            return False
        return True

    def wait(self, state: tenacity.RetryCallState) -> float:
        if self.resend_401:
            return 0.0
        policy = self.policy
        retries = state.attempt_number - (1 if self.resent_401 else 0)
        ceiling = min(policy.backoff_cap, policy.backoff_base * 2 ** max(retries - 1, 0))
        wait = self.random.uniform(0.0, ceiling)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.retry_after_cap))
        return wait

    def should_stop(self, state: tenacity.RetryCallState) -> bool:
        if self.clock() + state.upcoming_sleep >= self.deadline_at:
            self.stop_reason = "the deadline"
            return True
        if self.resend_401:
            return False
        if self.count - (1 if self.resent_401 else 0) >= self.max_attempts:
            self.stop_reason = f"{self.max_attempts} attempts"
            return True
        if not self.budget.try_withdraw():
            self.stop_reason = "an empty retry budget"
            return True
        return False

    def log_retry(self, state: tenacity.RetryCallState) -> None:
        if not _logger.isEnabledFor(_INFO):
            return
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if not isinstance(error, StoreError):  # pragma: no cover - only StoreErrors retry
            return
        _logger.info(
            "retrying %s %s=%s after attempt %d: %s kind=%s status=%s wait=%.3fs "
            "correlation_id=%s request_id=%s cv=%s",
            self.operation.name,
            self.operation.key_name or "key",
            self.key,
            self.count,
            type(error).__name__,
            error.kind.value,
            error.status,
            state.upcoming_sleep,
            error.correlation_id,
            error.request_id,
            error.cv,
        )

    def final_error(self, last: StoreError) -> StoreError:
        """The error the caller sees when the call ends in failure (DESIGN rule 4)."""
        definite_answer = (
            last.kind is FailureKind.ANSWERED
            and not last.retryable
            and not isinstance(last, AuthenticationError)
        )
        if not (self.operation.writes and self.maybe_applied) or definite_answer:
            return last
        key_name = self.operation.key_name
        resend = f"resend with the same {key_name} to settle it" if key_name else "check its state"
        return OutcomeUnknownError(
            f"{self.operation.name}: outcome unknown after {self.count} attempts "
            f"(stopped by {self.stop_reason}); {resend}",
            tracking_id=self.key,
            attempts=self.count,
            last_error=last,
            status=last.status,
            code=last.code,
            inner_code=last.inner_code,
            correlation_id=last.correlation_id,
            request_id=last.request_id,
            cv=last.cv,
            retry_after=last.retry_after,
        )


async def retry_call(
    operation: Operation,
    key: str | None,
    first_error: StoreError,
    attempt: Callable[[int, float], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    deadline_at: float,
    max_attempts: int,
) -> T:
    """Continue a call whose first attempt failed with ``first_error``; return or raise.

    ``attempt(number, remaining)`` sends once more (``number`` counts from 1, ``remaining`` is
    the time left before ``deadline_at``) and returns the result or raises a ``StoreError``.
    ``clock`` must be the clock ``deadline_at`` was read from; ``sleep`` waits between attempts
    (inject fakes for both to test waits without sleeping).

    :raises StoreError: the last error, or ``OutcomeUnknownError`` (see :class:`_Attempts`).
    """
    state = _Attempts(operation, key, first_error, policy, budget, clock, deadline_at, max_attempts)

    async def one_attempt() -> T:
        first = state.first_error
        if first is not None:  # replay the failure that happened outside tenacity
            state.first_error = None
            raise first
        remaining = state.deadline_at - state.clock()
        if remaining <= 0:
            # The wait overslept the deadline (should_stop allowed it to end before). A send
            # now would have no time for its answer: likely applied, surely unanswered.
            state.expired = True
            state.stop_reason = "the deadline"
            raise state.last_error
        state.count += 1
        return await attempt(state.count, remaining)

    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        retry=tenacity.retry_if_exception(state.should_retry),
        wait=state.wait,
        stop=state.should_stop,
        before_sleep=state.log_retry,
        reraise=True,
    )
    try:
        return await retrying(one_attempt)
    except StoreError as last:
        final = state.final_error(last)
        if final is last:
            raise
        _logger.warning("%s", final)
        raise final from last
