"""A user's orders of the last 90 days: ``POST /v8.0/b2b/orders/query`` (clawback v1; docs/
store-api.md sections 9 and 10).

Deprecated for refund detection (the event queue, clawback v2, replaces it) but still the way to
learn an order's ``shortOrderId`` (the number the user sees) and to recover the order ids of a
v8 consume whose answer carried none. Its documented example has invalid dates, so the dates
are kept as sent and read per field (:attr:`PurchaseOrder.purchased_at`): one bad date does not
cost the page.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models._time import parse_timestamp

__all__ = [
    "LINE_ITEM_STATES",
    "OrderPage",
    "OrderQuery",
    "PurchaseLineItem",
    "PurchaseOrder",
]

LINE_ITEM_STATES: Final = frozenset(("Purchased", "Revoked", "Refunded"))
"""The documented ``lineItemStateFilter`` values."""


def _optional_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else _checks.tuple_of(value, "line_item_state_filter")


def _tuple(value: Iterable[object] | None) -> tuple[object, ...]:
    return () if value is None else _checks.tuple_of(value, "list")


_checks.keeps_tuples(_tuple)


@attrs.frozen(kw_only=True)
class OrderQuery:
    """Orders of the user whose **purchase** Store ID key is ``b2b_key``.

    ``line_item_state_filter`` is a list (``Purchased``, ``Revoked``, ``Refunded``).

    :raises ValidationError: an empty key, an empty filter list or an empty state.
    """

    b2b_key: str = attrs.field(repr=_checks.redact)
    """The user's **purchase** Store ID key. Secret."""
    line_item_state_filter: tuple[str, ...] | None = attrs.field(
        default=None, converter=_optional_tuple
    )
    continuation_token: str | None = None
    """Accepted if the service pages (the docs show no paging)."""
    sandbox_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _checks.text(self.b2b_key, "OrderQuery.b2b_key")
        states = self.line_item_state_filter
        if states is not None:
            if not states:
                raise ValidationError(
                    "OrderQuery.line_item_state_filter needs at least one state, or None for all"
                )
            _checks.texts_of(states, "OrderQuery.line_item_state_filter")
        _checks.optional_text(self.continuation_token, "OrderQuery.continuation_token")
        _checks.optional_text(self.sandbox_id, "OrderQuery.sandbox_id")

    def with_continuation(self, token: str | None) -> OrderQuery:
        return attrs.evolve(self, continuation_token=token)


@attrs.frozen(kw_only=True)
class PurchaseLineItem:
    """One line of a :class:`PurchaseOrder`."""

    line_item_id: str
    line_item_state: str | None = None
    """``Purchased``, ``Revoked``, ``Refunded`` (or a newer value)."""
    product_id: str | None = None
    sku_id: str | None = None
    quantity: int | None = None
    was_consumable_quantity_revoked: bool | None = None


@attrs.frozen(kw_only=True)
class PurchaseOrder:
    """One order of the user (clawback v1 item)."""

    order_id: str
    short_order_id: str | None = None
    """The order number the user sees (typed GUID in the docs, e.g. ``"8483143756"``)."""
    order_purchased_date: str | None = None
    """As sent; see :attr:`purchased_at`."""
    order_refunded_date: str | None = None
    """As sent; see :attr:`refunded_at`."""
    order_line_items: tuple[PurchaseLineItem, ...] = attrs.field(default=(), converter=_tuple)

    @property
    def purchased_at(self) -> datetime | None:
        """:attr:`order_purchased_date` read, or ``None`` if absent or not a date-time."""
        return parse_timestamp(self.order_purchased_date)

    @property
    def refunded_at(self) -> datetime | None:
        """:attr:`order_refunded_date` read, or ``None`` if absent or not a date-time."""
        return parse_timestamp(self.order_refunded_date)


@attrs.frozen(kw_only=True)
class OrderPage:
    """The orders of one answer; ``continuation_token`` when the service pages."""

    items: tuple[PurchaseOrder, ...] = attrs.field(default=(), converter=_tuple)
    continuation_token: str | None = None
