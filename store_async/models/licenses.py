"""The newer collections queries (docs/store-api.md sections 9 and 10):

- v8 ``POST /v8.0/collections/b2bLicensePreview``: :class:`LicenseQuery` -> :class:`LicensePage`
  of :class:`LicenseItem`;
- v9 ``POST /v9.0/collections/publisherQuery``: :class:`EntitlementQuery` ->
  :class:`EntitlementPage` of :class:`EntitlementItem`.

Continuation tokens are opaque (they look like JSON: never parse them). Enumerations are plain
strings, so a value the service adds later still parses. ``trialTimeRemaining`` is a .NET
``TimeSpan`` string, kept as sent and read by :attr:`TrialData.time_remaining`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models._time import parse_timespan
from store_async.models.identities import ProductSkuId, UserIdentity

__all__ = [
    "MAX_ENTITLEMENT_PAGE_SIZE",
    "MAX_LICENSE_PAGE_SIZE",
    "MAX_PRODUCT_SKU_IDS",
    "EntitlementItem",
    "EntitlementPage",
    "EntitlementQuery",
    "LicenseItem",
    "LicensePage",
    "LicenseQuery",
    "TrialData",
]

MAX_PRODUCT_SKU_IDS: Final = 100
"""More than 100 ``productSkuIds`` is a 400 (v9; we hold v8 to the same)."""
MAX_LICENSE_PAGE_SIZE: Final = 100
"""v8 ``maxPageSize``: at most 100."""
MAX_ENTITLEMENT_PAGE_SIZE: Final = 200
"""v9 ``maxPageSize``: default 100, at most 200."""


def _tuple(value: Iterable[Any] | None) -> tuple[Any, ...]:
    return () if value is None else _checks.tuple_of(value, "list")


_checks.keeps_tuples(_tuple)


def _optional_tuple(value: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else _checks.tuple_of(value, "list")


def _check_query(
    name: str,
    beneficiaries: tuple[Any, ...],
    product_sku_ids: tuple[Any, ...],
    max_page_size: int | None,
    largest_page: int,
    *,
    skus_required: bool,
) -> None:
    if not beneficiaries:
        raise ValidationError(f"{name}.beneficiaries needs at least one user")
    _checks.items_of(beneficiaries, UserIdentity, f"{name}.beneficiaries")
    if not product_sku_ids:
        # v8 without productSkuIds "can cause the call to time-out" (section 10); v9 needs them.
        raise ValidationError(
            f"{name}.product_sku_ids needs at least one ProductSkuId: a query without them "
            "can time out (v8) or is refused (v9)"
        )
    if len(product_sku_ids) > MAX_PRODUCT_SKU_IDS:
        raise ValidationError(
            f"{name}.product_sku_ids takes at most {MAX_PRODUCT_SKU_IDS} products "
            f"(got {len(product_sku_ids)}): split the query"
        )
    _checks.items_of(product_sku_ids, ProductSkuId, f"{name}.product_sku_ids")
    if skus_required:
        _checks.skus_of(product_sku_ids, f"{name}.product_sku_ids")
    size = max_page_size
    if size is not None and (type(size) is not int or not 1 <= size <= largest_page):
        raise ValidationError(f"{name}.max_page_size must be an integer from 1 to {largest_page}")


def _check_flag(value: object, field: str) -> None:
    if value is not None and type(value) is not bool:
        raise ValidationError(f"{field} must be True, False or None")


@attrs.frozen(kw_only=True)
class LicenseQuery:
    """v8 ``b2bLicensePreview``: the licenses (entitlements and balances) of users.

    ``LicenseQuery(beneficiaries=[user], product_sku_ids=[ProductSkuId(product_id=...,
    sku_id=...)])``; optional fields are left out of the body when ``None``.

    :raises ValidationError: no user, no or more than 100 product/SKU pairs (a v8 query without
        them can time out), a pair without a SKU, ``max_page_size`` outside 1-100.
    """

    beneficiaries: tuple[UserIdentity, ...] = attrs.field(converter=_tuple)
    product_sku_ids: tuple[ProductSkuId, ...] = attrs.field(converter=_tuple)
    continuation_token: str | None = None
    """Opaque; from the previous :class:`LicensePage` (the pager passes it for you)."""
    max_page_size: int | None = None
    entitlement_filters: tuple[str, ...] | None = attrs.field(
        default=None, converter=_optional_tuple
    )
    """E.g. ``"*:Game"``, ``"*:Consumable"``, ``"*:UnmanagedConsumable"``, ``"*:Durable"``,
    ``"*:Pass"``."""
    market: str | None = None
    """``"neutral"`` in the docs."""
    expand_satisfying_items: bool | None = None
    exclude_duplicates: bool | None = None
    validity_type: str | None = None
    """``All``, ``Valid`` or ``Invalid``."""
    sandbox_id: str | None = None
    """The ``sbx`` of a development sandbox (``None``: RETAIL)."""

    def __attrs_post_init__(self) -> None:
        _check_query(
            "LicenseQuery",
            self.beneficiaries,
            self.product_sku_ids,
            self.max_page_size,
            MAX_LICENSE_PAGE_SIZE,
            skus_required=True,
        )
        _checks.optional_text(self.continuation_token, "LicenseQuery.continuation_token")
        if self.entitlement_filters is not None:
            _checks.texts_of(self.entitlement_filters, "LicenseQuery.entitlement_filters")
        _checks.optional_text(self.market, "LicenseQuery.market")
        _check_flag(self.expand_satisfying_items, "LicenseQuery.expand_satisfying_items")
        _check_flag(self.exclude_duplicates, "LicenseQuery.exclude_duplicates")
        _checks.optional_text(self.validity_type, "LicenseQuery.validity_type")
        _checks.optional_text(self.sandbox_id, "LicenseQuery.sandbox_id")

    def with_continuation(self, token: str | None) -> LicenseQuery:
        """The same query from the page that ``token`` starts (``None``: the first page)."""
        return attrs.evolve(self, continuation_token=token)


@attrs.frozen(kw_only=True)
class EntitlementQuery:
    """v9 ``publisherQuery``: the entitlements of users to up to 100 products.

    A :class:`ProductSkuId` may leave ``sku_id`` out (every SKU of the product).

    :raises ValidationError: no user, no or more than 100 products, ``max_page_size`` outside
        1-200.
    """

    beneficiaries: tuple[UserIdentity, ...] = attrs.field(converter=_tuple)
    product_sku_ids: tuple[ProductSkuId, ...] = attrs.field(converter=_tuple)
    continuation_token: str | None = None
    max_page_size: int | None = None
    """1-200; the service's default is 100."""
    exclude_duplicates: bool | None = None
    validity_type: str | None = None
    sandbox_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_query(
            "EntitlementQuery",
            self.beneficiaries,
            self.product_sku_ids,
            self.max_page_size,
            MAX_ENTITLEMENT_PAGE_SIZE,
            skus_required=False,
        )
        _checks.optional_text(self.continuation_token, "EntitlementQuery.continuation_token")
        _check_flag(self.exclude_duplicates, "EntitlementQuery.exclude_duplicates")
        _checks.optional_text(self.validity_type, "EntitlementQuery.validity_type")
        _checks.optional_text(self.sandbox_id, "EntitlementQuery.sandbox_id")

    def with_continuation(self, token: str | None) -> EntitlementQuery:
        """The same query from the page that ``token`` starts (``None``: the first page)."""
        return attrs.evolve(self, continuation_token=token)


@attrs.frozen(kw_only=True)
class TrialData:
    """Trial state of an entitlement (``trialData``)."""

    is_in_trial_period: bool | None = None
    is_trial: bool | None = None
    trial_time_remaining: str | None = None
    """As sent: a .NET TimeSpan such as ``"09:43:52.8580690"`` or ``"2.09:43:52"``."""

    @property
    def time_remaining(self) -> timedelta | None:
        """:attr:`trial_time_remaining` read (``None`` if absent or not a TimeSpan)."""
        return parse_timespan(self.trial_time_remaining)


@attrs.frozen(kw_only=True)
class _OwnedProduct:
    """The fields a v8 license item and a v9 entitlement item share (one definition, so the two
    records cannot drift apart). Every field but ``product_id`` may be missing."""

    product_id: str
    id: str | None = None
    sku_id: str | None = None
    product_kind: str | None = None
    """``Game``, ``Durable``, ``Consumable``, ``UnmanagedConsumable``, ``Pass``..."""
    status: str | None = None
    """``Active``, ``Revoked``, ``Expired``, ``Banned``, ``Suspended`` (or a newer value)."""
    quantity: int | None = None
    acquired_date: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    modified_date: datetime | None = None
    acquisition_type: str | None = None
    """``Single``, ``Recurring`` or ``Conditional``."""
    beneficiary: Any = None
    dev_offer_id: str | None = None
    in_app_offer_token: str | None = None
    local_ticket_reference: str | None = None
    product_family: str | None = None
    purchased_country: str | None = None
    satisfied_by_product_ids: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    transaction_id: str | None = None
    trial_data: TrialData | None = None


@attrs.frozen(kw_only=True)
class EntitlementItem(_OwnedProduct):
    """One entitlement (v9 ``publisherQuery`` item).

    ``quantity`` is the remaining balance of a consumable.
    """

    recurrence_data: str | None = None
    """v9: a string (the id to use with the subscription calls)."""


@attrs.frozen(kw_only=True)
class LicenseItem(_OwnedProduct):
    """One license of the v8 ``b2bLicensePreview`` answer: the v9 fields plus the legacy,
    market and sharing ones; ``recurrence_data`` is an object in v8 (kept as parsed JSON)."""

    recurrence_data: Any = None
    legacy_offer_instance_id: str | None = None
    legacy_product_id: str | None = None
    sharing_source: str | None = None


@attrs.frozen(kw_only=True)
class LicensePage:
    """One page of a v8 query; ``continuation_token`` is set when more pages exist."""

    items: tuple[LicenseItem, ...] = attrs.field(default=(), converter=_tuple)
    continuation_token: str | None = None


@attrs.frozen(kw_only=True)
class EntitlementPage:
    """One page of a v9 query; ``continuation_token`` is set when more pages exist."""

    items: tuple[EntitlementItem, ...] = attrs.field(default=(), converter=_tuple)
    continuation_token: str | None = None
