"""Deterministic idempotency keys from the caller's own id (issue 13, web-service guidance)."""

from __future__ import annotations

import uuid

import pytest

from store_async import ConsumeRequest, GrantRequest, StoreClient, UserIdentity, ValidationError
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.models import CALLER_KEY_NAMESPACE, guid_for_caller_key

USER = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")


def test_the_namespace_is_the_documented_one() -> None:
    assert str(CALLER_KEY_NAMESPACE) == "c200f89e-39f8-5bff-8c6f-d71b7d829a58"
    assert (
        uuid.uuid5(uuid.NAMESPACE_URL, "https://store-async.invalid/idempotency-key")
        == CALLER_KEY_NAMESPACE
    )


def test_a_caller_key_gives_a_fixed_version_5_guid() -> None:
    # A pinned value: if this changes, every resend after an upgrade would apply twice.
    assert guid_for_caller_key("order-42") == "da259958-b27a-584b-8fda-8a96c0547834"
    derived = guid_for_caller_key("order-42")
    assert derived == str(uuid.uuid5(CALLER_KEY_NAMESPACE, "order-42"))
    assert uuid.UUID(derived).version == 5
    assert guid_for_caller_key("order-43") != derived
    assert guid_for_caller_key("Order-42") != derived  # compared exactly


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_a_blank_or_non_string_key_is_a_validation_error(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"^key must"):
        guid_for_caller_key(bad)  # type: ignore[arg-type]


def test_consume_for_item_with_a_key() -> None:
    first = ConsumeRequest.for_item(USER, "item-1", key="order-42")
    again = ConsumeRequest.for_item(USER, "item-1", key="order-42")
    assert first == again
    assert first.tracking_id == guid_for_caller_key("order-42")
    assert ConsumeRequest.for_item(USER, "item-1").tracking_id != first.tracking_id
    with pytest.raises(ValidationError, match="give tracking_id or key, not both"):
        ConsumeRequest.for_item(USER, "item-1", first.tracking_id, key="order-42")


def grant(key: str) -> GrantRequest:
    return GrantRequest.for_caller_key(
        key,
        availability_id="AV1",
        b2b_key="purchase-key",
        language="en-us",
        market="US",
        product_id="FREE1",
        sku_id="0010",
    )


def test_grant_for_caller_key() -> None:
    assert grant("order-7").order_id == guid_for_caller_key("order-7")
    assert grant("order-7") == grant("order-7")
    with pytest.raises(ValidationError, match=r"^key must not be empty"):
        grant(" ")


async def test_a_resent_request_with_the_same_key_applies_once() -> None:
    """What a web service does after a client disconnect: build the request again from the
    order id and send it again; the Store settles it once."""
    plan = FaultPlan(
        script={"consume": [FaultKind.DROP_AFTER_COMMIT], "grant": [FaultKind.HTTP_500]}
    )
    async with StoreEmulator(faults=plan) as emulator:
        item = emulator.add_consumable("user-1", "9NBLGGH42CFD")
        emulator.add_free_product("FREE1", availability_id="AV1")
        purchase_key = emulator.mint_store_id_key("user-1", "purchase")
        async with StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store:
            for _ in range(3):  # three HTTP requests for the same order
                await store.consume(ConsumeRequest.for_item(USER, item.item_id, key="order-1"))
            for _ in range(3):
                request = GrantRequest.for_caller_key(
                    "order-2",
                    availability_id="AV1",
                    b2b_key=purchase_key,
                    language="en-us",
                    market="US",
                    product_id="FREE1",
                    sku_id="0010",
                )
                await store.grant_free_product(request)
        tracking_id, order_id = guid_for_caller_key("order-1"), guid_for_caller_key("order-2")
        assert emulator.ledger.keys("consume") == {tracking_id}
        assert emulator.ledger.keys("grant") == {order_id}
        assert (emulator.ledger.applied(tracking_id), emulator.ledger.applied(order_id)) == (1, 1)
        assert emulator.ledger.duplicates() == {}
