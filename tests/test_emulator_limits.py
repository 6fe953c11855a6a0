"""The emulator's per-user rate limits: 429 with Retry-After and the documented text, per user,
queries on their own (lower) limit, and a test clock instead of real waiting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from store_async import ConsumeRequest, RetryPolicy, StoreClient, ThrottledError, UserIdentity
from store_async.emulator import StoreEmulator
from store_async.emulator.limits import UserLimits


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def identity(value: str) -> dict[str, str]:
    return {"identityType": "b2b", "identityValue": value, "localTicketReference": "ref"}


async def post(
    session: aiohttp.ClientSession, emu: StoreEmulator, path: str, body: Any
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {emu.dev_token}", "Content-Type": "application/json"}
    async with session.post(f"{emu.url}{path}", data=orjson.dumps(body), headers=headers) as got:
        raw = await got.read()
        return got.status, dict(got.headers), orjson.loads(raw) if raw else None


async def consume(
    session: aiohttp.ClientSession, emu: StoreEmulator, user: str
) -> tuple[int, dict[str, str], Any]:
    body = {"beneficiary": identity(user), "productId": "P", "transactionId": str(uuid.uuid4())}
    return await post(session, emu, "/v6.0/collections/consume", body)


async def test_over_the_limit_a_user_gets_429_with_retry_after_and_the_documented_text(
    session: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    limits = UserLimits(3, 2.0, clock=clock)
    async with StoreEmulator(auto_create=True, user_limit=limits) as emu:
        for step in range(3):
            clock.now = 50.0 + 0.25 * step
            assert (await consume(session, emu, "hot"))[0] == 204
        clock.now = 50.75
        status, headers, body = await consume(session, emu, "hot")
        assert status == 429
        assert headers["Retry-After"] == "1.25"  # the arrival at 50.0 leaves the window at 52.0
        assert body["innererror"]["code"] == "RateLimitExceeded"
        assert body["message"] == (
            "The rate limit of 3 operations in 2 seconds has been exceeded for aspect "
            "{userId; publisherId}."
        )
        assert (await consume(session, emu, "other"))[0] == 204  # per user
        clock.now = 52.0  # the first arrival has left; the refused one never counted
        assert (await consume(session, emu, "hot"))[0] == 204
        assert (await consume(session, emu, "hot"))[0] == 429
        assert emu.user_limits is limits
        assert limits.throttled == {"hot": 2}
        assert limits.admitted == {"hot": 4, "other": 1}
        assert emu.stats.answers[("consume", 429)] == 2
        assert emu.ledger.total == 5


async def test_queries_have_their_own_lower_limit(session: aiohttp.ClientSession) -> None:
    clock = Clock()
    async with StoreEmulator(auto_create=True, user_limit=UserLimits(4, 10.0, clock=clock)) as emu:
        query = {"beneficiaries": [identity("u")], "productTypes": ["UnmanagedConsumable"]}
        statuses = [
            (await post(session, emu, "/v6.0/collections/query", query))[0] for _ in range(3)
        ]
        assert statuses == [200, 200, 429]  # half of 4
        status, _, body = await post(session, emu, "/v6.0/collections/query", query)
        assert status == 429
        assert body["message"].startswith("The rate limit of 2 operations in 10 seconds")
        assert [(await consume(session, emu, "u"))[0] for _ in range(5)] == [204] * 4 + [429]


async def test_a_tuple_configures_limits_and_none_means_unlimited(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(auto_create=True, user_limit=(2, 60.0)) as emu:
        assert emu.user_limits is not None
        assert (emu.user_limits.ops, emu.user_limits.seconds, emu.user_limits.query_ops) == (
            2,
            60.0,
            1,
        )
        assert [(await consume(session, emu, "u"))[0] for _ in range(3)] == [204, 204, 429]
    async with StoreEmulator(auto_create=True) as emu:
        assert emu.user_limits is None
        assert [(await consume(session, emu, "u"))[0] for _ in range(30)] == [204] * 30


def test_limits_refuse_bad_values() -> None:
    assert UserLimits.parse("20/2").ops == 20
    for text in ("20", "x/2", "0/2", "2/0", "2/-1"):
        with pytest.raises(ValueError, match="OPS/SECONDS"):
            UserLimits.parse(text)
    with pytest.raises(ValueError, match="query_ops"):
        UserLimits(2, 1.0, query_ops=0)
    assert UserLimits.retry_after_header(0.0) == "0.001"
    assert UserLimits.retry_after_header(1.0004) == "1.001"


async def test_the_client_sees_a_throttled_error_carrying_retry_after() -> None:
    clock = Clock()
    async with StoreEmulator(auto_create=True, user_limit=UserLimits(1, 30.0, clock=clock)) as emu:
        user = UserIdentity(identity_value="u", local_ticket_reference="ref")
        policy = RetryPolicy(attempts=1)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints, retry=policy) as store:
            await store.consume(ConsumeRequest.for_transaction(user, "P", str(uuid.uuid4())))
            with pytest.raises(ThrottledError) as caught:
                await store.consume(ConsumeRequest.for_transaction(user, "P", str(uuid.uuid4())))
        assert caught.value.status == 429
        assert caught.value.retry_after == 30.0
