"""Tokens through the client: cold start, refresh ahead under load, failures, 401 resend."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from store_async import RetryPolicy, StoreClient, TokenCache
from store_async.emulator import StoreEmulator
from store_async.errors import AuthenticationError
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity
from tests.support.clock import FakeClock
from tests.support.credentials import GOOD_TOKEN, CountingCredential
from tests.support.emulator import emulator


def bearer(emu: StoreEmulator, index: int) -> str | None:
    return emu.request_log[index].bearer


@pytest.mark.slow
async def test_10000_concurrent_calls_on_a_cold_cache_cause_one_get_token(
    beneficiary: UserIdentity,
) -> None:
    gate = asyncio.Event()
    credential = CountingCredential([GOOD_TOKEN], gate=gate)
    # 10,000 calls queue for 100 pooled connections: generous timeouts keep this test about
    # the token, not about how fast a shared CI machine drains the queue.
    policy = RetryPolicy(timeout=300, attempt_timeout=120, connect_timeout=60)
    async with (
        emulator() as fake,
        StoreClient(credential, endpoints=fake.endpoints, retry=policy) as store,
    ):
        calls = [
            asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, f"i{n}")))
            for n in range(10_000)
        ]
        await credential.entered.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        assert credential.calls == 1  # everyone is waiting on that one request
        assert len(fake.request_log) == 0
        gate.set()
        results = await asyncio.gather(*calls)
    assert all(isinstance(r, ConsumeResult) and r.attempts == 1 for r in results)
    assert credential.calls == 1
    assert fake.stats.requests["consume"] == 10_000


async def test_a_token_nearing_expiry_under_load_refreshes_once_and_nobody_waits(
    beneficiary: UserIdentity,
) -> None:
    clock = FakeClock()
    credential = CountingCredential(clock=clock, lifetime=3600)
    cache = TokenCache(credential, clock=clock)
    async with (
        emulator() as fake,
        StoreClient(cache, endpoints=fake.endpoints) as store,
    ):
        t1, t2 = credential.tokens = [fake.mint_access_token(), fake.mint_access_token()]
        await store.consume(ConsumeRequest.for_item(beneficiary, "first"))
        credential.gate = asyncio.Event()  # the refresh will hang
        clock.now += 3600 - 200  # inside the refresh margin; t1 is still valid

        # 500 calls complete while the refresh is still hanging: none waited for it.
        results = await asyncio.gather(
            *(store.consume(ConsumeRequest.for_item(beneficiary, f"i{n}")) for n in range(500))
        )
        assert len(results) == 500
        assert credential.calls == 2  # the first token, and one refresh in flight
        assert {bearer(fake, n) for n in range(501)} == {t1}

        credential.returned.clear()
        credential.gate.set()
        await credential.returned.wait()
        assert cache.fresh_token() == t2
        await store.consume(ConsumeRequest.for_item(beneficiary, "after"))
    assert bearer(fake, 501) == t2
    assert credential.calls == 2


async def test_a_failing_early_refresh_keeps_serving_the_valid_token(
    beneficiary: UserIdentity,
) -> None:
    clock = FakeClock()
    credential = CountingCredential([GOOD_TOKEN, "t2"], clock=clock, lifetime=3600, failures={2})
    cache = TokenCache(credential, clock=clock)
    async with (
        emulator() as fake,
        StoreClient(cache, endpoints=fake.endpoints) as store,
    ):
        await store.consume(ConsumeRequest.for_item(beneficiary, "first"))
        clock.now += 3600 - 200
        results = await asyncio.gather(
            *(store.consume(ConsumeRequest.for_item(beneficiary, f"i{n}")) for n in range(200))
        )
    assert all(r.attempts == 1 for r in results)
    assert credential.calls == 2
    assert fake.stats.requests["consume"] == 201


async def test_a_rejected_token_is_refreshed_once_and_resent_under_the_same_key(
    beneficiary: UserIdentity,
) -> None:
    credential = CountingCredential(["t1", GOOD_TOKEN])  # the emulator refuses t1
    request = ConsumeRequest.for_item(beneficiary, "item")
    async with (
        emulator() as fake,
        StoreClient(credential, endpoints=fake.endpoints) as store,
    ):
        result = await store.consume(request)
    assert result.attempts == 2
    assert credential.calls == 2
    assert [bearer(fake, 0), bearer(fake, 1)] == ["t1", GOOD_TOKEN]
    assert fake.request_log[0].body == fake.request_log[1].body
    assert fake.ledger.applied(request.idempotency_key) == 1


async def test_concurrent_401s_for_one_token_refresh_once(beneficiary: UserIdentity) -> None:
    credential = CountingCredential(["t1", GOOD_TOKEN, "t3"])
    async with (
        emulator() as fake,
        StoreClient(credential, endpoints=fake.endpoints) as store,
    ):
        results = await asyncio.gather(
            *(store.consume(ConsumeRequest.for_item(beneficiary, f"i{n}")) for n in range(100))
        )
    assert all(r.attempts == 2 for r in results)
    assert credential.calls == 2
    assert fake.stats.requests["consume"] == 200


async def test_a_token_rejected_twice_is_final(beneficiary: UserIdentity) -> None:
    credential = CountingCredential(["t1", "t2", "t3"])  # none of them valid
    async with (
        emulator() as fake,
        StoreClient(credential, endpoints=fake.endpoints) as store,
    ):
        with pytest.raises(AuthenticationError) as raised:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    assert raised.value.inner_code == "AuthenticationTokenInvalid"
    assert raised.value.status == 401
    assert fake.stats.requests["consume"] == 2
    assert credential.calls == 2
    assert "t1" not in str(raised.value)
    assert "t2" not in str(raised.value)


async def test_a_failing_credential_on_a_cold_cache_sends_nothing(
    beneficiary: UserIdentity,
) -> None:
    credential = CountingCredential(failures={1})
    async with emulator() as fake, StoreClient(credential, endpoints=fake.endpoints) as store:
        with pytest.raises(AuthenticationError) as raised:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    assert len(fake.request_log) == 0
    assert "s3cr3t" not in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)


async def test_renewal_with_a_rejected_token_resends_the_new_token_in_the_body() -> None:
    credential = CountingCredential(["t1", GOOD_TOKEN])
    async with (
        emulator() as fake,
        StoreClient(credential, endpoints=fake.endpoints) as store,
    ):
        key = fake.mint_store_id_key("user-1")
        await store.renew_store_id_key(key)
    bodies = [orjson.loads(r.body) for r in fake.request_log]
    assert bodies == [
        {"serviceTicket": "t1", "key": key},
        {"serviceTicket": GOOD_TOKEN, "key": key},
    ]
