"""Exactly-once under faults: lost answers, mixed fault storms, outages, deadlines, throttling."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
import pytest

from store_async import RetryPolicy, StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.emulator import FaultKind, FaultPlan
from store_async.errors import (
    FailureKind,
    OutcomeUnknownError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
)
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity
from tests.support.clock import FakeClock
from tests.support.credentials import GOOD_TOKEN
from tests.support.emulator import client_for, emulator


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def only_consume(*steps: FaultKind | None, **options: object) -> FaultPlan:
    """The first consume requests get ``steps``, in order; then no faults."""
    return FaultPlan(script={"consume": steps}, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", [FaultKind.DROP_AFTER_COMMIT, FaultKind.RESET_BEFORE_COMMIT])
async def test_a_lost_answer_is_resent_with_the_same_tracking_id_and_identical_body(
    beneficiary: UserIdentity, fault: FaultKind
) -> None:
    request = ConsumeRequest.for_item(beneficiary, "item-1")
    async with emulator(only_consume(fault)) as fake, client_for(fake) as store:
        result = await store.consume(request)
    assert result.attempts == 2
    key = request.tracking_id
    assert key is not None
    log = fake.request_log
    assert fake.stats.requests["consume"] == log.sends(key) == 2
    assert log.bodies(key) == {log[0].body}  # one distinct body, byte for byte
    assert log[0].body == log[1].body
    assert fake.ledger.applied(key) == 1
    assert fake.ledger.replays(key) == (1 if fault is FaultKind.DROP_AFTER_COMMIT else 0)


@pytest.mark.slow
async def test_5000_concurrent_consumes_under_25_percent_mixed_faults_apply_exactly_once() -> None:
    calls = 5000
    storm = dict.fromkeys(
        (
            FaultKind.RESET_BEFORE_COMMIT,
            FaultKind.DROP_AFTER_COMMIT,
            FaultKind.HTTP_500,
            FaultKind.HTTP_503,
            FaultKind.HTTP_429,
        ),
        1.0,
    )
    # Pool waits under 5,000 concurrent calls are long on a shared CI machine: generous
    # timeouts keep this test about faults, not about the machine's speed.
    policy = RetryPolicy(timeout=300, attempt_timeout=120, connect_timeout=60)
    async with emulator() as fake:
        users = [
            UserIdentity(identity_value=fake.mint_store_id_key(f"u{n}"), local_ticket_reference="r")
            for n in range(10)
        ]
        requests = [ConsumeRequest.for_item(users[n % 10], f"item-{n}") for n in range(calls)]
        # Every 100th call also loses every answer after committing (two attempts), so it must
        # end unknown; resubmitting it must settle it without applying it twice.
        cursed = {r.idempotency_key for r in requests[::100]}
        lost = dict.fromkeys(cursed, FaultKind.DROP_AFTER_COMMIT)
        fake.set_faults(FaultPlan(rate=0.25, seed=5000, kinds=storm, by_key=lost))
        async with client_for(fake, retry=policy, sleep=no_sleep) as store:
            outcomes = await asyncio.gather(
                *(
                    store.consume(r, attempts=2 if r.idempotency_key in cursed else None)
                    for r in requests
                ),
                return_exceptions=True,
            )
            assert all(isinstance(o, ConsumeResult | OutcomeUnknownError) for o in outcomes)
            unknown = [
                r
                for r, o in zip(requests, outcomes, strict=True)
                if not isinstance(o, ConsumeResult)
            ]
            for request, outcome in zip(requests, outcomes, strict=True):
                if isinstance(outcome, ConsumeResult):
                    assert fake.ledger.applied(request.idempotency_key) == 1
                else:
                    assert isinstance(outcome, OutcomeUnknownError)
                    assert outcome.tracking_id == request.tracking_id
                    assert fake.ledger.applied(request.idempotency_key) <= 1
            # Resubmitting the unknown ones (same tracking ids) settles every one of them.
            fake.set_faults(FaultPlan.none())
            settled = await asyncio.gather(*(store.consume(r) for r in unknown))
            assert all(isinstance(s, ConsumeResult) for s in settled)
    assert all(fake.ledger.applied(r.idempotency_key) == 1 for r in requests)
    assert fake.ledger.total == calls
    log = fake.request_log
    tracking_ids_by_item: defaultdict[str, set[str]] = defaultdict(set)
    for entry in log.of("consume"):
        sent = orjson.loads(entry.body)
        tracking_ids_by_item[sent["itemId"]].add(sent["trackingId"])
    assert len(tracking_ids_by_item) == calls
    assert all(len(ids) == 1 for ids in tracking_ids_by_item.values())
    assert all(len(log.bodies(key)) == 1 for key in log.idempotency_keys())
    storm_retries = sum(n - 1 for key, n in log.sends_by_key.items() if key not in cursed)
    assert 0.25 * calls < storm_retries < 0.45 * calls  # 1/3 retry per call at 25 % faults
    print(
        f"\n5000 consumes, 25% faults: {fake.stats.requests['consume']} sends, "
        f"{len(unknown)} outcome-unknown then settled, {fake.ledger.replays()} replays"
    )


async def test_a_full_503_outage_sends_at_most_calls_plus_budget_retries() -> None:
    calls, budget = 300, 20
    policy = RetryPolicy(budget_size=budget, budget_refill_per_second=0, attempts=10)
    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_503)) as fake,
        client_for(fake, retry=policy, sleep=no_sleep) as store,
    ):
        requests = [
            ConsumeRequest.for_item(
                UserIdentity(identity_value="k", local_ticket_reference="r"), f"i{n}"
            )
            for n in range(calls)
        ]
        outcomes = await asyncio.gather(
            *(store.consume(r) for r in requests), return_exceptions=True
        )
    assert all(isinstance(o, OutcomeUnknownError) for o in outcomes)
    sent = fake.stats.requests["consume"]
    assert sent == calls + budget
    stopped = [o for o in outcomes if "empty retry budget" in str(o)]
    assert len(stopped) >= calls - budget
    print(
        f"\n100% 503 outage: {calls} calls sent {sent} requests "
        f"(amplification {sent / calls:.3f}, without a budget: up to 10.0)"
    )


async def test_retry_after_seconds_is_honoured_without_sleeping(beneficiary: UserIdentity) -> None:
    clock = FakeClock()
    plan = only_consume(FaultKind.HTTP_429, FaultKind.HTTP_429, retry_after=4)
    async with emulator(plan) as fake, client_for(fake, clock=clock, sleep=clock.sleep) as store:
        result = await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    assert result.attempts == 3
    assert len(clock.sleeps) == 2
    assert all(4.0 <= s <= 4.0 + 0.1 for s in clock.sleeps)


async def test_retry_after_http_date_is_honoured_and_capped(beneficiary: UserIdentity) -> None:
    clock = FakeClock()
    throttled = FaultKind.HTTP_429
    plan = only_consume(throttled, throttled, retry_after=8, retry_after_date=True)
    async with emulator(plan) as fake:
        policy = RetryPolicy(retry_after_cap=10.0)
        async with client_for(fake, clock=clock, sleep=clock.sleep, retry=policy) as store:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
            fake.set_faults(only_consume(throttled, retry_after=3600, retry_after_date=True))
            with pytest.raises(ThrottledError) as raised:
                await store.consume(ConsumeRequest.for_item(beneficiary, "j"))
    first_retry_after = fake.request_log[0].response_headers["Retry-After"]
    assert first_retry_after.endswith(" GMT")  # an HTTP-date, not seconds
    assert 6.9 <= clock.sleeps[0] <= 8.0  # HTTP-dates have whole seconds
    assert 6.9 <= clock.sleeps[1] <= 8.0
    assert len(clock.sleeps) == 2  # an hour asked, beyond the cap: ended at once, never resent
    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 3500


async def test_the_deadline_is_never_exceeded(beneficiary: UserIdentity) -> None:
    clock = FakeClock()
    start = clock()
    policy = RetryPolicy(timeout=5.0, attempts=100, backoff_base=0.5, backoff_cap=2.0)
    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_503)) as fake,
        client_for(fake, clock=clock, sleep=clock.sleep, retry=policy) as store,
    ):
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"), timeout=3.0)
    assert clock() - start < 3.0
    assert raised.value.attempts == fake.stats.requests["consume"] >= 2
    assert "the timeout" in str(raised.value)


async def test_per_call_attempts_override(beneficiary: UserIdentity) -> None:
    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_500)) as fake,
        client_for(fake, sleep=no_sleep) as store,
    ):
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"), attempts=1)
    assert raised.value.attempts == 1
    assert isinstance(raised.value.last_error, ServiceUnavailableError)
    assert fake.stats.requests["consume"] == 1


async def test_outcome_unknown_for_a_transaction_carries_the_transaction_id(
    beneficiary: UserIdentity,
) -> None:
    transaction = "f9ad7ba3-9a86-41a5-8fa6-6e1d3b0da5b4"
    async with (
        emulator(FaultPlan.always(FaultKind.DROP_AFTER_COMMIT)) as fake,
        client_for(fake, sleep=no_sleep) as store,
    ):
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(
                ConsumeRequest.for_transaction(beneficiary, "9NBLGGH4TNMP", transaction),
                attempts=3,
            )
    assert raised.value.tracking_id == transaction
    assert fake.ledger.applied(transaction) == 1


async def test_renew_has_no_idempotency_key_so_it_is_never_repeated_after_maybe_applied() -> None:
    for fault in (FaultKind.DROP_AFTER_COMMIT, FaultKind.RESET_BEFORE_COMMIT, FaultKind.HTTP_503):
        plan = FaultPlan.always(fault)
        async with emulator(plan) as fake, client_for(fake, sleep=no_sleep) as store:
            with pytest.raises(OutcomeUnknownError) as raised:
                await store.renew_store_id_key(fake.mint_store_id_key("user-1"))
        assert fake.stats.requests["renew"] == 1, fault
        assert raised.value.tracking_id is None
        assert raised.value.attempts == 1


async def test_renew_is_repeated_after_answers_that_applied_nothing() -> None:
    plan = FaultPlan(script={"renew": [FaultKind.HTTP_429, FaultKind.HTTP_503]}, retry_after=0)
    async with emulator(plan) as fake, client_for(fake, sleep=no_sleep) as store:
        with pytest.raises(OutcomeUnknownError):
            await store.renew_store_id_key(fake.mint_store_id_key("user-1"))
    assert fake.stats.requests["renew"] == 2  # the 429 was retried, the 503 was not


async def test_a_read_is_repeated_after_maybe_applied(beneficiary: UserIdentity) -> None:
    async with (
        emulator(
            FaultPlan(script={"offline_license": [FaultKind.DROP_AFTER_COMMIT, FaultKind.HTTP_500]})
        ) as fake,
        client_for(fake, sleep=no_sleep) as store,
    ):
        license_ = await store.get_offline_license("p", "s", "c")
    assert license_.content_id == "c"
    assert len(fake.request_log) == 3


async def test_connection_refused_is_retried_and_reported_as_not_sent(
    beneficiary: UserIdentity,
) -> None:
    async with emulator() as fake:
        endpoints = fake.endpoints
    # The server is gone: every attempt is refused, nothing was sent, so no OutcomeUnknownError.
    async with StoreClient(
        StaticTokenCredential(GOOD_TOKEN), endpoints=endpoints, sleep=no_sleep
    ) as store:
        with pytest.raises(TransportError) as raised:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"), attempts=3)
    assert raised.value.kind is FailureKind.NOT_SENT


async def test_an_attempt_that_times_out_is_maybe_applied_and_retried(
    beneficiary: UserIdentity,
) -> None:
    policy = RetryPolicy(attempt_timeout=0.2, connect_timeout=0.1)
    request = ConsumeRequest.for_item(beneficiary, "i")
    async with (
        emulator(only_consume(FaultKind.HANG)) as fake,
        client_for(fake, retry=policy, sleep=no_sleep) as store,
    ):
        result = await store.consume(request)
        assert result.attempts == 2
        assert fake.release_hanging() == 1  # the hung first attempt now runs: a replay
        await fake.wait_released()
    assert fake.ledger.applied(request.idempotency_key) == 1
    assert fake.ledger.replays(request.idempotency_key) == 1


async def test_throttling_that_outlasts_the_deadline_fails_with_retry_after(
    beneficiary: UserIdentity,
) -> None:
    clock = FakeClock()
    async with emulator(FaultPlan.always(FaultKind.HTTP_429, retry_after=20)) as fake:
        policy = RetryPolicy(timeout=30, retry_after_cap=30)
        async with client_for(fake, clock=clock, sleep=clock.sleep, retry=policy) as store:
            with pytest.raises(ThrottledError) as raised:
                await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    assert raised.value.retry_after == 20.0
    assert fake.stats.requests["consume"] == 2  # 0 s + 20 s; a third would wait past 30 s
