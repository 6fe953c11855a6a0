"""The slow path of a call: one slotted :class:`Call` and the tenacity driver that resends it.

The first attempt of every call runs *outside* this module (see :mod:`store_async._engine`): a
``tenacity.AsyncRetrying`` costs ~25 µs and ~30 objects, which would halve loopback throughput if
it wrapped every request. Only after a retryable failure does :meth:`Call.retry` build a fresh
``AsyncRetrying`` for that one call (never shared between coroutines, tenacity issue #93), fed
by the bound methods of the call object (stamina's shape), and seeded with the failure that
brought it here:

- full-jitter exponential backoff (``uniform(0, min(cap, base * 2**n))``), and never less than
  the service's ``Retry-After``: a ``Retry-After`` that does not fit the call's timeout (or
  :attr:`RetryPolicy.retry_after_cap`) ends the call at once (docs/design.md, rule 4);
- one timeout across all attempts and waits: when the next wait would cross it, stop;
- the attempt count, and the client-wide :class:`~store_async.RetryBudget` (every retry
  withdraws from it);
- a 401 whose token the service rejected is resent once at once with a fresh token (it was
  refused, so not applied); that resend does not count against the attempts or the budget;
- a *maybe applied* failure is retried only when the operation may be repeated (it carries an
  idempotency key, or it is a read);
- ``CancelledError`` (and any ``BaseException``) is never retried nor swallowed.

When the call fails for good after an attempt that may have been applied, a write raises
:class:`~store_async.errors.OutcomeUnknownError`: resending it later with the same key settles it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import tenacity

from store_async.errors import (
    AuthenticationError,
    FailureKind,
    OutcomeUnknownError,
    StoreError,
)

if TYPE_CHECKING:
    from store_async._budget import RetryBudget
    from store_async._operations import BoundRoute
    from store_async._policy import RetryPolicy

__all__ = ["Call", "Retrier"]

T = TypeVar("T")

_logger: Final = logging.getLogger("store_async")
_DEBUG: Final = logging.DEBUG
_uniform: Final = random.uniform


class Retrier:
    """What every retried call of one client shares (built once per client)."""

    __slots__ = ("attempt", "budget", "clock", "policy", "sleep")

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudget,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        attempt: Callable[[Call[Any], int, float], Awaitable[Any]],
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.clock = clock
        self.sleep = sleep
        self.attempt = attempt
        """``attempt(call, number, remaining)``: send once more, return or raise a StoreError."""


class Call(Generic[T]):
    """One call on the slow path: what it sends, how long it may take, how its retries went.

    Built once per call that is not served by the bare fast path; the engine's ``_attempt`` and
    the tenacity callbacks below all read this one object.
    """

    __slots__ = (
        "attempts_started",
        "body",
        "call_id",
        "context",
        "count",
        "cv_base",
        "deadline_at",
        "expired",
        "extra_headers",
        "first_error",
        "key",
        "last_error",
        "max_attempts",
        "maybe_applied",
        "resend_401",
        "resent_401",
        "retrier",
        "route",
        "stop_reason",
    )

    def __init__(
        self,
        retrier: Retrier,
        route: BoundRoute[T],
        body: bytes | None,
        key: str | None,
        context: Any,
        deadline_at: float,
        max_attempts: int,
        cv_base: str,
        extra_headers: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self.retrier = retrier
        self.route = route
        self.body = body
        self.key = key
        self.context = context
        self.deadline_at = deadline_at
        """Loop time by which the call must end (its start plus its timeout)."""
        self.max_attempts = max_attempts
        self.count = 1  # attempts sent so far (the first one runs before tenacity)
        self.maybe_applied = False
        self.resend_401 = False  # the last failure is a rejected token, to be resent at once
        self.resent_401 = False
        self.stop_reason = "a final answer"
        self.first_error: StoreError | None = None
        self.last_error: StoreError | None = None
        self.expired = False  # a wait overslept the deadline: no attempt left to send
        self.cv_base = cv_base
        """Attempt *N* sends ``MS-CV: <cv_base>.<N>``."""
        self.extra_headers = extra_headers
        """The caller's ``headers=``, checked (none of ours among them)."""
        self.call_id = 0  # set when hooks are: attempt events name their call by it
        self.attempts_started = 0  # attempt start events emitted (hooks only)

    # -- the driver ---------------------------------------------------------------------------

    async def retry(self, first_error: StoreError) -> T:
        """Continue after the first attempt failed with ``first_error``; return or raise.

        :raises StoreError: the last error, or ``OutcomeUnknownError`` (see :meth:`final_error`).
        """
        self.first_error = self.last_error = first_error
        retrying = tenacity.AsyncRetrying(
            sleep=self.retrier.sleep,
            retry=tenacity.retry_if_exception(self.should_retry),
            wait=self.wait,
            stop=self.should_stop,
            before_sleep=self.log_retry,
            reraise=True,
        )
        try:
            result: T = await retrying(self.one_attempt)
            return result
        except StoreError as last:
            final = self.final_error(last)
            if final is last:
                raise
            raise final from last

    async def one_attempt(self) -> T:
        first = self.first_error
        if first is not None:  # replay the failure that happened outside tenacity
            self.first_error = None
            raise first
        remaining = self.deadline_at - self.retrier.clock()
        if remaining <= 0:
            # The wait overslept the deadline (should_stop allowed it to end before). A send
            # now would have no time for its answer: likely applied, surely unanswered.
            self.expired = True
            self.stop_reason = "the timeout"
            assert self.last_error is not None
            raise self.last_error
        self.count += 1
        result: T = await self.retrier.attempt(self, self.count, remaining)
        return result

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
        if error.kind is FailureKind.MAYBE_APPLIED and not self.route.repeatable:
            self.stop_reason = "no idempotency key to repeat it safely"
            return False
        return True

    def wait(self, state: tenacity.RetryCallState) -> float:
        if self.resend_401:
            return 0.0
        policy = self.retrier.policy
        retries = state.attempt_number - (1 if self.resent_401 else 0)
        ceiling = min(policy.backoff_cap, policy.backoff_base * 2 ** max(retries - 1, 0))
        wait = _uniform(0.0, ceiling)
        retry_after = self.last_error.retry_after if self.last_error is not None else None
        if retry_after is not None and retry_after > wait:
            wait = retry_after  # the server's word, in full (never resend early)
        return wait

    def should_stop(self, state: tenacity.RetryCallState) -> bool:
        retrier = self.retrier
        upcoming = state.upcoming_sleep
        cap = retrier.policy.retry_after_cap
        retry_after = self.last_error.retry_after if self.last_error is not None else None
        if retry_after is not None and cap is not None and retry_after > cap:
            self.stop_reason = f"a Retry-After of {retry_after:g} s beyond retry_after_cap"
            return True
        if retrier.clock() + upcoming >= self.deadline_at:
            self.stop_reason = (
                f"a Retry-After of {retry_after:g} s that does not fit the timeout"
                if retry_after is not None and upcoming >= retry_after
                else "the timeout"
            )
            return True
        if self.resend_401:
            return False
        if self.count - (1 if self.resent_401 else 0) >= self.max_attempts:
            self.stop_reason = (
                "1 attempt" if self.max_attempts == 1 else f"{self.max_attempts} attempts"
            )
            return True
        if not retrier.budget.try_withdraw():
            self.stop_reason = "an empty retry budget"
            return True
        return False

    def log_retry(self, state: tenacity.RetryCallState) -> None:
        if not _logger.isEnabledFor(_DEBUG):
            return
        error = self.last_error
        if error is None:  # pragma: no cover - only StoreErrors retry
            return
        _logger.debug(
            "retrying %s %s=%s after attempt %d: %s kind=%s status=%s wait=%.3fs "
            "correlation_id=%s request_id=%s cv=%s",
            self.route.name,
            self.route.key_name or "key",
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
        """The error the caller sees when the call ends in failure (docs/design.md, rule 5)."""
        definite_answer = (
            last.kind is FailureKind.ANSWERED
            and not last.retryable
            and not isinstance(last, AuthenticationError)
        )
        if not (self.route.writes and self.maybe_applied) or definite_answer:
            return last
        key_name = self.route.key_name
        resend = (
            f"resend with the same {key_name} to settle it"
            if key_name
            else self.route.route.unsettled_hint
            or "it has no idempotency key: check its state before sending it again"
        )
        attempts = "attempt" if self.count == 1 else "attempts"
        return OutcomeUnknownError(
            f"{self.route.name}: outcome unknown after {self.count} {attempts} "
            f"(stopped by {self.stop_reason}); {resend}",
            idempotency_key=self.key,
            attempts=self.count,
            last_error=last,
            status=last.status,
            code=last.code,
            inner_code=last.inner_code,
            correlation_id=last.correlation_id,
            request_id=last.request_id,
            cv=last.cv,
            server_cv=last.server_cv,
            retry_after=last.retry_after,
        )
