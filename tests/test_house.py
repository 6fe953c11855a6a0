"""The house: the transport seam, MockTransport, light imports, the route table, deprecations."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from store_async import (
    ConsumeRequest,
    Endpoints,
    FailureKind,
    MockRequest,
    MockResponse,
    MockTransport,
    OutcomeUnknownError,
    QueryRequest,
    RetryPolicy,
    StaticTokenCredential,
    StoreClient,
    ThrottledError,
    TransportError,
    UserIdentity,
    ValidationError,
)
from store_async._operations import ROUTES, Route

USER = UserIdentity(identity_value="user-key", local_ticket_reference="ref-1")
TRACKING_ID = "3eea1529-611e-4aee-915c-345494e4ee76"


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def client(transport: MockTransport, **options: object) -> StoreClient:
    return StoreClient(
        StaticTokenCredential("the-token"),
        endpoints=Endpoints.single("https://store.example"),
        transport=transport,
        sleep=no_sleep,
        **options,  # type: ignore[arg-type]
    )


async def test_mock_transport_sees_the_exact_wire_request() -> None:
    transport = MockTransport(lambda request: MockResponse(204))
    async with client(transport) as store:
        result = await store.consume(ConsumeRequest.for_item(USER, "item-1", TRACKING_ID))
    [request] = transport.requests
    assert (request.method, str(request.url)) == (
        "POST",
        "https://store.example/v6.0/collections/consume",
    )
    assert request.headers["Authorization"] == "Bearer the-token"
    assert request.json() == {
        "beneficiary": {
            "localTicketReference": "ref-1",
            "identityValue": "user-key",
            "identityType": "b2b",
        },
        "itemId": "item-1",
        "trackingId": TRACKING_ID,
    }
    assert (result.tracking_id, result.attempts) == (TRACKING_ID, 1)
    assert "user-key" not in repr(request)
    assert "the-token" not in repr(request)


async def test_mock_transport_answers_become_typed_errors_and_retries() -> None:
    answers = [
        MockResponse(429, headers={"Retry-After": "0"}),
        MockResponse(503, json={"code": "ServiceUnavailable"}),
        MockResponse(204, headers={"MS-CorrelationId": "corr-3"}),
    ]

    async def handler(_request: MockRequest) -> MockResponse:  # async handlers work too
        return answers.pop(0)

    transport = MockTransport(handler)
    async with client(transport) as store:
        result = await store.consume(ConsumeRequest.for_item(USER, "item-1", TRACKING_ID))
    assert (result.attempts, result.correlation_id) == (3, "corr-3")
    bodies = {request.body for request in transport.requests}
    assert len(bodies) == 1  # byte-identical body on every attempt


async def test_mock_transport_network_failures_and_outcome_unknown() -> None:
    def handler(_request: MockRequest) -> MockResponse:
        raise TransportError("reset", kind=FailureKind.MAYBE_APPLIED)

    async with client(MockTransport(handler), retry=RetryPolicy(attempts=3)) as store:
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(ConsumeRequest.for_item(USER, "item-1", TRACKING_ID))
    assert raised.value.idempotency_key == raised.value.tracking_id == TRACKING_ID
    assert raised.value.attempts == 3
    assert "3 attempts" in str(raised.value)


async def test_mock_transport_throttling_beyond_the_timeout_ends_at_once() -> None:
    transport = MockTransport(lambda _request: MockResponse(429, headers={"Retry-After": "60"}))
    async with client(transport) as store:
        with pytest.raises(ThrottledError) as raised:
            await store.consume(ConsumeRequest.for_item(USER, "item-1"), timeout=10)
    assert raised.value.retry_after == 60.0
    assert len(transport.requests) == 1  # never resent before the server asked


async def test_mock_transport_refuses_a_handler_that_returns_something_else() -> None:
    transport = MockTransport(lambda _request: {"status": 204})  # type: ignore[arg-type,return-value]
    async with client(transport, retry=RetryPolicy(attempts=1)) as store:
        with pytest.raises(ValidationError, match="must return a MockResponse"):
            await store.consume(ConsumeRequest.for_item(USER, "item-1"))
    with pytest.raises(ValidationError):
        MockTransport("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MockResponse(200, body=b"x", json={"a": 1})


async def test_a_transport_without_send_is_refused() -> None:
    with pytest.raises(ValidationError, match="send"):
        StoreClient(StaticTokenCredential("t"), transport=object())  # type: ignore[arg-type]


async def test_list_products_pages_and_resumes() -> None:
    pages = {
        None: {"items": [], "continuationToken": "p2"},
        "p2": {"items": [], "continuationToken": "p3"},
        "p3": {"items": []},
    }
    seen: list[str | None] = []

    def handler(request: MockRequest) -> MockResponse:
        token = request.json().get("continuationToken")
        seen.append(token)
        return MockResponse(200, json=pages[token])

    query = QueryRequest(beneficiaries=[USER], product_types=["Durable"])
    async with client(MockTransport(handler)) as store:
        assert [item async for item in store.list_products(query)] == []
        resumed = [
            page.continuation_token async for page in store.list_products(query).by_page("p2")
        ]
    assert seen == [None, "p2", "p3", "p2", "p3"]
    assert resumed == ["p3", None]


async def test_deadline_is_the_deprecated_name_of_the_per_call_timeout() -> None:
    transport = MockTransport(lambda request: MockResponse(204))
    async with client(transport) as store:
        with pytest.warns(DeprecationWarning, match="use 'timeout'"):
            await store.consume(ConsumeRequest.for_item(USER, "item-1"), deadline=5.0)
        with pytest.warns(DeprecationWarning, match="deprecated"), pytest.raises(ValidationError):
            await store.consume(ConsumeRequest.for_item(USER, "i"), deadline=5.0, timeout=5.0)
    assert transport.requests[0].time_left == pytest.approx(5.0, abs=0.5)


def test_every_route_is_data_and_binds_to_its_host() -> None:
    endpoints = Endpoints(
        collections="https://c.example", purchase="https://p.example", business="https://b.example"
    )
    for route in ROUTES:
        assert isinstance(route, Route)
        if "{" not in route.path:
            bound = route.bind(endpoints)
            assert str(bound.url).startswith(f"https://{route.host[0]}.example/")
            assert (bound.name, bound.key_name, bound.repeatable) == (
                route.name,
                route.key_name,
                route.repeatable,
            )
    # an operation without an idempotency key is never repeated after maybe-applied
    assert all(route.repeatable for route in ROUTES if route.key_name is not None)


def _modules_after(code: str) -> set[str]:
    probe = (
        f"{code}\nimport sys, json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'azure', 'cattrs', 'tenacity', 'jwt', 'tqdm', 'opentelemetry', "
        "'prometheus_client'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return set(orjson.loads(output))


def test_light_imports_load_no_network_or_codec_library() -> None:
    assert _modules_after("import store_async") == set()
    assert _modules_after("import store_async.models, store_async.errors") == set()
    assert _modules_after("import store_async.cli") == set()
    assert _modules_after("from store_async import ConsumeRequest, StoreIdKey") == set()
    assert "aiohttp" in _modules_after("from store_async import StoreClient")
    # The adapters' libraries load only when their factory is called.
    assert _modules_after("import store_async.instrumentation") == set()
    assert "opentelemetry.trace" in _modules_after(
        "import store_async.instrumentation as i; i.opentelemetry()"
    )
    assert "prometheus_client" in _modules_after(
        "import store_async.instrumentation as i; i.prometheus()"
    )


def test_every_module_imports_first_without_a_cycle() -> None:
    """Importing any module first (before the package's other modules) must work: a cycle
    shows up as an ImportError for whichever module happens to be imported first."""
    import pkgutil

    import store_async

    names = [
        info.name
        for info in pkgutil.walk_packages(store_async.__path__, "store_async.")
        if ".emulator" not in info.name and "pytest_plugin" not in info.name
    ]
    script = "import importlib, sys\n" + "".join(
        f"importlib.import_module({name!r}); [sys.modules.pop(m) for m in list(sys.modules) "
        "if m.startswith('store_async')]\n"
        for name in names
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
