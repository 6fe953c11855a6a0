"""TokenCache: single flight, refresh ahead without waiting, failures, invalidation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from store_async import STORE_SCOPE, TokenCache
from store_async.errors import AuthenticationError, ValidationError
from tests.support.clock import FakeClock
from tests.support.credentials import CountingCredential, LegacyCredential


def cache_for(credential: CountingCredential, clock: FakeClock, **options: Any) -> TokenCache:
    options.setdefault("refresh_jitter", 0.0)  # exact refresh times make exact tests
    return TokenCache(credential, clock=clock, **options)


async def test_cold_cache_10000_concurrent_callers_cause_one_get_token() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    credential = CountingCredential(["t1"], clock=clock, gate=gate)
    cache = cache_for(credential, clock)
    callers = [asyncio.create_task(cache.get_token()) for _ in range(10_000)]
    await asyncio.sleep(0)
    gate.set()
    tokens = await asyncio.gather(*callers)
    assert set(tokens) == {"t1"}
    assert credential.calls == 1
    assert credential.scopes == [(STORE_SCOPE,)]
    assert cache.fetches == 1


async def test_fresh_token_is_synchronous_once_cached() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1"], clock=clock)
    cache = cache_for(credential, clock)
    assert cache.fresh_token() is None
    assert await cache.get_token() == "t1"
    for _ in range(100):
        assert cache.fresh_token() == "t1"
    assert credential.calls == 1


async def test_token_nearing_expiry_under_load_refreshes_once_and_nobody_waits() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    credential = CountingCredential(["old", "new"], clock=clock, lifetime=3600)
    cache = cache_for(credential, clock)
    assert await cache.get_token() == "old"
    credential.gate = gate  # the refresh will hang until we open the gate
    clock.now += 3600 - 299  # inside the 5-minute refresh margin, still valid

    # 5,000 callers while the refresh hangs: every one completes with the old token.
    results = await asyncio.gather(*(cache.get_token() for _ in range(5_000)))
    assert set(results) == {"old"}
    assert [cache.fresh_token() for _ in range(100)] == ["old"] * 100
    assert credential.calls == 2  # the first fetch and exactly one refresh, still hanging

    gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.fresh_token() == "new"
    assert credential.calls == 2


async def test_refresh_on_from_get_token_info_is_honoured() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1", "t2"], clock=clock, lifetime=3600, refresh_in=600)
    cache = cache_for(credential, clock)
    await cache.get_token()
    clock.now += 599
    assert cache.fresh_token() == "t1"
    assert credential.calls == 1
    clock.now += 2  # past refresh_on, long before the 5-minute margin
    assert cache.fresh_token() == "t1"  # served while the background refresh runs
    await asyncio.sleep(0)
    assert cache.fresh_token() == "t2"
    assert credential.calls == 2


async def test_get_token_is_used_when_get_token_info_is_absent() -> None:
    clock = FakeClock()
    credential = LegacyCredential(["legacy"], clock=clock)
    cache = cache_for(credential, clock)
    assert await cache.get_token() == "legacy"
    assert credential.calls == 1


async def test_failing_early_refresh_keeps_serving_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    credential = CountingCredential(["old", "new"], clock=clock, lifetime=3600, failures={2, 3})
    cache = cache_for(credential, clock, failure_backoff=10.0)
    await cache.get_token()
    clock.now += 3600 - 200
    with caplog.at_level(logging.DEBUG, logger="store_async"):
        assert cache.fresh_token() == "old"
        await asyncio.sleep(0)  # refresh 2 fails
        assert credential.calls == 2
        assert await cache.get_token() == "old"
        clock.now += 9
        assert cache.fresh_token() == "old"
        assert credential.calls == 2  # backing off: no new attempt yet
        clock.now += 2
        assert cache.fresh_token() == "old"
        await asyncio.sleep(0)  # refresh 3 fails, backoff doubles to 20 s
        assert credential.calls == 3
        clock.now += 21
        assert cache.fresh_token() == "old"
        await asyncio.sleep(0)  # refresh 4 succeeds
    assert cache.fresh_token() == "new"
    assert credential.calls == 4
    assert "keeping the current token" in caplog.text
    assert "s3cr3t" not in caplog.text
    # Nothing failed for any caller: the library stays below WARNING (it does not print).
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_no_valid_token_and_failing_credential_raises_authentication_error() -> None:
    clock = FakeClock()
    credential = CountingCredential(clock=clock, failures={1})
    cache = cache_for(credential, clock)
    results = await asyncio.gather(*(cache.get_token() for _ in range(100)), return_exceptions=True)
    assert credential.calls == 1
    assert all(type(r) is AuthenticationError for r in results)
    error = results[0]
    assert isinstance(error, AuthenticationError)
    assert "RuntimeError" in str(error)
    assert "s3cr3t" not in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    # The next call tries again (failures are not cached forever).
    assert await cache.get_token() == "good-token-0123456789"
    assert credential.calls == 2


async def test_expired_token_is_not_served_and_callers_wait_for_the_new_one() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1", "t2"], clock=clock, lifetime=3600)
    cache = cache_for(credential, clock)
    await cache.get_token()
    clock.now += 3600 - 5  # inside the 10-second expiry margin
    assert cache.fresh_token() is None
    assert await cache.get_token() == "t2"


@pytest.mark.parametrize(
    ("token", "lifetime", "message"),
    [
        ("has space", 3600, "malformed"),
        ("line\r\nbreak", 3600, "malformed"),
        ("", 3600, "malformed"),
        ("ok", 5, "already expired"),
    ],
)
async def test_unusable_tokens_from_the_credential_are_refused(
    token: str, lifetime: float, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    cache = cache_for(CountingCredential([token], clock=clock, lifetime=lifetime), clock)
    with pytest.raises(AuthenticationError) as raised:
        await cache.get_token()
    assert isinstance(raised.value.__cause__, AuthenticationError)
    assert message in str(raised.value.__cause__)


async def test_invalidate_drops_only_the_current_token() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1", "t2", "t3"], clock=clock)
    cache = cache_for(credential, clock)
    await cache.get_token()
    cache.invalidate("t1")
    assert cache.fresh_token() is None
    assert await cache.get_token() == "t2"
    cache.invalidate("t1")  # a late 401 for the old token: ignored
    assert cache.fresh_token() == "t2"
    assert credential.calls == 2


async def test_concurrent_401s_for_one_token_cause_one_refresh() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1", "t2", "t3"], clock=clock)
    cache = cache_for(credential, clock)
    await cache.get_token()

    async def rejected_then_retry() -> str:
        cache.invalidate("t1")
        return await cache.get_token()

    assert set(await asyncio.gather(*(rejected_then_retry() for _ in range(1000)))) == {"t2"}
    assert credential.calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_refresh() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    credential = CountingCredential(["t1"], clock=clock, gate=gate)
    cache = cache_for(credential, clock)
    first = asyncio.create_task(cache.get_token())
    second = asyncio.create_task(cache.get_token())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == "t1"
    assert credential.calls == 1


async def test_close_cancels_a_refresh_in_flight() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    cache = cache_for(CountingCredential(clock=clock, gate=gate), clock)
    waiter = asyncio.create_task(cache.get_token())
    await asyncio.sleep(0)
    await cache.close()
    # The waiter was not cancelled: it gets a StoreError, never a CancelledError of its own.
    with pytest.raises(ValidationError, match="closed during the call"):
        await waiter
    assert not waiter.cancelled()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert tasks == []


async def test_short_lived_tokens_refresh_at_half_life() -> None:
    clock = FakeClock()
    credential = CountingCredential(["t1", "t2"], clock=clock, lifetime=110)
    cache = cache_for(credential, clock)
    await cache.get_token()  # usable for 100 s (10 s margin): refresh after 50 s
    clock.now += 49
    assert cache.fresh_token() == "t1"
    await asyncio.sleep(0)
    assert credential.calls == 1
    clock.now += 2
    assert cache.fresh_token() == "t1"
    await asyncio.sleep(0)
    assert cache.fresh_token() == "t2"


async def test_repr_never_shows_the_token() -> None:
    clock = FakeClock()
    cache = cache_for(CountingCredential(["secret-token-value"], clock=clock), clock)
    await cache.get_token()
    assert "secret-token-value" not in repr(cache)
    assert "cached" in repr(cache)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"refresh_margin": -1},
        {"refresh_jitter": float("inf")},
        {"failure_backoff": 0},
        {"expiry_margin": "10"},
    ],
)
def test_bad_options_raise_validation_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TokenCache(CountingCredential(), **kwargs)  # type: ignore[arg-type]


def test_a_non_credential_raises_validation_error() -> None:
    with pytest.raises(ValidationError, match="AsyncTokenCredential"):
        TokenCache("not a credential")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="scope"):
        TokenCache(CountingCredential(), scope=" ")


class HangingOnceCredential:
    """Its first token request never returns (a wedged identity endpoint); later ones work."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.never = asyncio.Event()

    async def get_token(self, *_scopes: str, **_kwargs: Any) -> AccessToken:
        self.calls += 1
        if self.calls == 1:
            await self.never.wait()
        return AccessToken("t2", int(self.clock()) + 3600)


async def test_a_hanging_credential_does_not_wedge_the_cache_forever() -> None:
    clock = FakeClock()
    credential = HangingOnceCredential(clock)
    cache = TokenCache(credential, clock=clock, refresh_timeout=0.01)
    with pytest.raises(AuthenticationError, match=r"\(TimeoutError\)"):
        await cache.get_token()
    assert await cache.get_token() == "t2"  # a new refresh, not the wedged one
    assert credential.calls == 2


@pytest.mark.parametrize("value", [0, -1, float("inf"), "60"])
def test_refresh_timeout_is_validated(value: object) -> None:
    with pytest.raises(ValidationError, match="refresh_timeout"):
        TokenCache(LegacyCredential(), refresh_timeout=value)  # type: ignore[arg-type]


async def test_a_cancelled_waiter_still_gets_cancelled_error() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    credential = CountingCredential(["t1"], clock=clock, gate=gate)
    cache = cache_for(credential, clock)
    waiter = asyncio.create_task(cache.get_token())
    await credential.entered.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await cache.close()


async def test_a_token_dropped_by_a_concurrent_401_is_still_handed_to_its_waiter() -> None:
    # A credential that keeps returning a token the service refuses (a wrong static token):
    # concurrent 401s drop each fetched token before the waiters look at it. The waiters must
    # still get that token - and so the service's own 401 - not "could not get a token".
    from store_async.credentials import StaticTokenCredential

    cache = TokenCache(StaticTokenCredential("refused-token"))
    waiter = asyncio.create_task(cache.get_token())
    await asyncio.sleep(0)  # the waiter starts the shared refresh and awaits it
    refresh = cache._task
    assert refresh is not None
    # Runs right after the refresh stores its token, before the waiter resumes: a 401 elsewhere.
    refresh.add_done_callback(lambda _task: cache.invalidate("refused-token"))

    assert await waiter == "refused-token"
    assert cache.fresh_token() is None  # it stays dropped: the next caller refreshes again
    assert cache.fetches == 1
