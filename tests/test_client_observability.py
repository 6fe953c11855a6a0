"""Cancellation, logging without secrets, and attempt hooks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from store_async import RetryPolicy, StoreClient, TokenCache
from store_async.credentials import StaticTokenCredential
from store_async.errors import FailureKind, OutcomeUnknownError, StoreError
from store_async.instrumentation import AttemptFinished, AttemptStarted, ClientHooks
from store_async.models import ConsumeRequest, UserIdentity
from tests.fake_store import (
    GOOD_TOKEN,
    CountingCredential,
    FakeClock,
    FakeStore,
    Fault,
    always,
    make_store_id_key,
    script,
)


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
        FakeStore(plan=always(Fault.HANG)) as fake,
        StoreClient(StaticTokenCredential(GOOD_TOKEN), endpoints=fake.endpoints) as store,
    ):
        call = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "i")))
        await fake.started.wait()  # the request is on the server, awaiting its answer
        assert client_tasks() == [call]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0)
        assert client_tasks() == []
        assert fake.sends["/v6.0/collections/consume"] == 1  # and never resent


async def test_cancelling_a_caller_during_the_retry_wait(beneficiary: UserIdentity) -> None:
    waiting = asyncio.Event()

    async def long_sleep(_seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    async with (
        FakeStore(plan=always(Fault.ERROR_503)) as fake,
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
        assert fake.sends["/v6.0/collections/consume"] == 1


async def test_cancelling_callers_waiting_for_a_token_keeps_the_refresh_for_others(
    beneficiary: UserIdentity,
) -> None:
    gate = asyncio.Event()
    credential = CountingCredential(gate=gate)
    async with FakeStore() as fake, StoreClient(credential, endpoints=fake.endpoints) as store:
        first = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "a")))
        second = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "b")))
        await credential.entered.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        assert (await second).attempts == 1
    assert credential.calls == 1
    assert fake.sends["/v6.0/collections/consume"] == 1


async def test_logs_at_debug_across_scenarios_never_contain_a_token_or_a_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_tokens = ["tok-AAAA-secret-1", "tok-BBBB-secret-2"]
    key = make_store_id_key(user_id="user-secret")
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
    plan = script(
        Fault.DROP_AFTER_COMMIT,
        Fault.ERROR_503,
        Fault.THROTTLE_429,
        Fault.RESET_BEFORE_COMMIT,
        Fault.TOKEN_INVALID_401,
    )
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        async with (
            FakeStore(plan=plan, tokens=secret_tokens) as fake,
            StoreClient(cache, endpoints=fake.endpoints, sleep=clock.sleep, clock=clock) as store,
        ):
            fake.retry_after = "0"
            await store.consume(ConsumeRequest.for_item(beneficiary, "item-1"))
            await store.consume(ConsumeRequest.for_item(beneficiary, "item-2"))
            renewed = await store.renew_store_id_key(key)
            clock.now += 3600 - 100  # early refresh fails (call 3), keeps serving
            await store.consume(ConsumeRequest.for_item(beneficiary, "item-3"))
            fake.plan = always(Fault.DROP_AFTER_COMMIT)
            try:
                await store.consume(ConsumeRequest.for_item(beneficiary, "item-4"), attempts=2)
            except OutcomeUnknownError as error:
                errors.append(error)
            fake.plan = always(Fault.TOKEN_INVALID_401)
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
        FakeStore(plan=script(Fault.ERROR_503)) as fake,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN), endpoints=fake.endpoints, sleep=FakeClock().sleep
        ) as store,
    ):
        with caplog.at_level(logging.DEBUG, logger="store_async"):
            await store.consume(request)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert f"trackingId={request.tracking_id}" in line
    assert "after attempt 1: ServiceUnavailableError kind=maybe_applied status=503" in line
    assert "correlation_id=corr-error request_id=req-error cv=cv.e" in line
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
        FakeStore(plan=script(Fault.DROP_AFTER_COMMIT)) as fake,
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
    assert second.correlation_id == f"corr-{request.tracking_id}"
    assert first.duration >= 0
    assert second.duration >= 0
    assert "metrics backend down" not in caplog.text
    assert "raised RuntimeError; ignored" in caplog.text


async def test_hooks_report_status_of_error_answers(beneficiary: UserIdentity) -> None:
    finished: list[AttemptFinished] = []
    policy = RetryPolicy(attempts=2)
    async with (
        FakeStore(plan=always(Fault.ERROR_500)) as fake,
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
        (1, 500, "corr-error"),
        (2, 500, "corr-error"),
    ]
