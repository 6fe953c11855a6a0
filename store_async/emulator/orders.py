"""The OrderV6 document a grant answers (docs/store-api.md section 4.1).

The documentation spells some fields two ways (its table says ``createdtime``, ``devofferId``
and ``Title``; its example ``createdTime``, ``devOfferId`` and ``title``). By default the
emulator sends the example's spellings; with ``variants`` it sends the table's (and a
6-digit ``fulfillmentDate``, as in the example), so clients are tested against both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from store_async.emulator.wire import wire_time

__all__ = ["order_document"]


def order_document(
    *,
    order_id: str,
    line_item_id: str,
    product_id: str,
    sku_id: str,
    availability_id: str,
    product_type: str,
    title: str,
    publisher_user_id: str,
    client_id: str,
    body: dict[str, Any],
    moment: datetime,
    variants: bool,
) -> dict[str, Any]:
    """One free order, ``Purchased`` and fulfilled. ``body`` is the grant request (lowercase)."""
    identity = {"identityType": "pub", "identityValue": publisher_user_id}
    fulfilled = moment.isoformat(timespec="microseconds") if variants else wire_time(moment)
    line_item: dict[str, Any] = {
        "agent": identity,
        "availabilityId": availability_id,
        "beneficiary": identity,
        "billingState": "Charged",
        "currencyCode": "USD",
        "description": title,
        "fulfillmentDate": fulfilled,
        "fulfillmentState": "Fulfilled",
        "isPIRequired": False,
        "isTaxIncluded": False,
        "lineItemId": line_item_id,
        "listPrice": 0.0,
        "productId": product_id,
        "productType": product_type,
        "quantity": 1,
        "retailPrice": 0.0,
        "revenueRecognitionState": "None",
        "skuId": sku_id,
        "taxAmount": 0.0,
        "taxType": "TaxesNotIncluded",
        "Title" if variants else "title": title,
        "totalAmount": 0.0,
    }
    dev_offer_id = body.get("devofferid")
    if isinstance(dev_offer_id, str) and dev_offer_id:
        line_item["devofferId" if variants else "devOfferId"] = dev_offer_id
    return {
        "clientContext": {"client": client_id},
        "createdtime" if variants else "createdTime": wire_time(moment),
        "currencyCode": "USD",
        "friendlyName": "",
        "isPIRequired": False,
        "language": body["language"],
        "market": body["market"],
        "orderId": order_id,
        "orderLineItems": [line_item],
        "orderState": "Purchased",
        "orderValidityEndTime": wire_time(moment + timedelta(days=30)),
        "orderValidityStartTime": wire_time(moment),
        "purchaser": identity,
        "totalAmount": 0.0,
        "totalAmountBeforeTax": 0.0,
        "totalChargedToCsvTopOffPI": 0.0,
        "totalTaxAmount": 0.0,
    }
