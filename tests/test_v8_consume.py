"""v8 consume (``POST /v8.0/collections/consume``): the record, its wire body, the emulator's
balances, and exactly-once under faults through the real client (docs/store-api.md sections 9, 10).
"""

from __future__ import annotations

import asyncio
import random
import uuid

import aiohttp
import attrs
import orjson
import pytest

from store_async import StoreClient, codec
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    ResponseFormatError,
    StoreError,
    ValidationError,
)
from store_async.models import (
    ConsumeRequest,
    ConsumeResult,
    ConsumeV8Response,
    OrderTransaction,
    UserIdentity,
)
from store_async.models._checks import guid_for_caller_key

USER = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
TRACKING = "44db79ca-e31d-49e9-8896-fa5c7f892b40"


async def no_wait(_seconds: float) -> None:
    await asyncio.sleep(0)


# -- the record ----------------------------------------------------------------------------


def test_for_quantity_builds_the_v8_form() -> None:
    request = ConsumeRequest.for_quantity(USER, "9NBLGGH4R315", 3, tracking_id=TRACKING.upper())
    assert (request.product_id, request.remove_quantity, request.tracking_id) == (
        "9NBLGGH4R315",
        3,
        TRACKING,
    )
    assert (request.item_id, request.transaction_id, request.sandbox_id) == (None, None, None)
    assert request.is_v8
    assert request.idempotency_key == TRACKING
    assert not ConsumeRequest.for_item(USER, "item", TRACKING).is_v8
    generated = ConsumeRequest.for_quantity(USER, "p", 1)
    assert uuid.UUID(generated.tracking_id).version == 4


def test_a_caller_key_gives_the_same_tracking_id_on_every_run() -> None:
    first = ConsumeRequest.for_quantity(USER, "p", 2, key="order-17")
    again = ConsumeRequest.for_quantity(USER, "p", 2, key="order-17")
    assert first.tracking_id == again.tracking_id == guid_for_caller_key("order-17")
    namespace = uuid.UUID("c200f89e-39f8-5bff-8c6f-d71b7d829a58")
    assert first.tracking_id == str(uuid.uuid5(namespace, "order-17"))
    assert ConsumeRequest.for_quantity(USER, "p", 2, key="order-18").tracking_id != (
        first.tracking_id
    )
    with pytest.raises(ValidationError, match="a tracking_id or a caller key, not both"):
        ConsumeRequest.for_quantity(USER, "p", 2, key="k", tracking_id=TRACKING)


def test_the_request_is_immutable() -> None:
    request = ConsumeRequest.for_quantity(USER, "p", 2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.remove_quantity = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("p", 0), {}, "remove_quantity must be an integer from 1 to 2147483647"),
        (("p", 2**31), {}, "remove_quantity must be an integer from 1 to 2147483647"),
        (("p", True), {}, "remove_quantity must be an integer"),
        (("p", 1.0), {}, "remove_quantity must be an integer"),
        (("", 1), {}, "product_id must not be empty"),
        (("p", 1), {"sandbox_id": ""}, "sandbox_id must not be empty"),
        (("p", 1), {"include_order_ids": 1}, "include_order_ids must be True or False"),
        (("p", 1), {"tracking_id": "nope"}, "tracking_id must be a GUID"),
        (("p", 1), {"key": ""}, "key must not be empty"),
    ],
)
def test_bad_v8_values_are_refused(
    arguments: tuple[object, ...], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ConsumeRequest.for_quantity(USER, *arguments, **options)  # type: ignore[arg-type]


def test_v8_fields_do_not_mix_with_the_v6_forms() -> None:
    with pytest.raises(ValidationError, match="takes no item_id or transaction_id"):
        ConsumeRequest(beneficiary=USER, item_id="i", tracking_id=TRACKING, remove_quantity=1)
    with pytest.raises(ValidationError, match="belong to the v8 form"):
        ConsumeRequest(beneficiary=USER, item_id="i", tracking_id=TRACKING, sandbox_id="XDKS.1")
    with pytest.raises(ValidationError, match="remove_quantity needs a tracking_id"):
        ConsumeRequest(beneficiary=USER, product_id="p", remove_quantity=1)


# -- the wire --------------------------------------------------------------------------------


def test_the_body_carries_the_optional_fields_only_when_set() -> None:
    plain = ConsumeRequest.for_quantity(USER, "9NBLGGH4R315", 3, tracking_id=TRACKING)
    assert orjson.loads(codec.dumps(plain)) == {
        "beneficiary": {
            "identityType": "b2b",
            "identityValue": "user-1",
            "localTicketReference": "ref-1",
        },
        "productId": "9NBLGGH4R315",
        "trackingId": TRACKING,
        "removeQuantity": 3,
    }
    full = attrs.evolve(plain, include_order_ids=True, sandbox_id="XDKS.1")
    assert orjson.loads(codec.dumps(full)) == {
        **orjson.loads(codec.dumps(plain)),
        "includeOrderIds": True,
        "sbx": "XDKS.1",
    }


# The documented answer shapes (docs/store-api.md 9, 10: the fields and quirks it records; the GDK
# pages' literal bodies are not in this repository): store-managed with order ids, an old example
# with "$type" inside orderTransactions, a developer-managed replay (no order ids), casing drift.
STORE_MANAGED = b"""{
  "newQuantity": 7,
  "itemId": "4b8fbb13127a41f299270ea668681c1d",
  "trackingId": "44db79ca-e31d-49e9-8896-fa5c7f892b40",
  "productId": "9NBLGGH4R315",
  "orderTransactions": [
    {"orderId": "8ac6ed6c-1d09-4a66-9a37-4ae3b7f5e2cc",
     "orderLineItemId": "0b3c2e5a-7fd5-4f6a-a8e1-3e0f0a9f8c11", "quantityConsumed": 2},
    {"$type": "Microsoft.Marketplace.Storefront.Contracts.V8.One.OrderTransactionContract",
     "orderId": "1f0e2d3c-4b5a-4968-8776-655443322110",
     "orderLineItemId": "9e8d7c6b-5a49-4837-a625-14f3e2d1c0b9", "quantityConsumed": 1}
  ]
}"""
DEVELOPER_REPLAY = b"""{"newQuantity": 0, "itemId": "4b8fbb13127a41f299270ea668681c1d",
  "trackingId": "44db79ca-e31d-49e9-8896-fa5c7f892b40", "productId": "9NBLGGH4R315"}"""
DRIFTED = b"""{"NewQuantity": 5, "itemid": "i", "TrackingId": "t", "PRODUCTID": "p",
  "ordertransactions": [{"OrderId": "o", "orderlineitemid": "l", "QuantityConsumed": 5}]}"""


def test_documented_answers_parse() -> None:
    answer = codec.loads(STORE_MANAGED, ConsumeV8Response)
    assert answer == ConsumeV8Response(
        new_quantity=7,
        item_id="4b8fbb13127a41f299270ea668681c1d",
        tracking_id=TRACKING,
        product_id="9NBLGGH4R315",
        order_transactions=(
            OrderTransaction(
                order_id="8ac6ed6c-1d09-4a66-9a37-4ae3b7f5e2cc",
                order_line_item_id="0b3c2e5a-7fd5-4f6a-a8e1-3e0f0a9f8c11",
                quantity_consumed=2,
            ),
            OrderTransaction(
                order_id="1f0e2d3c-4b5a-4968-8776-655443322110",
                order_line_item_id="9e8d7c6b-5a49-4837-a625-14f3e2d1c0b9",
                quantity_consumed=1,
            ),
        ),
    )
    replay = codec.loads(DEVELOPER_REPLAY, ConsumeV8Response)
    assert (replay.new_quantity, replay.order_transactions) == (0, ())
    drifted = codec.loads(DRIFTED, ConsumeV8Response)
    assert drifted == ConsumeV8Response(
        new_quantity=5,
        item_id="i",
        tracking_id="t",
        product_id="p",
        order_transactions=(
            OrderTransaction(order_id="o", order_line_item_id="l", quantity_consumed=5),
        ),
    )
    # Round trip: what we parse, we write back the same (without the unknown "$type").
    written = orjson.loads(codec.dumps(answer))
    documented = orjson.loads(STORE_MANAGED)
    del documented["orderTransactions"][1]["$type"]
    assert written == documented


def test_a_malformed_answer_is_a_response_format_error() -> None:
    with pytest.raises(ResponseFormatError, match=r"\$.newQuantity: expected an integer"):
        codec.loads(b'{"newQuantity": "7"}', ConsumeV8Response)


# -- through the client and the emulator ----------------------------------------------------


async def test_store_managed_consume_replay_and_changed_values() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NCOINS", 10, order_id="8ac6ed6c-1d09-4a66-9a37-4ae3b7f5e2cc")
        emu.add_balance("user-1", "9NCOINS", 5)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            request = ConsumeRequest.for_quantity(USER, "9NCOINS", 12, include_order_ids=True)
            first = await store.consume(request)
            assert isinstance(first, ConsumeResult)
            assert (first.tracking_id, first.new_quantity, first.product_id) == (
                request.tracking_id,
                3,
                "9NCOINS",
            )
            assert first.item_id is not None
            assert first.transaction_id is None
            assert next((t.order_id, t.quantity_consumed) for t in first.order_transactions) == (
                "8ac6ed6c-1d09-4a66-9a37-4ae3b7f5e2cc",
                10,
            )
            assert [t.quantity_consumed for t in first.order_transactions] == [10, 2]
            # The same four values: a replay, the balance as it is now, nothing applied.
            replay = await store.consume(request)
            assert (replay.new_quantity, replay.order_transactions) == (3, first.order_transactions)
            assert emu.ledger.applied(request.tracking_id) == 1
            # The same trackingId with another quantity is a new consume, as documented.
            changed = attrs.evolve(request, remove_quantity=2)
            assert (await store.consume(changed)).new_quantity == 1
            assert emu.ledger.applied(request.tracking_id) == 2
            assert emu.balance_of("user-1", "9NCOINS") == 1


async def test_order_ids_only_when_asked_and_errors_are_typed() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NCOINS", 2)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            result = await store.consume(ConsumeRequest.for_quantity(USER, "9NCOINS", 1))
            assert (result.new_quantity, result.order_transactions) == (1, ())
            with pytest.raises(ConflictError) as too_many:
                await store.consume(ConsumeRequest.for_quantity(USER, "9NCOINS", 2))
            assert (too_many.value.status, too_many.value.inner_code) == (
                409,
                "InsufficientQuantity",
            )
            with pytest.raises(NotFoundError) as not_owned:
                await store.consume(ConsumeRequest.for_quantity(USER, "9NOTHING", 1))
            assert not_owned.value.inner_code == "ProductNotOwned"
            assert emu.balance_of("user-1", "9NCOINS") == 1
            assert emu.ledger.count("consume_v8") == 1


async def test_developer_managed_replays_return_no_order_ids() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NPOTION", 2, managed="developer")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            request = ConsumeRequest.for_quantity(USER, "9NPOTION", 1, include_order_ids=True)
            first = await store.consume(request)
            assert first.new_quantity == 0
            assert len(first.order_transactions) == 1
            replay = await store.consume(request)
            assert (replay.new_quantity, replay.order_transactions) == (0, ())
            assert emu.ledger.applied(request.tracking_id) == 1
            # The quantity is ignored for developer-managed consumables: still a replay.
            assert (await store.consume(attrs.evolve(request, remove_quantity=5))).new_quantity == 0
            assert emu.ledger.applied(request.tracking_id) == 1


async def test_developer_managed_in_a_development_sandbox_needs_xsts() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NPOTION", 1, managed="developer", sandbox_id="XDKS.1")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            request = ConsumeRequest.for_quantity(USER, "9NPOTION", 1, sandbox_id="XDKS.1")
            with pytest.raises(AuthenticationError) as refused:
                await store.consume(request)
        assert (refused.value.inner_code, refused.value.token_rejected) == (
            "XstsTokenRequired",
            False,
        )
        assert emu.stats.requests["consume"] == 1  # final: neither retried nor re-authenticated
        assert emu.balance_of("user-1", "9NPOTION", sandbox_id="XDKS.1") == 1


async def test_sandboxes_keep_their_own_balances() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NCOINS", 5)
        emu.add_balance("user-1", "9NCOINS", 9, sandbox_id="XDKS.1")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            sandboxed = ConsumeRequest.for_quantity(USER, "9NCOINS", 4, sandbox_id="XDKS.1")
            assert (await store.consume(sandboxed)).new_quantity == 5
            assert emu.balance_of("user-1", "9NCOINS") == 5
            assert emu.balance_of("user-1", "9NCOINS", sandbox_id="XDKS.1") == 5


async def test_the_emulator_names_invalid_fields() -> None:
    async with (
        StoreEmulator() as emu,
        StoreClient(emu.credential(), endpoints=emu.endpoints) as store,
    ):
        # Bypass the record's checks: what a hand-made body gets from the emulator.
        request = ConsumeRequest.for_quantity(USER, "p", 1)
        object.__setattr__(request, "remove_quantity", 0)
        with pytest.raises(InvalidRequestError, match="Invalid or missing parameters"):
            await store.consume(request)


# -- exactly once under faults ---------------------------------------------------------------


async def consume_all(
    store: StoreClient, requests: list[ConsumeRequest], concurrency: int
) -> list[tuple[ConsumeRequest, StoreError]]:
    queue: asyncio.Queue[ConsumeRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    unsettled: list[tuple[ConsumeRequest, StoreError]] = []

    async def worker() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            try:
                await store.consume(request, attempts=3)
            except StoreError as failure:
                unsettled.append((request, failure))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return unsettled


@pytest.mark.slow
async def test_2000_v8_consumes_at_25_percent_faults_apply_each_tracking_id_once() -> None:
    plan = FaultPlan(rate=0.25, seed=909, retry_after=0.0, slow_seconds=0.001)
    users = [f"user-{n}" for n in range(40)]
    products = [f"9NV8PRODUCT{n}" for n in range(5)]
    initial = 1_000
    draw = random.Random(9)
    async with StoreEmulator(faults=plan) as emu:
        for user in users:
            for product in products:
                emu.add_balance(user, product, initial)
        requests = []
        for n in range(2000):
            user = users[n % 40]
            identity = UserIdentity(identity_value=user, local_ticket_reference=user)
            requests.append(
                ConsumeRequest.for_quantity(
                    identity, products[(n // 40) % 5], draw.randint(1, 3), key=f"order-{n}"
                )
            )
        sent: dict[str, tuple[str, str, int]] = {}
        async with StoreClient(emu.credential(), endpoints=emu.endpoints, sleep=no_wait) as store:
            pending, rounds = requests, 0
            while pending:
                rounds += 1
                assert rounds <= 20, f"{len(pending)} consumes never settled"
                for request in pending:
                    values = (
                        request.beneficiary.identity_value,
                        request.product_id or "",
                        request.remove_quantity or 0,
                    )
                    # A tracking id never travels with other values.
                    assert sent.setdefault(request.idempotency_key, values) == values
                unsettled = await consume_all(store, pending, concurrency=64)
                for request, error in unsettled:
                    if isinstance(error, OutcomeUnknownError):
                        assert error.tracking_id == request.tracking_id
                    else:
                        assert error.retryable, error
                pending = [request for request, _ in unsettled]
        assert emu.ledger.count("consume_v8") == 2000
        assert emu.ledger.duplicates() == {}
        assert all(emu.ledger.applied(request.idempotency_key) == 1 for request in requests)
        spent: dict[tuple[str, str], int] = {}
        for request in requests:
            pair = (request.beneficiary.identity_value, request.product_id or "")
            spent[pair] = spent.get(pair, 0) + (request.remove_quantity or 0)
        assert len(spent) == 200
        for (user, product), units in spent.items():
            assert emu.balance_of(user, product) == initial - units
        by_kind = emu.stats.faults_by_kind("consume")
        assert by_kind[FaultKind.DROP_AFTER_COMMIT] > 30
        assert by_kind[FaultKind.HTTP_500] > 30
        assert rounds > 1  # some outcomes were unknown and were settled by resubmission


async def test_the_emulator_reads_the_older_sandbox_spelling() -> None:
    # Some documented examples still send "sandbox" instead of "sbx" (docs/store-api.md 10).
    async with StoreEmulator() as emu, aiohttp.ClientSession() as session:
        emu.add_balance("user-1", "9NCOINS", 5, sandbox_id="XDKS.1")
        body = {
            "beneficiary": {
                "identityType": "b2b",
                "identityValue": "user-1",
                "localTicketReference": "r",
            },
            "productId": "9NCOINS",
            "trackingId": TRACKING,
            "removeQuantity": 2,
            "sandbox": "XDKS.1",
        }
        headers = {"Authorization": f"Bearer {emu.dev_token}"}
        async with session.post(
            f"{emu.url}/v8.0/collections/consume", json=body, headers=headers
        ) as response:
            assert response.status == 200
            answer = await response.json()
        assert (answer["newQuantity"], answer["trackingId"], "orderTransactions" in answer) == (
            3,
            TRACKING,
            False,
        )
        assert emu.balance_of("user-1", "9NCOINS", sandbox_id="XDKS.1") == 3
