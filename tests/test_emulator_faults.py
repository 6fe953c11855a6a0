"""FaultPlan: validation, seeded determinism, and what each fault kind does on the wire."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.emulator.faults import DEFAULT_KINDS, ENDPOINTS

TRACKING = "6b9c3e1a-2d4f-4e5a-9b8c-7d6e5f4a3b2c"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def consume_body(user: str, item_id: str, tracking_id: str = TRACKING) -> dict[str, Any]:
    return {
        "beneficiary": {"identityType": "b2b", "identityValue": user, "localTicketReference": "r"},
        "itemId": item_id,
        "trackingId": tracking_id,
    }


async def consume(
    session: aiohttp.ClientSession, emu: StoreEmulator, body: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(
        f"{emu.url}/v6.0/collections/consume",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {emu.dev_token}", "Content-Type": "application/json"},
    ) as response:
        return response.status, dict(response.headers), await response.read()


# -- the plan and its decision sequence ------------------------------------------------------


def decisions(plan: FaultPlan, count: int = 2000) -> list[FaultKind | None]:
    sequence = plan.sequence()
    return [sequence.decide(ENDPOINTS[n % 5]) for n in range(count)]


def test_same_seed_gives_the_same_decisions_and_another_seed_does_not() -> None:
    first = decisions(FaultPlan(rate=0.3, seed=11))
    assert first == decisions(FaultPlan(rate=0.3, seed=11))
    assert first != decisions(FaultPlan(rate=0.3, seed=12))


def test_rate_and_kinds_shape_the_decisions() -> None:
    drawn = Counter(decisions(FaultPlan(rate=0.25, seed=3), count=12_000))
    faulted = 12_000 - drawn[None]
    assert 2_700 <= faulted <= 3_300  # 25 % of 12,000, seeded so the count is fixed
    assert set(drawn) == {None, *DEFAULT_KINDS}  # every default kind occurs
    assert all(400 <= drawn[kind] <= 600 for kind in DEFAULT_KINDS)  # equal weights
    assert decisions(FaultPlan(rate=0.0, seed=3)) == [None] * 2000
    assert set(decisions(FaultPlan(rate=1.0, seed=3))) == set(DEFAULT_KINDS)
    only_503 = FaultPlan(rate=1.0, seed=3, kinds={FaultKind.HTTP_503: 1.0})
    assert set(decisions(only_503)) == {FaultKind.HTTP_503}


def test_per_endpoint_rates_and_the_token_endpoint_is_spared_by_default() -> None:
    plan = FaultPlan(rate=1.0, rates={"query": 0.0}, seed=5)
    sequence = plan.sequence()
    assert [sequence.decide("query") for _ in range(50)] == [None] * 50
    assert [sequence.decide("token") for _ in range(50)] == [None] * 50
    assert None not in [sequence.decide("consume") for _ in range(50)]
    assert plan.rate_for("token") == 0.0
    assert FaultPlan(rates={"token": 0.5}).rate_for("token") == 0.5


def test_a_script_forces_first_decisions_without_shifting_the_seeded_sequence() -> None:
    script = [FaultKind.DROP_AFTER_COMMIT, None, FaultKind.HTTP_429]
    scripted = FaultPlan(rate=0.5, seed=9, script={"consume": script}).sequence()
    plain = FaultPlan(rate=0.5, seed=9).sequence()
    got = [scripted.decide("consume") for _ in range(40)]
    expected = [plain.decide("consume") for _ in range(40)]
    assert got[:3] == script
    assert got[3:] == expected[3:]


def test_a_random_seed_is_chosen_and_exposed_when_none_is_given() -> None:
    sequence = FaultPlan(rate=0.5).sequence()
    replay = FaultPlan(rate=0.5, seed=sequence.seed).sequence()
    assert [sequence.decide("consume") for _ in range(100)] == [
        replay.decide("consume") for _ in range(100)
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 1.5}, "fault rate must be within"),
        ({"rate": -0.1}, "fault rate must be within"),
        ({"rates": {"consume": 2.0}}, "fault rate for 'consume'"),
        ({"rates": {"checkout": 0.1}}, "unknown endpoint 'checkout'"),
        ({"kinds": {FaultKind.HTTP_500: -1.0}}, "weights must be >= 0"),
        ({"kinds": {FaultKind.HTTP_500: 0.0}}, "at least one > 0"),
        ({"retry_after": -1.0}, "retry_after and slow_seconds"),
        ({"script": {"nope": [None]}}, "unknown endpoint 'nope' in fault script"),
    ],
)
def test_invalid_plans_are_refused_with_a_clear_message(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan(**options)


# -- the emulator applies the decisions in arrival order -----------------------------------


async def fault_log_of(
    seed: int, session: aiohttp.ClientSession
) -> list[tuple[int, str, FaultKind]]:
    plan = FaultPlan(rate=0.4, seed=seed, slow_seconds=0.0)
    async with StoreEmulator(faults=plan) as emu:
        for n in range(60):
            item = emu.add_consumable("user", "P")
            tracking = f"00000000-0000-4000-8000-{n:012d}"
            # A reset or a dropped answer is part of the plan.
            with contextlib.suppress(aiohttp.ClientConnectionError):
                await consume(session, emu, consume_body("user", item.item_id, tracking))
        assert sum(emu.stats.faults.values()) == len(emu.stats.fault_log)
        return list(emu.stats.fault_log)


async def test_same_seed_gives_the_same_faults_on_the_wire(session: aiohttp.ClientSession) -> None:
    first = await fault_log_of(21, session)
    assert len(first) >= 10
    assert first == await fault_log_of(21, session)
    assert first != await fault_log_of(22, session)


@pytest.mark.parametrize(
    ("kind", "status", "applied"),
    [
        (FaultKind.RESET_BEFORE_COMMIT, None, 0),
        (FaultKind.DROP_AFTER_COMMIT, None, 1),
        (FaultKind.HTTP_500, 500, 1),
        (FaultKind.HTTP_503, 503, 0),
        (FaultKind.HTTP_429, 429, 0),
        (FaultKind.SLOW, 204, 1),
    ],
)
async def test_each_fault_kind_on_the_wire_and_a_resend_settles_it(
    session: aiohttp.ClientSession, kind: FaultKind, status: int | None, applied: int
) -> None:
    plan = FaultPlan(script={"consume": [kind]}, retry_after=1.0, slow_seconds=0.001)
    async with StoreEmulator(faults=plan) as emu:
        item = emu.add_consumable("user", "P")
        body = consume_body("user", item.item_id)
        if status is None:
            expected = (
                aiohttp.ClientOSError
                if kind is FaultKind.RESET_BEFORE_COMMIT
                else aiohttp.ServerDisconnectedError
            )
            with pytest.raises(expected):
                await consume(session, emu, body)
        else:
            got_status, headers, payload = await consume(session, emu, body)
            assert got_status == status
            if status in (429, 503):
                assert headers["Retry-After"] == "1"
            if status >= 400:
                error = orjson.loads(payload)
                assert (
                    error["innererror"]["code"]
                    == {
                        500: "InternalServerError",
                        503: "ServiceUnavailable",
                        429: "RateLimitExceeded",
                    }[status]
                )
                assert headers["MS-RequestId"]
        assert emu.ledger.applied(TRACKING) == applied
        assert item.consumed is bool(applied)
        assert emu.stats.faults == Counter({("consume", kind): 1})
        # The same request again (same tracking id) settles it, applied exactly once.
        assert (await consume(session, emu, body))[0] == 204
        assert emu.ledger.applied(TRACKING) == 1
        assert item.consumed


async def test_retry_after_may_be_fractional(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_429]}, retry_after=0.5)
    async with StoreEmulator(faults=plan) as emu:
        status, headers, _ = await consume(session, emu, consume_body("u", "i"))
    assert (status, headers["Retry-After"]) == (429, "0.5")


async def test_faults_are_counted_by_endpoint_and_kind(session: aiohttp.ClientSession) -> None:
    script = [FaultKind.HTTP_503, FaultKind.HTTP_503, FaultKind.HTTP_500, None]
    async with StoreEmulator(faults=FaultPlan(script={"consume": script})) as emu:
        item = emu.add_consumable("u", "P")
        statuses = [
            (await consume(session, emu, consume_body("u", item.item_id)))[0] for _ in script
        ]
        assert statuses == [503, 503, 500, 204]
        assert emu.stats.faults_by_kind("consume") == Counter(
            {FaultKind.HTTP_503: 2, FaultKind.HTTP_500: 1}
        )
        assert emu.stats.faults_by_kind("query") == Counter()
        assert emu.stats.requests["consume"] == 4
        assert emu.stats.answers == Counter(
            {("consume", 503): 2, ("consume", 500): 1, ("consume", 204): 1}
        )
        assert [entry[2] for entry in emu.stats.fault_log] == script[:3]
