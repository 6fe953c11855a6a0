"""Orders of the last 90 days (clawback v1, ``POST /v8.0/b2b/orders/query``): the request with
its ``lineItemStateFilter`` list, answers with invalid dates that must not cost the page, and
the emulator's orders of consumable purchases, refunds and revokes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from store_async import StoreClient, codec
from store_async.emulator import StoreEmulator
from store_async.errors import ValidationError
from store_async.models import ConsumeRequest, UserIdentity
from store_async.models.orders import OrderPage, OrderQuery, PurchaseLineItem, PurchaseOrder

# The shape of the GDK page's example as docs/store-api.md sections 9 and 10 record it (its
# literal body is not in this repository): a shortOrderId in digits, invalid dates (a 13th
# month, a 31st of April), casing drift.
ANSWER = b"""{
  "items": [
    {
      "orderId": "0f3b2a1c-5d6e-4f70-8a9b-0c1d2e3f4a5b",
      "shortOrderId": "8483143756",
      "orderPurchasedDate": "2022-13-02T10:00:00.0000000+00:00",
      "orderRefundedDate": "2022-04-31T10:00:00+00:00",
      "orderLineItems": [
        {"lineItemId": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", "lineItemState": "Refunded",
         "productId": "9NCOINS00001", "quantity": 500, "skuId": "0010",
         "wasConsumableQuantityRevoked": true}
      ]
    },
    {
      "OrderId": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
      "ShortOrderId": "8483143757",
      "OrderPurchasedDate": "2022-12-09T02:13:00.1234567+00:00",
      "OrderLineItems": [{"LineItemId": "l-2", "LineItemState": "SomethingNew"}]
    }
  ]
}"""


def test_the_request_sends_the_filter_as_a_list() -> None:
    query = OrderQuery(
        b2b_key="eyJ0eXAi", line_item_state_filter=["Refunded", "Revoked"], sandbox_id="XDKS.1"
    )
    assert orjson.loads(codec.dumps(query)) == {
        "b2bKey": "eyJ0eXAi",
        "lineItemStateFilter": ["Refunded", "Revoked"],
        "sbx": "XDKS.1",
    }
    assert "eyJ0" not in repr(query)
    assert orjson.loads(codec.dumps(OrderQuery(b2b_key="k"))) == {"b2bKey": "k"}
    with pytest.raises(ValidationError, match="a list, not a single str"):
        OrderQuery(b2b_key="k", line_item_state_filter="Refunded")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="needs at least one state, or None"):
        OrderQuery(b2b_key="k", line_item_state_filter=[])


def test_invalid_dates_do_not_cost_the_page() -> None:
    page = codec.loads(ANSWER, OrderPage)
    first, second = page.items
    assert first.short_order_id == "8483143756"
    # Kept as sent; read per field: the bad ones are None, the good one a datetime.
    assert first.order_purchased_date == "2022-13-02T10:00:00.0000000+00:00"
    assert (first.purchased_at, first.refunded_at) == (None, None)
    assert second.purchased_at == datetime(2022, 12, 9, 2, 13, 0, 123456, tzinfo=UTC)
    assert second.refunded_at is None
    assert first.order_line_items == (
        PurchaseLineItem(
            line_item_id="5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
            line_item_state="Refunded",
            product_id="9NCOINS00001",
            quantity=500,
            sku_id="0010",
            was_consumable_quantity_revoked=True,
        ),
    )
    assert second.order_line_items == (
        PurchaseLineItem(line_item_id="l-2", line_item_state="SomethingNew"),
    )
    assert codec.loads(codec.dumps(page), OrderPage) == page


async def test_orders_of_consumable_purchases_refunds_and_revokes() -> None:
    async with StoreEmulator() as emu:
        key = emu.mint_store_id_key("user-1", "purchase")
        emu.add_balance("user-1", "9NCOINS", 10, order_id="0f3b2a1c-5d6e-4f70-8a9b-0c1d2e3f4a5b")
        emu.add_balance("user-1", "9NCOINS", 5, order_id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d")
        emu.add_balance("user-2", "9NCOINS", 5)
        user = UserIdentity(identity_value="user-1", local_ticket_reference="r")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            consumed = await store.consume(
                ConsumeRequest.for_quantity(user, "9NCOINS", 12, include_order_ids=True)
            )
            emu.refund_order("user-1", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", state="Revoked")
            assert emu.balance_of("user-1", "9NCOINS") == 0  # the 3 units left were revoked
            orders = [order async for order in store.list_orders(key)]
            assert [order.order_id for order in orders] == [
                "0f3b2a1c-5d6e-4f70-8a9b-0c1d2e3f4a5b",
                "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            ]
            assert all(isinstance(order, PurchaseOrder) for order in orders)
            assert all(order.purchased_at is not None for order in orders)
            assert [line.line_item_state for o in orders for line in o.order_line_items] == [
                "Purchased",
                "Revoked",
            ]
            revoked = orders[1]
            assert revoked.refunded_at is not None
            assert revoked.order_line_items[0].was_consumable_quantity_revoked is True
            # The order ids a v8 consume answered are the orders' line items.
            assert {t.order_line_item_id for t in consumed.order_transactions} == {
                line.line_item_id for order in orders for line in order.order_line_items
            }
            only = [o.order_id async for o in store.list_orders(key, line_item_states=["Revoked"])]
            assert only == ["1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"]
