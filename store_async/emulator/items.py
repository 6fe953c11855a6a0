"""Records of the emulator's store: owned items, catalog products, business products."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from store_async.emulator.wire import END_OF_TIME, canonical_guid, new_guid, now, wire_time

__all__ = ["PRODUCT_TYPES", "BusinessProduct", "CatalogProduct", "Item", "item_key"]

PRODUCT_TYPES: Final = {
    "application": "Application",
    "durable": "Durable",
    "game": "Game",
    "unmanagedconsumable": "UnmanagedConsumable",
}


def item_key(item_id: str) -> str:
    """Item ids as stored: query sends 32 hex digits, consume examples send hyphenated GUIDs."""
    guid = canonical_guid(item_id)
    return guid.replace("-", "") if guid else item_id


@dataclass(slots=True, eq=False)
class Item:
    """One product a user owns (a ``CollectionItemContractV6`` on the wire). Live state:
    ``consumed_by`` changes when it is consumed."""

    user_id: str
    item_id: str
    product_id: str
    sku_id: str
    product_type: str
    transaction_id: str
    sequence: int
    acquired_date: datetime
    start_date: datetime
    end_date: datetime | None = None
    modified_date: datetime = field(default_factory=now)
    status: str = "Active"
    parent_product_id: str | None = None
    order_id: str | None = None
    order_line_item_id: str | None = None
    dev_offer_id: str | None = None
    consumed_by: str | None = None
    """The idempotency key (trackingId or transactionId) that consumed it."""

    @property
    def consumed(self) -> bool:
        return self.consumed_by is not None

    def is_valid(self, moment: datetime) -> bool:
        """Active and within its start/end dates (``validityType: Valid``)."""
        in_window = self.start_date <= moment and (self.end_date is None or moment < self.end_date)
        return self.status == "Active" and in_window

    def to_wire(self, local_ticket_reference: str, publisher_user_id: str) -> dict[str, Any]:
        """The CollectionItemContractV6 JSON; ``purchaser`` is the publisher user id that the
        querying key carries (its ``userId`` claim)."""
        document: dict[str, Any] = {
            "acquiredDate": wire_time(self.acquired_date),
            "endDate": wire_time(self.end_date) if self.end_date else END_OF_TIME,
            "fulfillmentData": [],
            "inAppOfferToken": self.product_id,
            "itemId": self.item_id,
            "localTicketReference": local_ticket_reference,
            "modifiedDate": wire_time(self.modified_date),
            "ownershipType": "OwnedByBeneficiary",
            "productId": self.product_id,
            "productType": self.product_type,
            "purchasedCountry": "US",
            "purchaser": {"identityType": "pub", "identityValue": publisher_user_id},
            "quantity": 1,
            "skuId": self.sku_id,
            "skuType": "Full",
            "startDate": wire_time(self.start_date),
            "status": self.status,
            "tags": [],
            "transactionId": self.transaction_id,
        }
        if self.order_id:
            document["orderId"] = self.order_id
        if self.order_line_item_id:
            document["orderLineItemId"] = self.order_line_item_id
        if self.dev_offer_id:
            document["devOfferId"] = self.dev_offer_id
        return document


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """A product that grant knows; only ``price == 0`` may be granted."""

    product_id: str
    sku_id: str
    availability_id: str
    product_type: str = "Durable"
    title: str = "Emulated product"
    price: float = 0.0


@dataclass(slots=True)
class BusinessProduct:
    """A Store for Business product, for offline licenses."""

    product_id: str
    sku_id: str
    owned: bool = True
    offline: bool = True
    license_instance_id: str = field(default_factory=new_guid)
