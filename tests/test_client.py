"""StoreClient operations, lifecycle and input validation against the fake Store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import orjson
import pytest
from azure.core.credentials import AccessToken
from multidict import CIMultiDict, CIMultiDictProxy

from store_async import RetryPolicy, StoreClient, TokenCache
from store_async._operations import ROUTES
from store_async._transport import AiohttpTransport
from store_async.credentials import StaticTokenCredential
from store_async.emulator import FaultKind, FaultPlan, RawAnswer, StoreEmulator
from store_async.endpoints import Endpoints
from store_async.errors import (
    FailureKind,
    InvalidStoreIdKeyError,
    OutcomeUnknownError,
    ResponseFormatError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
)
from store_async.models import (
    ConsumeRequest,
    GrantRequest,
    QueryRequest,
    UserIdentity,
)
from store_async.store_id_key import StoreIdKey, StoreIdKeyKind
from tests.support.credentials import GOOD_TOKEN, CountingCredential
from tests.support.emulator import client_for, emulator


def collection_item(number: int) -> dict[str, Any]:
    """A CollectionItemContractV6 as the documentation shows it."""
    return {
        "itemId": f"{number:032x}",
        "productId": "9NBLGGH4TNMP",
        "skuId": "0010",
        "productType": "UnmanagedConsumable",
        "skuType": "Full",
        "status": "Active",
        "ownershipType": "OwnedByBeneficiary",
        "localTicketReference": "ref-1",
        "transactionId": "f9ad7ba3-9a86-41a5-8fa6-6e1d3b0da5b4",
        "acquiredDate": "2024-01-01T00:00:00.0000000+00:00",
        "startDate": "2024-01-01T00:00:00.0000000+00:00",
        "endDate": "9999-12-31T23:59:59.9999999+00:00",
        "modifiedDate": "2024-01-01T00:00:00.0000000+00:00",
    }


def page(document: dict[str, Any]) -> RawAnswer:
    return RawAnswer(200, {"Content-Type": "application/json"}, orjson.dumps(document))


def grant_request(emu: StoreEmulator) -> GrantRequest:
    return GrantRequest(
        availability_id="9RR45VN0RWHD",
        b2b_key=emu.mint_store_id_key("user-1", "purchase"),
        language="en-us",
        market="us",
        product_id="9NBLGGH4TNMP",
        sku_id="0010",
    )


async def test_consume_sends_the_documented_request_and_returns_the_service_headers(
    emu: StoreEmulator, beneficiary: UserIdentity
) -> None:
    request = ConsumeRequest.for_item(beneficiary, "item-1")
    async with client_for(emu) as store:
        result = await store.consume(request)
    assert result.tracking_id == request.tracking_id
    assert result.transaction_id is None
    assert result.attempts == 1
    (received,) = emu.request_log
    answer = received.response_headers
    assert result.correlation_id == answer["MS-CorrelationId"]
    assert (result.request_id, result.cv) == (answer["MS-RequestId"], answer["MS-CV"])
    assert received.path == "/v6.0/collections/consume"
    assert received.headers["Authorization"] == f"Bearer {GOOD_TOKEN}"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"].startswith("store-async/")
    assert orjson.loads(received.body) == {
        "beneficiary": {
            "identityType": "b2b",
            "identityValue": beneficiary.identity_value,
            "localTicketReference": "ref-1",
        },
        "itemId": "item-1",
        "trackingId": request.tracking_id,
    }
    assert emu.ledger.applied(request.idempotency_key) == 1


async def test_consume_by_transaction(emu: StoreEmulator, beneficiary: UserIdentity) -> None:
    transaction = "f9ad7ba3-9a86-41a5-8fa6-6e1d3b0da5b4"
    request = ConsumeRequest.for_transaction(beneficiary, "9NBLGGH4TNMP", transaction)
    async with client_for(emu) as store:
        result = await store.consume(request)
    assert (result.tracking_id, result.transaction_id) == (None, transaction)
    assert orjson.loads(emu.request_log[0].body)["transactionId"] == transaction
    assert emu.ledger.applied(transaction) == 1


async def test_query_products_and_iter_products_follow_continuation_tokens(
    beneficiary: UserIdentity,
) -> None:
    first = page({"items": [collection_item(1), collection_item(2)], "continuationToken": "page-1"})
    pages = [
        first,
        first,
        page({"items": [collection_item(3)], "continuationToken": "page-2"}),
        page({"items": [], "continuationToken": "page-3"}),
        page({"items": [collection_item(4)]}),
    ]
    request = QueryRequest(beneficiaries=[beneficiary], product_types=["UnmanagedConsumable"])
    async with emulator(FaultPlan(script={"query": pages})) as emu, client_for(emu) as store:
        first_page = await store.query_products(request)
        items = [item async for item in store.iter_products(request)]
    assert first_page.continuation_token == "page-1"
    assert [item.item_id for item in first_page.items] == [f"{1:032x}", f"{2:032x}"]
    assert [item.item_id for item in items] == [f"{n:032x}" for n in (1, 2, 3, 4)]
    sent = [orjson.loads(r.body).get("continuationToken") for r in emu.request_log[1:]]
    assert sent == [None, "page-1", "page-2", "page-3"]


async def test_iter_products_stops_on_a_repeated_continuation_token(
    beneficiary: UserIdentity,
) -> None:
    request = QueryRequest(beneficiaries=[beneficiary], product_types=["Durable"])
    again = page({"items": [], "continuationToken": "again"})
    plan = FaultPlan.always(FaultKind.RAW_ANSWER, raw_answer=again)
    async with emulator(plan) as emu, client_for(emu) as store:
        with pytest.raises(ResponseFormatError, match="repeated a continuation token"):
            async for _ in store.iter_products(request):
                pass
    assert len(emu.request_log) == 2


async def test_grant_free_product_resends_the_same_order_id_after_a_lost_answer(
    beneficiary: UserIdentity,
) -> None:
    plan = FaultPlan(script={"grant": [FaultKind.DROP_AFTER_COMMIT]})
    async with emulator(plan) as fake, client_for(fake) as store:
        request = grant_request(fake)
        order = await store.grant_free_product(request)
    assert order.order_id == request.order_id
    assert order.order_state == "Purchased"
    assert fake.ledger.applied(request.order_id) == 1
    assert fake.ledger.replays(request.order_id) == 1
    assert len(fake.request_log.bodies(request.order_id)) == 1


async def test_get_offline_license_quotes_path_parts(emu: StoreEmulator) -> None:
    async with client_for(emu) as store:
        license_ = await store.get_offline_license("9NBLG H4/TNMP", "0010", "c?ontent")
    assert license_.product_key.product_id == "9NBLG H4/TNMP"
    assert license_.content_id == "c?ontent"
    (received,) = emu.request_log
    assert received.body == b""
    assert received.headers["Authorization"] == f"Bearer {GOOD_TOKEN}"


@pytest.mark.parametrize("kind", ["collections", "purchase"])
async def test_renew_posts_the_token_in_the_body_to_the_keys_family(
    emu: StoreEmulator, kind: Literal["collections", "purchase"]
) -> None:
    old = emu.mint_store_id_key("user-1", kind)
    async with client_for(emu) as store:
        renewed = await store.renew_store_id_key(old)
    assert isinstance(renewed, StoreIdKey)
    assert renewed.value != old
    (received,) = emu.request_log
    assert received.path == "/v6.0/b2b/keys/renew"
    assert "Authorization" not in received.headers
    assert orjson.loads(received.body) == {"serviceTicket": GOOD_TOKEN, "key": old}
    assert StoreIdKey.parse(old).kind is StoreIdKeyKind(kind)


async def test_renew_goes_to_the_configured_family_never_to_the_keys_refresh_uri(
    emu: StoreEmulator,
) -> None:
    async with emulator() as purchase_host:
        endpoints = Endpoints(collections=emu.url, purchase=purchase_host.url, business=emu.url)
        # Each key is valid only on the emulator that minted it (a wrong host answers 401).
        purchase_key = purchase_host.mint_store_id_key("user-1", "purchase")
        collections_key = emu.mint_store_id_key("user-1", "collections")
        async with StoreClient(StaticTokenCredential(GOOD_TOKEN), endpoints=endpoints) as store:
            await store.renew_store_id_key(purchase_key)
            await store.renew_store_id_key(StoreIdKey.parse(collections_key))
        assert len(purchase_host.request_log) == 1
    assert len(emu.request_log) == 1


async def test_a_malformed_renewed_key_is_a_response_format_error() -> None:
    answer = RawAnswer(200, {}, orjson.dumps({"key": "not-a-jwt"}))
    plan = FaultPlan.always(FaultKind.RAW_ANSWER, raw_answer=answer)
    async with emulator(plan) as emu, client_for(emu) as store:
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.renew_store_id_key(emu.mint_store_id_key("user-1"))
    # Renewal is never repeated after a 2xx it could not read: its outcome is unknown.
    assert isinstance(raised.value.last_error, ResponseFormatError)
    assert "not-a-jwt" not in str(raised.value)


async def test_a_response_over_max_response_bytes_is_refused_and_not_retried(
    beneficiary: UserIdentity,
) -> None:
    # Streamed, chunked: no Content-Length to check.
    plan = FaultPlan.always(FaultKind.OVERSIZED, oversize_bytes=20 * 1024 * 1024)
    request = QueryRequest(beneficiaries=[beneficiary], product_types=["Durable"])
    async with (
        emulator(plan) as emu,
        client_for(emu, max_response_bytes=1024 * 1024) as store,
    ):
        with pytest.raises(ResponseTooLargeError):
            await store.query_products(request)
    assert len(emu.request_log) == 1


async def test_client_does_not_close_what_it_did_not_create(emu: StoreEmulator) -> None:
    credential = CountingCredential()
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    credential.close = close  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as session:
        async with StoreClient(credential, endpoints=emu.endpoints, session=session):
            pass
        assert not session.closed
    assert closed == []


async def test_client_closes_its_own_session() -> None:
    store = StoreClient(StaticTokenCredential("t"))
    async with store:
        session = store._session  # the session it created
        assert session is not None
    assert session.closed
    assert "closed" in repr(store)


async def test_a_shared_token_cache_serves_two_clients(emu: StoreEmulator) -> None:
    credential = CountingCredential()
    cache = TokenCache(credential)
    async with (
        StoreClient(cache, endpoints=emu.endpoints) as first,
        StoreClient(cache, endpoints=emu.endpoints) as second,
    ):
        await first.get_offline_license("p", "s", "c")
        await second.get_offline_license("p", "s", "c")
        assert first.token_cache is second.token_cache
    assert credential.calls == 1


async def test_using_the_client_outside_async_with_is_a_validation_error(
    beneficiary: UserIdentity,
) -> None:
    store = StoreClient(StaticTokenCredential("t"))
    with pytest.raises(ValidationError, match="not open"):
        await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    async with store:
        with pytest.raises(ValidationError, match="already open"):
            await store.__aenter__()
    with pytest.raises(ValidationError, match="not open"):
        await store.get_offline_license("p", "s", "c")


BadCall = Callable[[StoreClient], object]


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda s: s.consume("not a request"),
        lambda s: s.consume(ConsumeRequest.for_item(_user(), "i"), timeout=0),
        lambda s: s.consume(ConsumeRequest.for_item(_user(), "i"), timeout=float("inf")),
        lambda s: s.consume(ConsumeRequest.for_item(_user(), "i"), attempts=0),
        lambda s: s.consume(ConsumeRequest.for_item(_user(), "i"), attempts="3"),
        lambda s: s.query_products({"beneficiaries": []}),
        lambda s: s.grant_free_product(None),
        lambda s: s.get_offline_license("", "0010", "c"),
        lambda s: s.get_offline_license("p", None, "c"),
        lambda s: s.renew_store_id_key(42),
    ],
)
async def test_bad_input_raises_validation_error_and_sends_nothing(
    emu: StoreEmulator, bad_call: BadCall
) -> None:
    async with client_for(emu) as store:
        with pytest.raises(ValidationError):
            await bad_call(store)  # type: ignore[misc]
    assert len(emu.request_log) == 0


async def test_a_malformed_key_to_renew_is_refused_without_sending(emu: StoreEmulator) -> None:
    async with client_for(emu) as store:
        with pytest.raises(InvalidStoreIdKeyError):
            await store.renew_store_id_key("not.a.jwt")
    assert len(emu.request_log) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"endpoints": "https://example.com"},
        {"retry": {"attempts": 3}},
        {"session": object()},
        {"limit": -1},
        {"limit_per_host": 1.5},
        {"keepalive_timeout": 0},
        {"max_response_bytes": 0},
        {"user_agent": "bad\nagent"},
        {"hooks": print},
    ],
)
def test_bad_client_options_raise_validation_error(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StoreClient(StaticTokenCredential("t"), **options)  # type: ignore[arg-type]


def test_a_non_credential_raises_validation_error() -> None:
    with pytest.raises(ValidationError):
        StoreClient("secret")  # type: ignore[arg-type]


def test_the_operation_table() -> None:
    table = {(op.name, op.key_name): (op.repeatable, op.writes) for op in ROUTES}
    assert table == {
        ("consume", "trackingId"): (True, True),
        ("consume", "transactionId"): (True, True),
        ("consume_v8", "trackingId"): (True, True),
        ("query_licenses", None): (True, False),
        ("query_entitlements", None): (True, False),
        ("query_subscriptions", None): (True, False),
        ("change_subscription", None): (False, True),
        ("query_orders", None): (True, False),
        ("grant_free_product", "orderId"): (True, True),
        ("query_products", None): (True, False),
        ("get_offline_license", None): (True, False),
        ("renew_store_id_key", None): (False, True),
        ("get_refund_queue_sas", None): (True, False),
    }
    assert RetryPolicy().attempts == 10


def _user() -> UserIdentity:
    return UserIdentity(identity_value="key", local_ticket_reference="ref")


def test_attempt_timeouts_never_end_after_the_deadline() -> None:
    """aiohttp rounds timeouts of 5 s or more up to a whole second: fine for a full attempt,
    not for one that must end at the call's deadline, which gets an exact timeout instead."""
    usual = AiohttpTransport(
        None,  # type: ignore[arg-type]
        max_response_bytes=1,
        attempt_timeout=RetryPolicy().attempt_timeout,
        connect_timeout=RetryPolicy().connect_seconds,
    )
    first = usual._timeout(RetryPolicy().timeout)
    assert first is usual._full
    assert (first.total, first.connect) == (10.0, 5.0)
    tight = usual._timeout(10.5)  # a call timeout of 10.5 s with 10 s attempts
    assert (tight.total, tight.connect) == (10.0, 5.0)
    assert tight.ceil_threshold > 1e9
    last = usual._timeout(3.0)
    assert (last.total, last.connect, last.ceil_threshold > 1e9) == (3.0, 3.0, True)


class _SlowCredential:
    """A credential whose token request takes ``seconds`` of the engine's (fake) clock."""

    def __init__(self, now: list[float], seconds: float) -> None:
        self.now = now
        self.seconds = seconds

    async def get_token(self, *_scopes: str, **_kwargs: object) -> AccessToken:
        self.now[0] += self.seconds
        return AccessToken(GOOD_TOKEN, int(time.time()) + 3600)


class _RecordingTransport:
    """Answers 204 and records the time each attempt was given."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def send(
        self, _method: str, _url: object, _headers: object, _body: object, time_left: float
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        self.timeouts.append(time_left)
        return 204, CIMultiDictProxy(CIMultiDict()), b""


async def test_time_spent_waiting_for_a_token_counts_against_the_deadline(
    beneficiary: UserIdentity,
) -> None:
    now = [1000.0]
    transport = _RecordingTransport()
    client = StoreClient(
        _SlowCredential(now, 6.0),
        endpoints=Endpoints.single("http://127.0.0.1:1"),
        retry=RetryPolicy(timeout=10.0, attempt_timeout=8.0),
        clock=lambda: now[0],
        transport=transport,
    )
    async with client:
        await client.consume(ConsumeRequest.for_item(beneficiary, "item-1"))
    [timeout] = transport.timeouts
    assert timeout == pytest.approx(4.0)  # 10 s deadline - 6 s waiting for the token


async def test_a_token_arriving_after_the_deadline_is_not_used_to_send(
    beneficiary: UserIdentity,
) -> None:
    now = [1000.0]
    transport = _RecordingTransport()
    client = StoreClient(
        _SlowCredential(now, 11.0),
        endpoints=Endpoints.single("http://127.0.0.1:1"),
        retry=RetryPolicy(timeout=10.0, attempt_timeout=8.0),
        clock=lambda: now[0],
        transport=transport,
    )
    async with client:
        with pytest.raises(TransportError) as caught:
            await client.consume(ConsumeRequest.for_item(beneficiary, "item-1"))
    assert caught.value.kind is FailureKind.NOT_SENT
    assert transport.timeouts == []


async def test_no_attempt_is_sent_once_an_overlong_wait_has_used_up_the_deadline(
    beneficiary: UserIdentity,
) -> None:
    """A wait that oversleeps past the deadline must not be followed by a send with no time
    left: such a request would likely be applied with its answer cut off by the timeout."""
    now = [1000.0]

    async def oversleep(seconds: float) -> None:
        now[0] += seconds + 60.0

    class FailingOnce(_RecordingTransport):
        async def send(
            self, _method: str, _url: object, _headers: object, _body: object, time_left: float
        ) -> tuple[int, CIMultiDictProxy[str], bytes]:
            self.timeouts.append(time_left)
            if len(self.timeouts) == 1:
                raise ServiceUnavailableError("HTTP 503", status=503)
            return 204, CIMultiDictProxy(CIMultiDict()), b""

    client = StoreClient(
        StaticTokenCredential(GOOD_TOKEN),
        endpoints=Endpoints.single("http://127.0.0.1:1"),
        retry=RetryPolicy(timeout=30.0),
        clock=lambda: now[0],
        sleep=oversleep,
        transport=(transport := FailingOnce()),
    )
    async with client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await client.consume(ConsumeRequest.for_item(beneficiary, "item-1"))
    assert len(transport.timeouts) == 1
    assert caught.value.attempts == 1
