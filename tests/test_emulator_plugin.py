"""The pytest plugin: the ``store_emulator`` fixture, its marker, and sessions without
pytest-asyncio."""

from __future__ import annotations

import aiohttp
import pytest

from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.pytest_plugin import _emulator_options

pytest_plugins = ["pytester"]

TRACKING = "0f8fad5b-d9cb-469f-a165-70867728950e"


def consume_body(item_id: str) -> dict[str, object]:
    beneficiary = {"identityType": "b2b", "identityValue": "u", "localTicketReference": "r"}
    return {"beneficiary": beneficiary, "itemId": item_id, "trackingId": TRACKING}


async def test_the_fixture_yields_a_started_emulator(store_emulator: StoreEmulator) -> None:
    item = store_emulator.add_consumable("u", "P")
    body = consume_body(item.item_id)
    headers = {"Authorization": f"Bearer {store_emulator.dev_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{store_emulator.url}/v6.0/collections/consume", json=body, headers=headers
        ) as answer,
    ):
        assert answer.status == 204
    assert store_emulator.ledger.total == 1


@pytest.mark.store_emulator(
    faults=FaultPlan(script={"consume": [FaultKind.HTTP_503]}), auto_create=True
)
async def test_the_marker_configures_the_emulator(store_emulator: StoreEmulator) -> None:
    assert store_emulator.faults.script["consume"] == (FaultKind.HTTP_503,)
    body = consume_body("auto")
    headers = {"Authorization": f"Bearer {store_emulator.dev_token}"}
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(
                f"{store_emulator.url}/v6.0/collections/consume", json=body, headers=headers
            ) as answer:
                statuses.append(answer.status)
    assert statuses == [503, 204]


def test_sessions_without_pytest_asyncio_still_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain():
            assert True

        def test_wants_the_emulator(store_emulator):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the store_emulator fixture needs pytest-asyncio*"])


@pytest.mark.store_emulator(True)
def test_the_marker_takes_keyword_arguments_only(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.UsageError, match="keyword arguments only"):
        _emulator_options(request)
