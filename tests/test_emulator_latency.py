"""``StoreEmulator(latency=...)``: every Store answer waits a fixed time (a real round trip),
the control plane (``/_emulator/...``) does not. Checked by the sleeps asked for, not by a clock
(``asyncio.sleep`` is recorded for the test's duration)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from store_async import Endpoints, StaticTokenCredential, StoreClient
from store_async.emulator import StoreEmulator, server
from store_async.models import ConsumeRequest, UserIdentity

TOKEN = "test-token-latency"


@pytest.mark.parametrize("latency", [-0.1, float("nan"), 3600.0, "0.1"])
def test_a_latency_outside_0_to_3600_seconds_is_refused(latency: Any) -> None:
    with pytest.raises(ValueError, match=r"latency must be within 0\.\.3600 seconds"):
        StoreEmulator(latency=latency)


async def test_every_store_answer_waits_the_latency_but_the_control_plane_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        if seconds:  # asyncio.sleep(0) is a yield, used by aiohttp itself
            slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(server.asyncio, "sleep", recording_sleep)
    user = UserIdentity(identity_value="user-1", local_ticket_reference="r")
    async with (
        StoreEmulator(auto_create=True, dev_token=TOKEN, latency=0.25) as emulator,
        StoreClient(
            StaticTokenCredential(TOKEN), endpoints=Endpoints.single(emulator.url)
        ) as client,
    ):
        await client.consume(ConsumeRequest.for_item(user, "item-1"))
        await client.consume(ConsumeRequest.for_item(user, "item-2"))
        assert slept == [0.25, 0.25]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{emulator.url}/_emulator/health") as response,
        ):
            await response.read()
        assert slept == [0.25, 0.25]  # the control plane answers at once
        assert emulator.ledger.total == 2


async def test_no_latency_means_no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        if seconds:  # asyncio.sleep(0) is a yield, used by aiohttp itself
            slept.append(seconds)

    monkeypatch.setattr(server.asyncio, "sleep", recording_sleep)
    user = UserIdentity(identity_value="user-1", local_ticket_reference="r")
    async with (
        StoreEmulator(auto_create=True, dev_token=TOKEN) as emulator,
        StoreClient(
            StaticTokenCredential(TOKEN), endpoints=Endpoints.single(emulator.url)
        ) as client,
    ):
        await client.consume(ConsumeRequest.for_item(user, "item-1"))
    assert slept == []
