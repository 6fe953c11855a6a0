"""``examples/web_service.py`` under fire: 2,000 orders through the example app (real aiohttp.web
server, real sockets) against the emulator with injected faults, while callers hang up in the
middle of one order in five and send it again. Exactly once, and no false 409.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import aiohttp
import orjson
import pytest
from aiohttp import web

from store_async import (
    AuthenticationError,
    ClientHooks,
    ConflictError,
    FailureKind,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from store_async.emulator import FaultPlan, StoreEmulator
from store_async.models import guid_for_caller_key

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "web_service.py"
ORDERS = 2000
HANG_UP_EVERY = 5  # every fifth order's first request is abandoned mid-consume


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("web_service_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def order_body(n: int) -> bytes:
    user = f"user-{n % 50}"
    return orjson.dumps({"user": user, "storeIdKey": user, "itemId": f"gems-{n}"})


async def hang_up_mid_consume(port: int, n: int, started: asyncio.Event) -> None:
    """Send order ``n``, wait until the app's Store call is on the wire, then reset the
    connection, as a caller whose own timeout ran out (or who closed the tab) does."""
    body = order_body(n)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /orders/{n}/fulfill HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await started.wait()
    writer.transport.abort()
    del reader


async def test_2000_orders_with_faults_and_hang_ups_settle_exactly_once() -> None:
    example = load_example()
    plan = FaultPlan(rate=0.1, seed=20261203, retry_after=0.0, slow_seconds=0.02)
    started: defaultdict[str | None, asyncio.Event] = defaultdict(asyncio.Event)
    hooks = ClientHooks(on_attempt_start=lambda event: started[event.idempotency_key].set())
    cancelled = 0

    @web.middleware
    async def count_cancellations(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal cancelled
        try:
            return await handler(request)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    statuses: Counter[int] = Counter()
    async with StoreEmulator(faults=plan, auto_create=True) as emulator:
        app = example.create_app(
            endpoint=emulator.url,
            credential=emulator.credential(),
            client_options={"hooks": hooks},
        )
        app.middlewares.append(count_cancellations)
        # Like frameworks that cancel a handler whose caller hung up (aiohttp's own default is
        # to let it finish): the harder case, a consume abandoned mid-flight.
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            gate = asyncio.Semaphore(64)
            async with aiohttp.ClientSession() as session:

                async def order(n: int) -> None:
                    async with gate:
                        if n % HANG_UP_EVERY == 0:
                            tracking_id = guid_for_caller_key(f"order-{n}")
                            await hang_up_mid_consume(port, n, started[tracking_id])
                        while True:  # the caller sends the same order until it is settled
                            async with session.post(
                                f"http://127.0.0.1:{port}/orders/{n}/fulfill",
                                data=order_body(n),
                            ) as answer:
                                statuses[answer.status] += 1
                                if answer.status != 503:
                                    assert answer.status == 200, await answer.text()
                                    document = await answer.json()
                                    assert document["trackingId"] == guid_for_caller_key(
                                        f"order-{n}"
                                    )
                                    return

                await asyncio.gather(*(order(n) for n in range(ORDERS)))
        finally:
            await runner.cleanup()
        ledger = emulator.ledger
        faults = sum(emulator.stats.faults.values())
        expected = {guid_for_caller_key(f"order-{n}") for n in range(ORDERS)}
        assert ledger.keys("consume") == expected
        assert ledger.duplicates() == {}
        assert ledger.total == ORDERS
    assert statuses[200] == ORDERS
    assert set(statuses) <= {200, 503}  # no 409: no conflict, false or otherwise
    assert faults > 100  # the faults really happened (10 % of well over 2,000 requests)
    assert cancelled > 0  # and some callers really hung up while their consume was in flight


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"user": "u"}', 400),
        (b'{"user": "u", "storeIdKey": "", "itemId": "i"}', 400),
    ],
)
async def test_bad_requests_get_400_without_calling_the_store(body: bytes, status: int) -> None:
    example = load_example()
    async with StoreEmulator(auto_create=True) as emulator:
        app = example.create_app(endpoint=emulator.url, credential=emulator.credential())
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}/orders/1/fulfill", data=body) as answer,
            ):
                assert answer.status == status
                assert "error" in await answer.json()
        finally:
            await runner.cleanup()
        assert sum(emulator.stats.requests.values()) == 0


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (OutcomeUnknownError("x", idempotency_key="k", attempts=3), 503, "1"),
        (ThrottledError("x", status=429, retry_after=7.0), 503, "7"),
        (ServiceUnavailableError("x", status=503), 503, "1"),
        (TransportError("x", kind=FailureKind.MAYBE_APPLIED), 503, "1"),
        (AuthenticationError("x", status=401, inner_code="AuthenticationTokenInvalid"), 401, None),
        (AuthenticationError("x", status=401, inner_code="InconsistentClientId"), 401, None),
        (AuthenticationError("x", status=401, inner_code="PartnerAadTicketRequired"), 500, None),
        (InvalidRequestError("x", status=400), 400, None),
        (ValidationError("x"), 400, None),
        (NotFoundError("x", status=404), 404, None),
        (ConflictError("x", status=409), 409, None),
    ],
)
def test_each_error_has_one_answer(error: StoreError, status: int, retry_after: str | None) -> None:
    answer = load_example().answer_for(error)
    assert answer.status == status
    assert answer.headers.get("Retry-After") == retry_after
    assert orjson.loads(answer.body)["error"]
