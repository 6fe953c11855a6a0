"""Cancellation, logging without secrets, and attempt hooks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from store_async import RetryPolicy, StoreClient, TokenCache
from store_async.credentials import StaticTokenCredential
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.errors import FailureKind, OutcomeUnknownError, StoreError
from store_async.instrumentation import AttemptFinished, AttemptStarted, ClientHooks
from store_async.models import ConsumeRequest, UserIdentity
from tests.support.clock import FakeClock
from tests.support.credentials import GOOD_TOKEN, CountingCredential
from tests.support.emulator import emulator


def answer_ids(emu: StoreEmulator, index: int) -> tuple[str, str, str]:
    """``(MS-CorrelationId, MS-RequestId, MS-CV)`` of the emulator's answer to a request."""
    headers = emu.request_log[index].response_headers
    return headers["MS-CorrelationId"], headers["MS-RequestId"], headers["MS-CV"]


def client_tasks() -> list[asyncio.Task[object]]:
    """Tasks other than this test's and the fake server's request handlers."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current
        and not getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    ]


async def test_cancelling_a_caller_mid_attempt_raises_and_leaves_no_task(
    beneficiary: UserIdentity,
) -> None:
    async with (
        emulator(FaultPlan.always(FaultKind.HANG)) as fake,
        StoreClient(StaticTokenCredential(GOOD_TOKEN), endpoints=fake.endpoints) as store,
    ):
        call = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "i")))
        await fake.wait_for_hanging(1)  # the request is on the server, awaiting its answer
        assert client_tasks() == [call]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0)
        assert client_tasks() == []
        assert fake.stats.requests["consume"] == 1  # and never resent


async def test_cancelling_a_caller_during_the_retry_wait(beneficiary: UserIdentity) -> None:
    waiting = asyncio.Event()

    async def long_sleep(_seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_503)) as fake,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN), endpoints=fake.endpoints, sleep=long_sleep
        ) as store,
    ):
        call = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "i")))
        await waiting.wait()
        assert client_tasks() == [call]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client_tasks() == []
        assert fake.stats.requests["consume"] == 1


async def test_cancelling_callers_waiting_for_a_token_keeps_the_refresh_for_others(
    beneficiary: UserIdentity,
) -> None:
    gate = asyncio.Event()
    credential = CountingCredential(gate=gate)
    async with emulator() as fake, StoreClient(credential, endpoints=fake.endpoints) as store:
        first = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "a")))
        second = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "b")))
        await credential.entered.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        assert (await second).attempts == 1
    assert credential.calls == 1
    assert fake.stats.requests["consume"] == 1


async def test_logs_at_debug_across_scenarios_never_contain_a_token_or_a_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Request by request: item-1 loses its answer (resent), item-2 meets 503, 429, a reset
    # and a 401 (the token is refreshed) before it succeeds; then the renewal succeeds.
    script = [
        FaultKind.DROP_AFTER_COMMIT,
        None,
        FaultKind.HTTP_503,
        FaultKind.HTTP_429,
        FaultKind.RESET_BEFORE_COMMIT,
        FaultKind.HTTP_401,
    ]
    plan = FaultPlan(script={"consume": script}, retry_after=0)
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        async with emulator(plan) as fake:
            secret_tokens = [fake.mint_access_token(), fake.mint_access_token()]
            key = fake.mint_store_id_key("user-secret")
            beneficiary = UserIdentity(identity_value=key, local_ticket_reference="ref")
            clock = FakeClock()
            credential = CountingCredential(
                secret_tokens,
                clock=clock,
                lifetime=3600,
                failures={3},
                error=RuntimeError(secret_tokens[0]),
            )
            cache = TokenCache(credential, clock=clock)
            store = StoreClient(cache, endpoints=fake.endpoints, sleep=clock.sleep, clock=clock)
            async with store:
                await store.consume(ConsumeRequest.for_item(beneficiary, "item-1"))
                await store.consume(ConsumeRequest.for_item(beneficiary, "item-2"))
                renewed = await store.renew_store_id_key(key)
                clock.now += 3600 - 100  # early refresh fails (call 3), keeps serving
                await store.consume(ConsumeRequest.for_item(beneficiary, "item-3"))
                fake.set_faults(FaultPlan.always(FaultKind.DROP_AFTER_COMMIT))
                try:
                    await store.consume(ConsumeRequest.for_item(beneficiary, "item-4"), attempts=2)
                except OutcomeUnknownError as error:
                    errors.append(error)
                fake.set_faults(FaultPlan.always(FaultKind.HTTP_401))
                try:
                    await store.renew_store_id_key(key)
                except StoreError as error:
                    errors.append(error)
    text = caplog.text + "".join(f"{e!s} {e!r}" for e in errors)
    assert "retrying consume trackingId=" in caplog.text
    assert "kind=maybe_applied" in caplog.text
    assert "keeping the current token" in caplog.text
    assert len(errors) == 2
    for secret in (*secret_tokens, key, renewed.value, key.split(".")[1]):
        assert secret not in text


async def test_the_retry_log_line_names_what_support_needs(
    beneficiary: UserIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    request = ConsumeRequest.for_item(beneficiary, "i")
    async with (
        emulator(FaultPlan(script={"consume": [FaultKind.HTTP_503]})) as fake,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN), endpoints=fake.endpoints, sleep=FakeClock().sleep
        ) as store,
    ):
        with caplog.at_level(logging.DEBUG, logger="store_async"):
            await store.consume(request)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert f"trackingId={request.tracking_id}" in line
    assert "after attempt 1: ServiceUnavailableError kind=maybe_applied status=503" in line
    correlation_id, request_id, server_cv = answer_ids(fake, 0)  # the 503's
    sent_cv = fake.request_log[0].cv  # the vector we sent (support looks it up)
    assert sent_cv is not None
    assert server_cv == f"{sent_cv}.0"
    assert f"correlation_id={correlation_id} request_id={request_id} cv={sent_cv}" in line
    assert "wait=" in line


async def test_hooks_see_every_attempt_and_a_failing_hook_is_ignored(
    beneficiary: UserIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[AttemptStarted] = []
    finished: list[AttemptFinished] = []

    def broken(_event: AttemptStarted) -> None:
        started.append(_event)
        raise RuntimeError("metrics backend down")

    hooks = ClientHooks(on_attempt_start=broken, on_attempt_end=finished.append)
    request = ConsumeRequest.for_item(beneficiary, "i")
    async with (
        emulator(FaultPlan(script={"consume": [FaultKind.DROP_AFTER_COMMIT]})) as fake,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN),
            endpoints=fake.endpoints,
            hooks=hooks,
            sleep=FakeClock().sleep,
        ) as store,
    ):
        result = await store.consume(request)
    assert result.attempts == 2
    assert [(e.operation, e.idempotency_key, e.attempt) for e in started] == [
        ("consume", request.tracking_id, 1),
        ("consume", request.tracking_id, 2),
    ]
    first, second = finished
    assert (first.attempt, first.status, first.failure_kind) == (1, None, FailureKind.MAYBE_APPLIED)
    assert (second.attempt, second.status, second.error) == (2, 204, None)
    assert second.correlation_id == answer_ids(fake, 1)[0]
    assert first.duration >= 0
    assert second.duration >= 0
    assert "metrics backend down" not in caplog.text
    assert "raised RuntimeError (AttemptStarted); ignored, and not reported again" in caplog.text
    assert caplog.text.count("metrics backend") == 0
    assert caplog.text.count("raised RuntimeError") == 1  # once per hook, not per event


async def test_hooks_report_status_of_error_answers(beneficiary: UserIdentity) -> None:
    finished: list[AttemptFinished] = []
    policy = RetryPolicy(attempts=2)
    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_500)) as fake,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN),
            endpoints=fake.endpoints,
            hooks=ClientHooks(on_attempt_end=finished.append),
            retry=policy,
            sleep=FakeClock().sleep,
        ) as store,
    ):
        with pytest.raises(OutcomeUnknownError):
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    assert [(e.attempt, e.status, e.correlation_id) for e in finished] == [
        (1, 500, answer_ids(fake, 0)[0]),
        (2, 500, answer_ids(fake, 1)[0]),
    ]
