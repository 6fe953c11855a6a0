"""The emulator's in-memory store: users, their items, free products, orders, licenses.

It works on plain JSON dicts and raises :class:`~store_async.emulator.wire.ApiError` for
every refusal. Who the caller is (access token, Store ID key) is settled by the server before
these methods run; here a user is just an id.

Consume semantics (docs/store-api.md section 3.2):

- by ``itemId`` + ``trackingId`` or by ``productId`` + ``transactionId``;
- the same key again for the same item answers 204 again, without applying anything;
- an item already consumed under *another* key answers **409 Conflict** with inner code
  ``ItemAlreadyConsumed``. The real service's answer is undocumented; we chose 409 because the
  request is well-formed and it is the item's state that refuses it (400 ``InvalidParameter``
  would tell a fulfillment worker its input is malformed, which it is not), and because the
  client maps 409 to a final ``ConflictError`` that a worker can report as "consumed
  elsewhere";
- an unknown item or transaction is **404** ``ItemNotFound`` (unless ``auto_create``, which
  makes the consumable on first sight, so load tests need no seeding);
- a product that is not a consumable is 400 ``InvalidParameter``.

Consumed items leave the collection (query no longer returns them), as fulfilled unmanaged
consumables do.
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypedDict, Unpack

import orjson

from store_async.emulator.balances import Balances
from store_async.emulator.items import (
    PRODUCT_TYPES,
    BusinessProduct,
    CatalogProduct,
    Item,
    item_key,
)
from store_async.emulator.ledger import Ledger
from store_async.emulator.orders import order_document
from store_async.emulator.query import QueryFilters, continuation_token, read_continuation_token
from store_async.emulator.subscriptions import Subscriptions
from store_async.emulator.wire import ApiError, canonical_guid, new_guid, now

__all__ = ["MAX_PAGE_SIZE", "ItemOptions", "StoreState"]

MAX_PAGE_SIZE: Final = 100
"""``maxPageSize``: the default and the maximum are both 100."""


class ItemOptions(TypedDict, total=False):
    """The optional fields of a new item, kept once for :meth:`StoreState.add_item` and the
    emulator's seeding methods."""

    sku_id: str
    """``"0010"`` by default."""
    item_id: str | None
    """Random 32 hex digits by default; GUIDs are stored in the 32-digit form."""
    transaction_id: str | None
    """A GUID; random by default."""
    acquired: datetime | None
    """Acquisition (and start and modification) time; now by default."""
    end_date: datetime | None
    """``None``: never ends."""
    status: str
    """``"Active"`` by default."""
    parent_product_id: str | None
    order_id: str | None
    """The order that granted the item (gives it an order line item id)."""


@dataclass(slots=True)
class _User:
    items: dict[str, Item] = field(default_factory=dict)
    by_transaction: dict[tuple[str, str], Item] = field(default_factory=dict)


class StoreState:
    """Users, items, the free-product catalog, orders and business products."""

    def __init__(self, ledger: Ledger, *, auto_create: bool = False) -> None:
        self.ledger = ledger
        self.auto_create = auto_create
        self._users: dict[str, _User] = {}
        self._sequence = itertools.count(1)
        self.catalog: dict[tuple[str, str], CatalogProduct] = {}
        self.business: dict[tuple[str, str], BusinessProduct] = {}
        self._orders: dict[tuple[str, str], tuple[tuple[str, str, str], dict[str, Any]]] = {}
        self.balances = Balances(ledger, auto_create=auto_create)
        """Consumable balances and the v8 consume (issue 9)."""
        self.subscriptions = Subscriptions(ledger)
        """Subscriptions (recurrences) and their changes (issue 9)."""

    # -- items ---------------------------------------------------------------------------

    def add_item(
        self,
        user_id: str,
        product_id: str,
        *,
        product_type: str = "Durable",
        **options: Unpack[ItemOptions],
    ) -> Item:
        """Give ``user_id`` (created on demand) one item; returns the live record.

        :param product_type: ``Application``, ``Durable``, ``Game`` or ``UnmanagedConsumable``.
        :param options: see :class:`ItemOptions` (every one optional).
        :raises ValueError: for an unknown product type, an item id the user already owns, or
            a transaction id that is not a GUID.
        """
        canonical_type = PRODUCT_TYPES.get(product_type.lower())
        if canonical_type is None:
            raise ValueError(f"product_type must be one of {sorted(PRODUCT_TYPES.values())}")
        user = self._users.setdefault(user_id, _User())
        item_id = options.get("item_id")
        key = item_key(item_id) if item_id else os.urandom(16).hex()
        if key in user.items:
            raise ValueError(f"user {user_id!r} already owns an item with id {key!r}")
        moment = options.get("acquired") or now()
        transaction_id = options.get("transaction_id")
        transaction = canonical_guid(transaction_id) if transaction_id else new_guid()
        if transaction is None:
            raise ValueError(f"transaction_id must be a GUID, got {transaction_id!r}")
        order_id = options.get("order_id")
        item = Item(
            user_id=user_id,
            item_id=key,
            product_id=product_id,
            sku_id=options.get("sku_id", "0010"),
            product_type=canonical_type,
            transaction_id=transaction,
            sequence=next(self._sequence),
            acquired_date=moment,
            start_date=moment,
            end_date=options.get("end_date"),
            modified_date=moment,
            status=options.get("status", "Active"),
            parent_product_id=options.get("parent_product_id"),
            order_id=order_id,
            order_line_item_id=new_guid() if order_id else None,
        )
        user.items[key] = item
        user.by_transaction[(product_id, transaction)] = item
        return item

    def items_of(self, user_id: str) -> list[Item]:
        """Every item of a user, consumed ones included, oldest first."""
        user = self._users.get(user_id)
        return list(user.items.values()) if user else []

    # -- consume -------------------------------------------------------------------------

    def consume(self, user_id: str, body: dict[str, Any]) -> None:
        """Apply (or replay) one consume; ``body`` has lowercase keys. Raises ``ApiError``."""
        by_item = body.get("itemid") is not None or body.get("trackingid") is not None
        by_transaction = body.get("productid") is not None or body.get("transactionid") is not None
        if by_item == by_transaction:
            raise ApiError.invalid(
                "Send either itemId and trackingId, or productId and transactionId.",
                "itemId",
                "trackingId",
                "productId",
                "transactionId",
            )
        if by_item:
            key, item = self._by_item(user_id, body.get("itemid"), body.get("trackingid"))
        else:
            key, item = self._by_transaction(
                user_id, body.get("productid"), body.get("transactionid")
            )
        if item is None:
            raise ApiError(404, "ItemNotFound", "The user owns no such item.")
        if item.consumed_by is not None:
            if item.consumed_by == key:
                self.ledger.record_replay(key)
                return  # a replay: same answer, nothing applied
            raise ApiError(409, "ItemAlreadyConsumed", "The item was already consumed.")
        if item.product_type != "UnmanagedConsumable":
            raise ApiError.invalid("The item is not a consumable product.", "itemId")
        item.consumed_by = key
        item.modified_date = now()
        self.ledger.record("consume", key, user_id=user_id, subject=item.item_id)

    def _by_item(self, user_id: str, item_id: Any, tracking: Any) -> tuple[str, Item | None]:
        key = canonical_guid(tracking)
        if not isinstance(item_id, str) or not item_id or key is None:
            bad = [] if isinstance(item_id, str) and item_id else ["itemId"]
            raise ApiError.invalid(
                "itemId must be a non-empty string and trackingId a GUID.",
                *(bad if key is not None else [*bad, "trackingId"]),
            )
        user = self._users.get(user_id)
        item = None
        if user is not None:  # stored ids are canonical: try the id as sent first
            item = user.items.get(item_id) or user.items.get(item_key(item_id))
        if item is None and self.auto_create:
            item = self.add_item(
                user_id, "auto-consumable", product_type="UnmanagedConsumable", item_id=item_id
            )
        return key, item

    def _by_transaction(
        self, user_id: str, product_id: Any, transaction: Any
    ) -> tuple[str, Item | None]:
        key = canonical_guid(transaction)
        if not isinstance(product_id, str) or not product_id or key is None:
            bad = [] if isinstance(product_id, str) and product_id else ["productId"]
            raise ApiError.invalid(
                "productId must be a non-empty string and transactionId a GUID.",
                *(bad if key is not None else [*bad, "transactionId"]),
            )
        user = self._users.get(user_id)
        item = user.by_transaction.get((product_id, key)) if user else None
        if item is None and self.auto_create:
            item = self.add_item(
                user_id, product_id, product_type="UnmanagedConsumable", transaction_id=key
            )
        return key, item

    # -- query ---------------------------------------------------------------------------

    def query(
        self, beneficiaries: list[tuple[str, str, str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        """One page of items for ``(user id, publisher user id, localTicketReference)``."""
        types = body.get("producttypes")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise ApiError.invalid(
                "productTypes must be a non-empty list of strings.", "productTypes"
            )
        wanted_types = {PRODUCT_TYPES.get(t.lower()) for t in types}
        if None in wanted_types:
            raise ApiError.invalid(
                f"productTypes accepts {sorted(PRODUCT_TYPES.values())}.", "productTypes"
            )
        page_size = body.get("maxpagesize", MAX_PAGE_SIZE)
        if page_size is None:
            page_size = MAX_PAGE_SIZE
        if type(page_size) is not int or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ApiError.invalid("maxPageSize must be an integer from 1 to 100.", "maxPageSize")
        after = read_continuation_token(body.get("continuationtoken"))
        filters = QueryFilters.read(body)
        moment = now()
        matches: list[tuple[int, Item, tuple[str, str]]] = []
        for user_id, publisher_user_id, reference in beneficiaries:
            user = self._users.get(user_id)
            for item in user.items.values() if user else ():
                if (
                    item.sequence > after
                    and not item.consumed
                    and item.product_type in wanted_types
                    and filters.accept(item, moment)
                ):
                    matches.append((item.sequence, item, (reference, publisher_user_id)))
        matches.sort(key=lambda match: match[0])
        page = matches[:page_size]
        document: dict[str, Any] = {"items": [item.to_wire(*who) for _, item, who in page]}
        if len(matches) > page_size:
            document["continuationToken"] = continuation_token(page[-1][0])
        return document

    # -- grant ---------------------------------------------------------------------------

    def add_product(self, product: CatalogProduct) -> CatalogProduct:
        self.catalog[(product.product_id, product.sku_id)] = product
        return product

    def grant(
        self,
        user_id: str,
        publisher_user_id: str,
        client_id: str,
        body: dict[str, Any],
        *,
        variants: bool,
    ) -> dict[str, Any]:
        """Grant a free product (or replay the order with the same ``orderId``)."""
        order_id, product_id, sku_id, availability_id = _grant_fields(body)
        fingerprint = (product_id, sku_id, availability_id)
        stored = self._orders.get((user_id, order_id))
        if stored is not None:
            if stored[0] != fingerprint:
                raise ApiError(409, "OrderIdConflict", "The orderId was used for another product.")
            self.ledger.record_replay(order_id)
            return stored[1]
        product = self.catalog.get((product_id, sku_id))
        if product is None and self.auto_create:
            product = self.add_product(CatalogProduct(product_id, sku_id, availability_id))
        if product is None:
            raise ApiError.invalid("Unknown product or SKU.", "productId", "skuId")
        if product.availability_id != availability_id:
            raise ApiError.invalid("Unknown availability for this SKU.", "availabilityId")
        if product.price != 0:
            raise ApiError.invalid("Only free products can be granted.", "availabilityId")
        item = self.add_item(
            user_id, product_id, product_type=product.product_type, sku_id=sku_id, order_id=order_id
        )
        order = order_document(
            order_id=order_id,
            line_item_id=item.order_line_item_id or new_guid(),
            product_id=product_id,
            sku_id=sku_id,
            availability_id=availability_id,
            product_type=product.product_type,
            title=product.title,
            publisher_user_id=publisher_user_id,
            client_id=client_id,
            body=body,
            moment=item.acquired_date,
            variants=variants,
        )
        self._orders[(user_id, order_id)] = (fingerprint, order)
        self.ledger.record("grant", order_id, user_id=user_id, subject=f"{product_id}/{sku_id}")
        return order

    # -- Store for Business --------------------------------------------------------------

    def offline_license(
        self, product_id: str, sku_id: str, content_id: str, requestor_id: str
    ) -> dict[str, Any]:
        """The OfflineLicense of an owned, offline-licensable product."""
        product = self.business.get((product_id, sku_id))
        if product is None and self.auto_create:
            product = self.business.setdefault(
                (product_id, sku_id), BusinessProduct(product_id, sku_id)
            )
        if product is None:
            raise ApiError(404, "ProductNotFound", "The product or SKU does not exist.")
        if not product.owned:
            raise ApiError(409, "NotOwned", "The organization does not own this product.")
        if not product.offline:
            raise ApiError(409, "NotOffline", "The product is not licensed for offline use.")
        blob = orjson.dumps(
            {
                "productId": product_id,
                "skuId": sku_id,
                "contentId": content_id,
                "licenseInstanceId": product.license_instance_id,
            }
        )
        return {
            "productKey": {"productId": product_id, "skuId": sku_id},
            "licenseBlob": base64.b64encode(blob).decode(),
            "licenseInstanceId": product.license_instance_id,
            "requestorId": requestor_id,
            "contentId": content_id,
        }


_GRANT_FIELDS: Final = {
    "availabilityid": "availabilityId",
    "language": "language",
    "market": "market",
    "productid": "productId",
    "skuid": "skuId",
}


def _grant_fields(body: dict[str, Any]) -> tuple[str, str, str, str]:
    """``(orderId, productId, skuId, availabilityId)`` of a grant request, else 400 naming
    every missing or invalid field."""
    invalid = [name for key, name in _GRANT_FIELDS.items() if not _text(body.get(key))]
    order_id = canonical_guid(body.get("orderid"))
    if order_id is None:
        invalid.append("orderId")
    quantity = body.get("quantity", 1)
    if type(quantity) is not int or quantity != 1:  # "only 1 is supported"
        invalid.append("quantity")
    if invalid or order_id is None:
        raise ApiError.invalid("Invalid or missing parameters.", *sorted(invalid))
    return order_id, body["productid"], body["skuid"], body["availabilityid"]


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
