"""``RetryPolicy``: how a call is retried, timed and bounded (a frozen record, no I/O)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks

__all__ = ["RetryPolicy"]


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
    _checks.attempts(value, "RetryPolicy.attempts")


def deprecated_deadline(owner: str) -> None:
    """Warn once per call site that ``deadline=`` (a relative budget) is now ``timeout=``."""
    warnings.warn(
        f"{owner}: 'deadline' is deprecated, use 'timeout' (seconds for the whole call)",
        DeprecationWarning,
        stacklevel=3,
    )


@attrs.frozen(kw_only=True, init=False)
class RetryPolicy:
    """How a call is retried, timed and bounded. All times are seconds.

    The defaults recover a service that fails 25 % of attempts at random inside the call (the
    chance that ten attempts all fail is one in a million; their backoff adds up to 9 s at most),
    and keep a full outage from multiplying load: at most ``budget_size`` retries (plus
    refills) across the whole client once the budget is spent.

    ``deadline=`` is the deprecated name of ``timeout=`` (it still works, with a
    ``DeprecationWarning``).
    """

    attempts: int = attrs.field(default=10, validator=_check_attempts)
    """Attempts per call, the first included (1 = never retry)."""
    timeout: float = attrs.field(default=30.0, validator=_seconds(0, inclusive=False))
    """Time for the whole call: all attempts and waits. Never slept past."""
    attempt_timeout: float = attrs.field(default=10.0, validator=_seconds(0, inclusive=False))
    """Time for one attempt once it has a connection slot (connect, send, answer, body)."""
    connect_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_seconds(0, inclusive=False))
    )
    """Time to open a connection (``None``: half the attempt timeout, at most 5 s). A timeout in
    this phase is *not sent*; one after it is *maybe applied*. Waiting for a free connection slot
    is not part of it: that wait is the caller's own concurrency, bounded by :attr:`timeout`."""
    backoff_base: float = attrs.field(default=0.05, validator=_seconds(0, inclusive=True))
    """First backoff ceiling; doubles per retry (full jitter picks uniformly below it)."""
    backoff_cap: float = attrs.field(default=2.0, validator=_seconds(0, inclusive=True))
    """Largest backoff ceiling."""
    retry_after_cap: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_seconds(0, inclusive=True))
    )
    """Longest ``Retry-After`` the client waits out. A longer one ends the call at once with
    :class:`~store_async.ThrottledError` (its ``retry_after`` says when to come back): the
    client never resends before the server asked. ``None``: as long as :attr:`timeout` allows."""
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

    def __init__(
        self,
        *,
        attempts: int = 10,
        timeout: float | None = None,
        attempt_timeout: float = 10.0,
        connect_timeout: float | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        retry_after_cap: float | None = None,
        budget_size: float = 100.0,
        budget_retry_cost: float = 1.0,
        budget_success_deposit: float = 0.5,
        budget_refill_per_second: float = 1.0,
        deadline: float | None = None,
    ) -> None:
        if deadline is not None:
            deprecated_deadline("RetryPolicy")
            if timeout is not None:
                raise ValidationError("RetryPolicy: give timeout or deadline, not both")
            timeout = deadline
        self.__attrs_init__(
            attempts=attempts,
            timeout=30.0 if timeout is None else timeout,
            attempt_timeout=attempt_timeout,
            connect_timeout=connect_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
            budget_size=budget_size,
            budget_retry_cost=budget_retry_cost,
            budget_success_deposit=budget_success_deposit,
            budget_refill_per_second=budget_refill_per_second,
        )

    def __attrs_post_init__(self) -> None:
        if self.connect_timeout is not None and self.connect_timeout > self.attempt_timeout:
            raise ValidationError("RetryPolicy.connect_timeout must not exceed attempt_timeout")

    @property
    def deadline(self) -> float:
        """Deprecated name of :attr:`timeout`."""
        deprecated_deadline("RetryPolicy.deadline")
        return self.timeout

    @property
    def connect_seconds(self) -> float:
        """The connect timeout in effect (see :attr:`connect_timeout`)."""
        if self.connect_timeout is not None:
            return self.connect_timeout
        return min(5.0, self.attempt_timeout / 2)
