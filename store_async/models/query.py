"""Query for products: ``POST /v6.0/collections/query`` (docs/store-api.md section 3.1)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models.identities import IdentityV6, ProductSkuId, UserIdentity

__all__ = ["CollectionItem", "QueryRequest", "QueryResult"]

MAX_PAGE_SIZE = 100
"""The documented default and maximum of ``maxPageSize``."""


def _beneficiaries(value: Iterable[UserIdentity]) -> tuple[UserIdentity, ...]:
    return _checks.tuple_of(value, "QueryRequest.beneficiaries")


def _product_types(value: Iterable[str]) -> tuple[str, ...]:
    return _checks.tuple_of(value, "QueryRequest.product_types")


def _product_sku_ids(value: Iterable[ProductSkuId] | None) -> tuple[ProductSkuId, ...] | None:
    return None if value is None else _checks.tuple_of(value, "QueryRequest.product_sku_ids")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return _checks.tuple_of(value, "list of strings")


def _items(value: Iterable[CollectionItem]) -> tuple[CollectionItem, ...]:
    return _checks.tuple_of(value, "QueryResult.items")


_checks.keeps_tuples(_strings, _items)


@attrs.frozen(kw_only=True)
class QueryRequest:
    """What to ask the collections query for.

    ``QueryRequest(beneficiaries=[user], product_types=["Durable", "UnmanagedConsumable"])``;
    every other field is optional and omitted from the request body when ``None``.

    Raises :class:`~store_async.errors.ValidationError` when a required list is empty, an element
    has the wrong type, ``max_page_size`` is outside 1-100 or ``modified_after`` is naive.
    """

    beneficiaries: tuple[UserIdentity, ...] = attrs.field(converter=_beneficiaries)
    """The users to query (at least one)."""
    product_types: tuple[str, ...] = attrs.field(converter=_product_types)
    """``Application``, ``Durable``, ``Game`` and/or ``UnmanagedConsumable`` (at least one)."""
    continuation_token: str | None = None
    """The previous page's :attr:`QueryResult.continuation_token`."""
    max_page_size: int | None = None
    """Items per page, 1-100 (the service's default and maximum is 100)."""
    modified_after: datetime | None = None
    """Only items modified after this instant (timezone-aware)."""
    parent_product_id: str | None = None
    """Only the add-ons of this app."""
    product_sku_ids: tuple[ProductSkuId, ...] | None = attrs.field(
        default=None, converter=_product_sku_ids
    )
    """Only these product/SKU pairs."""
    validity_type: str | None = None
    """``All`` (include expired items) or ``Valid`` (only items valid now)."""

    def __attrs_post_init__(self) -> None:
        if not self.beneficiaries:
            raise ValidationError("QueryRequest.beneficiaries needs at least one user")
        _checks.items_of(self.beneficiaries, UserIdentity, "QueryRequest.beneficiaries")
        if not self.product_types:
            raise ValidationError(
                "QueryRequest.product_types needs at least one product type, e.g. ['Durable']"
            )
        _checks.texts_of(self.product_types, "QueryRequest.product_types")
        _checks.optional_text(self.continuation_token, "QueryRequest.continuation_token")
        size = self.max_page_size
        if size is not None and (type(size) is not int or not 1 <= size <= MAX_PAGE_SIZE):
            raise ValidationError(
                f"QueryRequest.max_page_size must be an integer from 1 to {MAX_PAGE_SIZE}"
            )
        _checks.aware(self.modified_after, "QueryRequest.modified_after")
        _checks.optional_text(self.parent_product_id, "QueryRequest.parent_product_id")
        if self.product_sku_ids is not None:
            _checks.items_of(self.product_sku_ids, ProductSkuId, "QueryRequest.product_sku_ids")
            _checks.skus_of(self.product_sku_ids, "QueryRequest.product_sku_ids")
        _checks.optional_text(self.validity_type, "QueryRequest.validity_type")

    def with_continuation(self, token: str) -> QueryRequest:
        """The same query, asking for the page after the one that returned ``token``."""
        return attrs.evolve(self, continuation_token=token)


@attrs.frozen(kw_only=True)
class CollectionItem:
    """One product a user owns (``CollectionItemContractV6``).

    Fields the docs mark required and show in their example are required here; the rest are
    ``None`` when the service leaves them out, and missing lists read as empty. Enumerations
    (``status``, ``product_type``...) are plain strings so a value added by the service later
    still parses; the documented values are listed on each field.
    """

    item_id: str
    """Unique per product; pass it to :meth:`ConsumeRequest.for_item`."""
    product_id: str
    sku_id: str
    product_type: str
    """``Application``, ``Durable``, ``UnmanagedConsumable`` (or a newer value)."""
    sku_type: str
    """``Trial``, ``Full`` or ``Rental``."""
    status: str
    """``Active``, ``Expired``, ``Revoked`` or ``Banned``."""
    ownership_type: str
    """``OwnedByBeneficiary``."""
    local_ticket_reference: str
    """The :attr:`UserIdentity.local_ticket_reference` of the user it belongs to."""
    transaction_id: str
    """The purchase's transaction id; usable with :meth:`ConsumeRequest.for_transaction`."""
    acquired_date: datetime
    start_date: datetime
    end_date: datetime
    modified_date: datetime
    tags: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    fulfillment_data: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    campaign_id: str | None = None
    dev_offer_id: str | None = None
    in_app_offer_token: str | None = None
    """Your Partner Center product id for an add-on (e.g. ``consumable2``)."""
    order_id: str | None = None
    order_line_item_id: str | None = None
    purchased_country: str | None = None
    purchaser: IdentityV6 | None = None
    quantity: int | None = None
    """Always 1 according to the docs."""


@attrs.frozen(kw_only=True)
class QueryResult:
    """One page of a query. ``continuation_token`` is set when more pages exist."""

    items: tuple[CollectionItem, ...] = attrs.field(default=(), converter=_items)
    continuation_token: str | None = None
