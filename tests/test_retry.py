"""The retry engine on its own: policy, budget, waits, deadline, 401 resend, final errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from store_async import Endpoints, RetryBudget, RetryPolicy
from store_async._operations import BoundRoute, Route
from store_async._retry import Call, Retrier
from store_async.errors import (
    AuthenticationError,
    ConflictError,
    FailureKind,
    InvalidRequestError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from tests.support.clock import FakeClock

T = TypeVar("T")


def operation(
    name: str, key_name: str | None, *, repeatable: bool, writes: bool
) -> BoundRoute[Any]:
    """A route with only what the retry driver reads (never sent: attempts are scripted)."""
    route: Route[Any] = Route(
        name=name,
        method="POST",
        host="collections",
        path="/",
        key_name=key_name,
        repeatable=repeatable,
        writes=writes,
        parse=lambda answer, attempts, context: answer,
    )
    return route.bind(Endpoints.single("http://127.0.0.1:1"))


WRITE = operation("consume", "trackingId", repeatable=True, writes=True)
READ = operation("query_products", None, repeatable=True, writes=False)
UNKEYED_WRITE = operation("renew_store_id_key", None, repeatable=False, writes=True)


async def retry_call(
    route: BoundRoute[Any],
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
    """Drive one call's retries exactly as the engine does, with a scripted attempt."""

    async def send(_call: Call[Any], number: int, remaining: float) -> T:
        return await attempt(number, remaining)

    retrier = Retrier(policy, budget, clock, sleep, send)
    call: Call[T] = Call(retrier, route, None, key, None, deadline_at, max_attempts, "b")
    return await call.retry(first_error)


def reset() -> TransportError:
    return TransportError("reset", kind=FailureKind.MAYBE_APPLIED)


def refused() -> TransportError:
    return TransportError("refused", kind=FailureKind.NOT_SENT)


def unavailable(status: int = 503, retry_after: float | None = None) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"HTTP {status}", status=status, retry_after=retry_after)


def throttled(retry_after: float | None) -> ThrottledError:
    return ThrottledError("HTTP 429", status=429, retry_after=retry_after)


def token_rejected() -> AuthenticationError:
    return AuthenticationError("HTTP 401", status=401, inner_code="AuthenticationTokenInvalid")


class Attempts:
    """Plays a script of outcomes: exceptions are raised, anything else is returned."""

    def __init__(self, outcomes: Sequence[object], clock: FakeClock | None = None) -> None:
        self.outcomes = list(outcomes)
        self.numbers: list[int] = []
        self.remaining: list[float] = []
        self.clock = clock

    async def __call__(self, number: int, remaining: float) -> object:
        self.numbers.append(number)
        self.remaining.append(remaining)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def run(
    first: StoreError,
    outcomes: Sequence[object],
    *,
    operation: BoundRoute[Any] = WRITE,
    policy: RetryPolicy | None = None,
    budget: RetryBudget | None = None,
    clock: FakeClock | None = None,
    max_attempts: int | None = None,
    key: str | None = "tid-1",
) -> tuple[object, Attempts, FakeClock]:
    policy = policy or RetryPolicy()
    clock = clock or FakeClock()
    attempts = Attempts(outcomes, clock)
    budget = budget or RetryBudget.from_policy(policy, clock)
    result = await retry_call(
        operation,
        key,
        first,
        attempts,
        policy=policy,
        budget=budget,
        clock=clock,
        sleep=clock.sleep,
        deadline_at=clock() + policy.timeout,
        max_attempts=max_attempts or policy.attempts,
    )
    return result, attempts, clock


async def test_retries_until_success_with_growing_full_jitter_backoff() -> None:
    policy = RetryPolicy(backoff_base=0.1, backoff_cap=0.4)
    result, attempts, clock = await run(
        refused(), [refused(), reset(), unavailable(), "ok"], policy=policy
    )
    assert result == "ok"
    assert attempts.numbers == [2, 3, 4, 5]
    assert len(clock.sleeps) == 4
    for sleep, ceiling in zip(clock.sleeps, (0.1, 0.2, 0.4, 0.4), strict=True):
        assert 0 <= sleep <= ceiling


async def test_retry_after_seconds_is_honoured_in_full() -> None:
    _, _, clock = await run(throttled(3.0), [throttled(12.0), unavailable(retry_after=4.0), "ok"])
    assert clock.sleeps[0] >= 3.0
    assert clock.sleeps[1] == 12.0  # never resent before the server asked
    assert clock.sleeps[2] >= 4.0


async def test_a_retry_after_beyond_the_cap_ends_the_call_at_once() -> None:
    policy = RetryPolicy(retry_after_cap=5.0)
    with pytest.raises(ThrottledError) as raised:
        await run(throttled(60.0), ["never sent"], policy=policy)
    assert raised.value.retry_after == 60.0
    assert "retry_after_cap" not in str(raised.value)  # the 429 itself, untouched


async def test_deadline_is_the_deprecated_name_of_timeout() -> None:
    with pytest.warns(DeprecationWarning, match="use 'timeout'"):
        policy = RetryPolicy(deadline=3.0)
    assert policy.timeout == 3.0
    with pytest.warns(DeprecationWarning, match="deprecated"):
        assert policy.deadline == 3.0
    with pytest.warns(DeprecationWarning, match="deprecated"), pytest.raises(ValidationError):
        RetryPolicy(timeout=1.0, deadline=2.0)


async def test_the_deadline_is_never_crossed_nor_slept_past() -> None:
    policy = RetryPolicy(timeout=3.0, attempts=100, backoff_base=0.5, backoff_cap=2.0)
    clock = FakeClock()
    start = clock()
    with pytest.raises(OutcomeUnknownError) as raised:
        await run(unavailable(), [unavailable()] * 100, policy=policy, clock=clock)
    assert clock() - start < 3.0
    assert "the timeout" in str(raised.value)
    assert raised.value.tracking_id == "tid-1"


async def test_a_retry_after_beyond_the_deadline_stops_at_once() -> None:
    policy = RetryPolicy(timeout=5.0, retry_after_cap=30.0)
    with pytest.raises(ThrottledError) as raised:
        await run(throttled(10.0), ["never sent"], policy=policy)
    assert raised.value.retry_after == 10.0


async def test_each_attempt_gets_the_time_left_before_the_deadline() -> None:
    policy = RetryPolicy(timeout=10.0, backoff_base=1.0, backoff_cap=1.0)
    _, attempts, clock = await run(refused(), [refused(), "ok"], policy=policy)
    assert attempts.remaining[0] == pytest.approx(10.0 - clock.sleeps[0])
    assert attempts.remaining[1] == pytest.approx(10.0 - sum(clock.sleeps))


async def test_attempts_limit_ends_in_outcome_unknown_after_maybe_applied() -> None:
    with pytest.raises(OutcomeUnknownError) as raised:
        await run(reset(), [reset()] * 10, max_attempts=3)
    error = raised.value
    assert error.attempts == 3
    assert error.tracking_id == "tid-1"
    assert isinstance(error.last_error, TransportError)
    assert "3 attempts" in str(error)


async def test_attempts_limit_after_only_not_sent_failures_raises_the_last_error() -> None:
    with pytest.raises(TransportError) as raised:
        await run(refused(), [refused()] * 10, max_attempts=3)
    assert raised.value.kind is FailureKind.NOT_SENT


async def test_an_unkeyed_write_is_never_repeated_after_maybe_applied() -> None:
    with pytest.raises(OutcomeUnknownError) as raised:
        await run(reset(), ["never sent"], operation=UNKEYED_WRITE, key=None)
    assert raised.value.attempts == 1
    assert raised.value.tracking_id is None
    assert "no idempotency key" in str(raised.value)


async def test_an_unkeyed_write_is_repeated_after_not_sent_and_429() -> None:
    result, attempts, _ = await run(
        refused(),
        [throttled(0.1), RequestTimeoutError("408", status=408), "ok"],
        operation=UNKEYED_WRITE,
        key=None,
    )
    assert result == "ok"
    assert attempts.numbers == [2, 3, 4]


async def test_a_read_is_repeated_after_maybe_applied_and_ends_in_its_last_error() -> None:
    result, _, _ = await run(reset(), [unavailable(), "page"], operation=READ, key=None)
    assert result == "page"
    with pytest.raises(ServiceUnavailableError):
        await run(reset(), [unavailable()] * 5, operation=READ, key=None, max_attempts=3)


async def test_a_definite_answer_after_maybe_applied_is_raised_as_is() -> None:
    with pytest.raises(ConflictError):
        await run(reset(), [ConflictError("HTTP 409", status=409)])


@pytest.mark.parametrize("status", [501, 505])
async def test_non_retryable_5xx_stops(status: int) -> None:
    with pytest.raises(OutcomeUnknownError) as raised:
        await run(unavailable(), [unavailable(status)])
    assert raised.value.attempts == 2
    assert raised.value.status == status


async def test_rejected_token_is_resent_once_at_once_outside_attempts_and_budget() -> None:
    budget = RetryBudget(size=0, retry_cost=1, success_deposit=0, refill_per_second=0)
    result, attempts, clock = await run(token_rejected(), ["ok"], budget=budget, max_attempts=1)
    assert result == "ok"
    assert attempts.numbers == [2]
    assert clock.sleeps == [0.0]


async def test_a_second_rejected_token_is_final() -> None:
    with pytest.raises(AuthenticationError):
        await run(token_rejected(), [token_rejected(), "never"])


async def test_a_401_after_maybe_applied_is_outcome_unknown() -> None:
    with pytest.raises(OutcomeUnknownError) as raised:
        await run(reset(), [token_rejected(), token_rejected()])
    assert isinstance(raised.value.last_error, AuthenticationError)


async def test_other_401s_are_final() -> None:
    inconsistent = AuthenticationError("401", status=401, inner_code="InconsistentClientId")
    with pytest.raises(AuthenticationError) as raised:
        await run(inconsistent, ["never"])
    assert raised.value is inconsistent


async def test_cancellation_inside_an_attempt_is_never_retried_nor_swallowed() -> None:
    attempts = Attempts([asyncio.CancelledError(), "never"])
    clock = FakeClock()
    with pytest.raises(asyncio.CancelledError):
        await retry_call(
            WRITE,
            "k",
            refused(),
            attempts,
            policy=RetryPolicy(),
            budget=RetryBudget.from_policy(RetryPolicy(), clock),
            clock=clock,
            sleep=clock.sleep,
            deadline_at=clock() + 30,
            max_attempts=5,
        )
    assert attempts.numbers == [2]


async def test_cancellation_during_the_wait_propagates() -> None:
    clock = FakeClock()

    async def cancelled_sleep(_seconds: float) -> None:
        raise asyncio.CancelledError

    attempts = Attempts(["never"])
    with pytest.raises(asyncio.CancelledError):
        await retry_call(
            WRITE,
            "k",
            refused(),
            attempts,
            policy=RetryPolicy(),
            budget=RetryBudget.from_policy(RetryPolicy(), clock),
            clock=clock,
            sleep=cancelled_sleep,
            deadline_at=clock() + 30,
            max_attempts=5,
        )
    assert attempts.numbers == []


async def test_bugs_are_not_retried() -> None:
    with pytest.raises(KeyError):
        await run(refused(), [KeyError("bug"), "never"])


async def test_an_empty_budget_fails_fast_with_the_last_error_or_outcome_unknown() -> None:
    budget = RetryBudget(size=1, retry_cost=1, success_deposit=0.5, refill_per_second=0)
    result, _, _ = await run(refused(), ["ok"], budget=budget)
    assert result == "ok"
    with pytest.raises(TransportError) as not_sent:
        await run(refused(), ["never"], budget=budget)
    assert "never" not in str(not_sent.value)
    with pytest.raises(OutcomeUnknownError) as unknown:
        await run(reset(), ["never"], budget=budget)
    assert "empty retry budget" in str(unknown.value)


def test_budget_deposits_withdrawals_and_refill() -> None:
    clock = FakeClock()
    budget = RetryBudget(
        size=2, retry_cost=1, success_deposit=0.5, refill_per_second=0.1, clock=clock
    )
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    budget.deposit()
    budget.deposit()
    assert budget.tokens == 1.0
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.now += 10  # refills one token
    assert budget.try_withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.tokens == 2  # never above its size


async def test_defaults_recover_a_25_percent_fault_rate_inside_the_call() -> None:
    """20,000 sequential calls against a service failing 25 % of attempts (seeded): all succeed
    without the budget ever running dry, because successes refill it faster than retries use it."""
    faults = random.Random(25)
    kinds: list[Callable[[], StoreError]] = [reset, refused, unavailable, lambda: throttled(0.5)]
    policy = RetryPolicy()
    clock = FakeClock()
    budget = RetryBudget.from_policy(policy, clock)
    lowest = budget.tokens
    sends = 0

    async def attempt(_number: int, _remaining: float) -> str:
        nonlocal sends
        sends += 1
        if faults.random() < 0.25:
            raise faults.choice(kinds)()
        return "ok"

    for _ in range(20_000):
        try:
            result = await attempt(1, policy.timeout)
        except StoreError as error:
            result = await retry_call(
                WRITE,
                "k",
                error,
                attempt,
                policy=policy,
                budget=budget,
                clock=clock,
                sleep=clock.sleep,
                deadline_at=clock() + policy.timeout,
                max_attempts=policy.attempts,
            )
        assert result == "ok"
        budget.deposit()
        lowest = min(lowest, budget.tokens)
    assert lowest > policy.budget_size / 2
    assert 1.30 < sends / 20_000 < 1.37  # 1/(1-0.25) = 1.333 attempts per call


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": 101},
        {"attempts": 2.5},
        {"attempts": True},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"attempt_timeout": -1},
        {"backoff_base": float("inf")},
        {"retry_after_cap": "10"},
        {"budget_size": -1},
        {"connect_timeout": 20.0},
        {"connect_timeout": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.timeout, policy.attempt_timeout) == (10, 30.0, 10.0)
    assert policy.connect_seconds == 5.0 < policy.attempt_timeout
    assert RetryPolicy(attempt_timeout=2).connect_seconds == 1.0
    assert RetryPolicy(backoff_base=5.0, backoff_cap=1.0).backoff_cap == 1.0
    assert policy.budget_success_deposit * 2 >= policy.budget_retry_cost  # sustains 33 % faults
    assert isinstance(InvalidRequestError("x"), StoreError)
