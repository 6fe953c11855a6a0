"""The fault vocabulary beyond network faults: hang until released, a 401 for the access
token, Retry-After as an HTTP-date, raw and oversized answers, faults by idempotency key, the
request log, routes registered with the plans, and FaultPlan's argument checks."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from store_async.emulator import FaultKind, FaultPlan, RawAnswer, StoreEmulator
from store_async.emulator import service as service_module
from store_async.emulator.faults import known_endpoints, register_endpoint
from store_async.emulator.service import ROUTES, Route, StoreService
from store_async.errors import StoreError, ValidationError

T1 = "6b9c3e1a-2d4f-4e5a-9b8c-7d6e5f4a3b2c"
T2 = "0d4f7a2c-6b1e-4f3a-8c9d-7e6f5a4b3c2d"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def consume_body(item_id: str, tracking_id: str = T1) -> bytes:
    user = {"identityType": "b2b", "identityValue": "u", "localTicketReference": "r"}
    return orjson.dumps({"beneficiary": user, "itemId": item_id, "trackingId": tracking_id})


async def consume(
    session: aiohttp.ClientSession, emu: StoreEmulator, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(
        f"{emu.url}/v6.0/collections/consume",
        data=body,
        headers={"Authorization": f"Bearer {emu.dev_token}", "Content-Type": "application/json"},
    ) as response:
        return response.status, dict(response.headers), await response.read()


def consume_only(*steps: FaultKind | RawAnswer | None, **options: Any) -> FaultPlan:
    return FaultPlan(script={"consume": steps}, **options)


# -- FaultPlan's argument checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kinds": [FaultKind.HTTP_503]}, r"kinds must be a mapping .* dict\.fromkeys"),
        ({"kinds": {"bogus": 1.0}}, "'bogus' is not a FaultKind; use one of RESET_BEFORE_COMMIT"),
        ({"kinds": {FaultKind.HTTP_503: "1"}}, "the weight of HTTP_503 must be a number"),
        ({"rate": "0.5"}, "fault rate must be a number, got str"),
        ({"rate": True}, "fault rate must be a number, got bool"),
        ({"rate": float("nan")}, "fault rate must be finite"),
        ({"rates": [("consume", 0.1)]}, r"rates must be a mapping like \{\"consume\": 0.1\}"),
        ({"rates": {"consume": None}}, "fault rate for 'consume' must be a number"),
        ({"rates": {"checkout": 0.1}}, "unknown endpoint 'checkout' in fault rates; known: query"),
        ({"seed": "7"}, "seed must be an int or None"),
        ({"slow_seconds": -0.5}, "must be >= 0 seconds, got slow_seconds=-0.5"),
        ({"retry_after": float("inf")}, "retry_after must be finite"),
        ({"retry_after_date": "yes"}, "retry_after_date must be True or False"),
        ({"script": {"consume": FaultKind.HTTP_503}}, r"script\['consume'\] must be a list"),
        ({"script": {"consume": ["boom"]}}, "'boom' is not a FaultKind"),
        ({"by_key": {T1: "lose it"}}, r"by_key\['6b9c.*'lose it' is not a FaultKind"),
        ({"by_key": {7: FaultKind.HANG}}, "by_key keys must be idempotency keys"),
        ({"raw_answer": (200, {}, b"")}, "raw_answer must be a RawAnswer"),
        ({"kinds": {FaultKind.RAW_ANSWER: 1.0}}, "needs raw_answer=RawAnswer"),
        ({"script": {"query": [FaultKind.RAW_ANSWER]}}, "needs raw_answer=RawAnswer"),
        ({"oversize_bytes": 0}, "oversize_bytes must be an int > 0"),
    ],
)
def test_bad_plan_arguments_raise_validation_error_saying_what_to_fix(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        FaultPlan(**options)
    assert isinstance(raised.value, StoreError)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((700,), "status must be an int in 100..599"),
        ((200, {"X": 1}), "headers must be a mapping of str to str"),
        ((200, {}, "text"), r"body must be bytes, got str \(encode text"),
    ],
)
def test_bad_raw_answers_raise_validation_error(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RawAnswer(*arguments)


async def test_the_emulator_refuses_what_is_not_a_plan() -> None:
    with pytest.raises(ValidationError, match=r"faults must be a FaultPlan, e\.g\. FaultPlan"):
        StoreEmulator(faults={"rate": 0.1})  # type: ignore[arg-type]
    async with StoreEmulator() as emu:
        with pytest.raises(ValidationError, match="count must be an int >= 0"):
            await emu.wait_for_hanging(-1)


def test_kind_names_may_be_given_as_their_values() -> None:
    plan = FaultPlan(rate=1.0, kinds={"http_503": 2, FaultKind.HTTP_429: 1})
    assert dict(plan.kinds) == {FaultKind.HTTP_503: 2.0, FaultKind.HTTP_429: 1.0}
    assert FaultPlan.always(FaultKind.HANG).kinds == {FaultKind.HANG: 1.0}


# -- determinism: forced decisions still consume their draw ---------------------------------


def test_faults_by_key_never_shift_the_seeded_sequence() -> None:
    keyed = FaultPlan(rate=0.5, seed=9, by_key={T1: FaultKind.HANG}).sequence()
    plain = FaultPlan(rate=0.5, seed=9).sequence()
    keys = [T1 if n % 3 == 0 else T2 for n in range(60)]
    got = [keyed.decide("consume", key) for key in keys]
    expected = [plain.decide("consume", key) for key in keys]
    assert [g for g, k in zip(got, keys, strict=True) if k == T1] == [FaultKind.HANG] * 20
    assert [g for g, k in zip(got, keys, strict=True) if k == T2] == [
        e for e, k in zip(expected, keys, strict=True) if k == T2
    ]
    assert FaultKind.HANG not in expected  # HANG is never drawn unless asked for


# -- each new kind on the wire ---------------------------------------------------------------


async def test_hang_holds_requests_until_released_and_then_serves_them(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(faults=consume_only(FaultKind.HANG, FaultKind.HANG)) as emu:
        first = asyncio.create_task(consume(session, emu, consume_body("a", T1)))
        second = asyncio.create_task(consume(session, emu, consume_body("b", T2)))
        emu.add_consumable("u", "P", item_id="a")
        emu.add_consumable("u", "P", item_id="b")
        await emu.wait_for_hanging(2)
        assert emu.hanging == 2
        assert emu.ledger.total == 0  # held before the commit
        assert not first.done()
        assert emu.release_hanging() == 2
        assert [(await first)[0], (await second)[0]] == [204, 204]
        await emu.wait_released()
        assert emu.hanging == 0
        assert (emu.ledger.applied(T1), emu.ledger.applied(T2)) == (1, 1)
        assert emu.stats.faults_by_kind("consume") == {FaultKind.HANG: 2}


async def test_wait_for_requests_wakes_at_the_chosen_request_and_leaves_no_watch(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(auto_create=True) as emu:
        third = asyncio.create_task(emu.wait_for_requests(3))
        cancelled = asyncio.create_task(emu.wait_for_requests(10))
        for n in range(2):
            assert (await consume(session, emu, consume_body(f"i{n}", f"{T1[:-1]}{n}")))[0] == 204
        await asyncio.sleep(0)  # let the waiters run: two requests do not wake the first
        assert not third.done()
        assert (await consume(session, emu, consume_body("i2", f"{T1[:-1]}2")))[0] == 204
        await third  # woken by the third request itself
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert emu.stats._watches == []  # a cancelled waiter leaves nothing behind
        await emu.wait_for_requests(3)  # already reached: returns at once
        with pytest.raises(ValidationError, match="unknown endpoint 'consum'"):
            await emu.wait_for_requests(1, "consum")
        with pytest.raises(ValidationError, match="count must be an int >= 0, got -1"):
            await emu.wait_for_requests(-1)


async def test_requests_still_hanging_when_the_emulator_stops_are_released(
    session: aiohttp.ClientSession,
) -> None:
    emu = StoreEmulator(faults=FaultPlan.always(FaultKind.HANG), auto_create=True)
    await emu.start()
    call = asyncio.create_task(consume(session, emu, consume_body("a")))
    await emu.wait_for_hanging(1)
    await emu.stop()  # must not wait for a release that never comes
    assert (await call)[0] == 204  # released, then served during the graceful shutdown


async def test_http_401_refuses_a_valid_access_token_and_applies_nothing(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(faults=consume_only(FaultKind.HTTP_401)) as emu:
        emu.add_consumable("u", "P", item_id="a")
        status, headers, body = await consume(session, emu, consume_body("a"))
        assert status == 401
        error = orjson.loads(body)
        assert error["code"] == "Unauthorized"
        assert error["innererror"]["code"] == "AuthenticationTokenInvalid"
        assert "access token" in error["innererror"]["message"]
        assert "Retry-After" not in headers
        assert emu.ledger.applied(T1) == 0
        assert (await consume(session, emu, consume_body("a")))[0] == 204  # the same token


@pytest.mark.parametrize("kind", [FaultKind.HTTP_429, FaultKind.HTTP_503])
async def test_retry_after_as_an_http_date(session: aiohttp.ClientSession, kind: FaultKind) -> None:
    plan = consume_only(kind, retry_after=30, retry_after_date=True)
    async with StoreEmulator(faults=plan) as emu:
        before = time.time()
        _status, headers, _ = await consume(session, emu, consume_body("a"))
        after = time.time()
    value = headers["Retry-After"]
    assert value.endswith(" GMT")
    moment = email.utils.parsedate_to_datetime(value).timestamp()
    assert int(before + 30) <= moment <= after + 30  # whole seconds


async def test_a_raw_answer_is_sent_as_given_after_the_change_is_applied(
    session: aiohttp.ClientSession,
) -> None:
    teapot = RawAnswer(418, {"X-Test": "yes", "Content-Type": "text/plain"}, b"short and stout")
    async with StoreEmulator(faults=consume_only(teapot)) as emu:
        emu.add_consumable("u", "P", item_id="a")
        status, headers, body = await consume(session, emu, consume_body("a"))
        assert (status, headers["X-Test"], body) == (418, "yes", b"short and stout")
        assert emu.ledger.applied(T1) == 1
        assert emu.stats.faults_by_kind() == {FaultKind.RAW_ANSWER: 1}
        assert emu.stats.answers[("consume", 418)] == 1


async def test_an_oversized_answer_is_chunked_without_content_length(
    session: aiohttp.ClientSession,
) -> None:
    plan = consume_only(FaultKind.OVERSIZED, oversize_bytes=300_000)
    async with StoreEmulator(faults=plan) as emu:
        emu.add_consumable("u", "P", item_id="a")
        status, headers, body = await consume(session, emu, consume_body("a"))
        assert status == 200
        assert "Content-Length" not in headers
        assert headers["Transfer-Encoding"] == "chunked"
        assert body == b" " * 300_000
        assert emu.ledger.applied(T1) == 1


async def test_an_oversized_fault_leaves_error_answers_alone(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(faults=consume_only(FaultKind.OVERSIZED)) as emu:
        status, headers, _ = await consume(session, emu, consume_body("missing"))
    assert status == 404
    assert "Content-Length" in headers


async def test_a_fault_by_key_hits_every_request_with_that_key_only(
    session: aiohttp.ClientSession,
) -> None:
    plan = FaultPlan(by_key={T1.upper(): FaultKind.HTTP_503})  # any GUID spelling
    async with StoreEmulator(faults=plan, auto_create=True) as emu:
        statuses = [(await consume(session, emu, consume_body("a", T1)))[0] for _ in range(3)]
        other = (await consume(session, emu, consume_body("b", T2)))[0]
        assert statuses == [503, 503, 503]
        assert other == 204
        assert (emu.ledger.applied(T1), emu.ledger.applied(T2)) == (0, 1)


async def test_set_faults_takes_effect_on_the_next_request(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(faults=FaultPlan.always(FaultKind.HTTP_503), auto_create=True) as emu:
        assert (await consume(session, emu, consume_body("a")))[0] == 503
        emu.set_faults(FaultPlan.none())
        assert (await consume(session, emu, consume_body("a")))[0] == 204
        assert emu.faults == FaultPlan.none()
        with pytest.raises(ValidationError, match="set_faults needs a FaultPlan"):
            emu.set_faults({"rate": 1.0})  # type: ignore[arg-type]


# -- the request log -------------------------------------------------------------------------


async def test_the_request_log_keeps_each_request_its_key_and_its_answer(
    session: aiohttp.ClientSession,
) -> None:
    plan = consume_only(FaultKind.DROP_AFTER_COMMIT)
    async with StoreEmulator(faults=plan, auto_create=True, record_requests=True) as emu:
        body = consume_body("a", T1.upper())
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await consume(session, emu, body)
        assert (await consume(session, emu, body))[0] == 204
        await consume(session, emu, consume_body("b", T2))
        log = emu.request_log
        first, second, third = log
        assert (first.number, first.endpoint, first.method) == (1, "consume", "POST")
        assert first.path == "/v6.0/collections/consume"
        assert first.headers["authorization"] == f"Bearer {emu.dev_token}"  # any case
        assert first.bearer == emu.dev_token
        assert first.body == second.body == body
        assert (first.key, third.key) == (T1, T2)  # canonical GUIDs
        assert (first.status, second.status, third.status) == (0, 204, 204)  # 0: cut
        assert second.response_headers["MS-RequestId"]
        assert log.sends(T1) == log.sends(T1.upper()) == 2
        assert log.bodies(T1) == {body}
        assert log.sends_by_key == {T1: 2, T2: 1}
        assert log.idempotency_keys() == {T1, T2}
        assert [entry.number for entry in log.of("consume")] == [1, 2, 3]
        assert log.of("query") == []
        assert emu.dev_token not in repr(first) + repr(log)
        assert emu.ledger.replays(T1) == 1


async def test_the_request_log_is_kept_only_when_asked_for() -> None:
    async with StoreEmulator() as emu:
        with pytest.raises(RuntimeError, match="record_requests=True"):
            _ = emu.request_log


# -- routes are declared once and registered with the plans ----------------------------------


def test_every_route_names_a_registered_endpoint() -> None:
    assert {route.endpoint for route in ROUTES} <= set(known_endpoints())
    assert FaultPlan(rates={"token": 0.5}).rate_for("token") == 0.5
    assert FaultPlan(rate=1.0).rate_for("token") == 0.0  # not a Store endpoint
    with pytest.raises(ValidationError, match="already registered with another default"):
        register_endpoint("token")


async def _ping(service: StoreService, request: web.Request) -> web.StreamResponse:
    return web.json_response({"pong": True})


async def test_a_route_added_later_gets_a_fault_decision_per_request(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="unknown endpoint 'ping_test'"):
        FaultPlan(script={"ping_test": [FaultKind.HTTP_503]})
    route = Route("/v9.0/ping", "ping_test", _ping, "PingFD")  # one line registers it
    monkeypatch.setattr(service_module, "ROUTES", [*ROUTES, route])
    plan = FaultPlan(script={"ping_test": [FaultKind.HTTP_503, FaultKind.HTTP_401]})
    async with StoreEmulator(faults=plan, record_requests=True) as emu:
        statuses = []
        for _ in range(3):
            async with session.post(f"{emu.url}/v9.0/ping") as response:
                statuses.append(response.status)
                last = await response.json()
        assert statuses == [503, 401, 200]
        assert last == {"pong": True}
        assert emu.stats.requests["ping_test"] == 3
        assert [entry.endpoint for entry in emu.request_log] == ["ping_test"] * 3
    assert FaultPlan(rate=1.0).rate_for("ping_test") == 1.0  # a Store route by default
