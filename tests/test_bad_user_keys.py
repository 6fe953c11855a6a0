"""A bad *user* key must not evict our access token (issue 15, item 1).

The Store answers ``401 AuthenticationTokenInvalid`` for a bad Store ID key as well as for a bad
access token (the emulator does the same), so a 401 alone does not prove our token is bad.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from store_async import (
    AuthenticationError,
    ConsumeRequest,
    StoreClient,
    UserIdentity,
)
from store_async._engine import TOKEN_DROP_INTERVAL
from store_async.emulator import FaultKind, FaultPlan
from tests.support.clock import FakeClock
from tests.support.credentials import GOOD_TOKEN, CountingCredential
from tests.support.emulator import emulator


async def test_bad_user_keys_among_good_rows_cause_at_most_two_token_requests() -> None:
    credential = CountingCredential([GOOD_TOKEN])
    async with emulator() as emu:
        expired = emu.mint_store_id_key("bad-user", issued_at=time.time() - 40 * 86400)
        good = UserIdentity(identity_value="good-user", local_ticket_reference="g")
        bad = UserIdentity(identity_value=expired, local_ticket_reference="b")
        requests = [
            ConsumeRequest.for_item(bad if number % 10 == 0 else good, f"item-{number}")
            for number in range(5_000)
        ]
        # The clock stands still: however long a loaded machine takes for 5,000 calls, they all
        # fall within one TOKEN_DROP_INTERVAL (what is tested is the judgement, not the interval).
        clock = FakeClock()
        async with StoreClient(
            credential, endpoints=emu.endpoints, limit=64, clock=clock, sleep=clock.sleep
        ) as store:
            outcomes = await asyncio.gather(
                *(store.consume(request) for request in requests), return_exceptions=True
            )
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(failures) == 500
    assert all(isinstance(failure, AuthenticationError) for failure in failures)
    assert all(failure.inner_code == "AuthenticationTokenInvalid" for failure in failures)  # type: ignore[union-attr]
    assert credential.calls <= 2
    assert emu.ledger.total == 4_500


async def test_a_rejected_access_token_is_still_dropped_and_refreshed_once() -> None:
    credential = CountingCredential(["stale-token", GOOD_TOKEN])
    async with emulator() as emu:
        user = UserIdentity(identity_value="good-user", local_ticket_reference="g")
        async with StoreClient(credential, endpoints=emu.endpoints) as store:
            result = await store.consume(ConsumeRequest.for_item(user, "item-1"))
    assert result.attempts == 2
    assert credential.calls == 2


async def test_after_the_drop_interval_a_401_may_drop_the_token_again() -> None:
    # 1st call: 401, token dropped, resent with a new one: ok. 2nd call, same instant: 401 and
    # nothing succeeded since it was sent, but a drop happened < TOKEN_DROP_INTERVAL ago: final.
    # 3rd call, the interval later: 401, dropped again, resent: ok.
    script = [FaultKind.HTTP_401, None, FaultKind.HTTP_401, FaultKind.HTTP_401, None]
    credential = CountingCredential([GOOD_TOKEN, GOOD_TOKEN, GOOD_TOKEN])
    clock = FakeClock()
    user = UserIdentity(identity_value="good-user", local_ticket_reference="g")
    async with (
        emulator(FaultPlan(script={"consume": script})) as emu,
        StoreClient(credential, endpoints=emu.endpoints, clock=clock, sleep=clock.sleep) as store,
    ):
        first = await store.consume(ConsumeRequest.for_item(user, "item-1"))
        with pytest.raises(AuthenticationError) as second:
            await store.consume(ConsumeRequest.for_item(user, "item-2"))
        clock.now += TOKEN_DROP_INTERVAL
        third = await store.consume(ConsumeRequest.for_item(user, "item-3"))
    assert (first.attempts, third.attempts) == (2, 2)
    assert second.value.about_access_token is False
    assert credential.calls == 3
    assert emu.ledger.total == 2
