"""A bad *user* key must not evict our access token (issue 15, item 1).

The Store answers ``401 AuthenticationTokenInvalid`` for a bad Store ID key as well as for a bad
access token (the emulator does the same), so a 401 alone does not prove our token is bad.
"""

from __future__ import annotations

import asyncio
import time

from store_async import (
    AuthenticationError,
    ConsumeRequest,
    StoreClient,
    UserIdentity,
)
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
        async with StoreClient(credential, endpoints=emu.endpoints, limit=64) as store:
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
