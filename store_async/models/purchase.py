"""Grant free products: ``POST /v6.0/purchases/grant`` and its ``OrderV6`` answer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models.identities import IdentityV6

__all__ = ["ClientContext", "GrantRequest", "Order", "OrderLineItem"]


def _order_id(value: str | UUID) -> str:
    return _checks.guid(value, "GrantRequest.order_id")


def _line_items(value: Iterable[OrderLineItem]) -> tuple[OrderLineItem, ...]:
    return _checks.tuple_of(value, "Order.order_line_items")


_checks.keeps_tuples(_line_items)


@attrs.frozen(kw_only=True)
class GrantRequest:
    """Grant a free app or add-on to the user whose purchase key is ``b2b_key``.

    ``order_id`` is the idempotency key: a GUID generated here unless you pass one. Resending the
    same order id for the same user does not grant twice, so persist it before sending.
    ``quantity`` can only be 1 (the service supports nothing else) and is left out of the body,
    as in the documented example.

    Raises :class:`~store_async.errors.ValidationError` for an empty field, a malformed order id
    or a quantity other than 1.
    """

    availability_id: str
    """The availability id of the product in the Store catalog."""
    b2b_key: str = attrs.field(repr=_checks.redact)
    """The user's **purchase** Store ID key. Secret."""
    language: str
    """The user's language, e.g. ``en-us``."""
    market: str
    """The user's market, e.g. ``us``."""
    product_id: str
    sku_id: str
    order_id: str = attrs.field(factory=_checks.new_guid, converter=_order_id)
    """A GUID unique for this user's order (generated when not given)."""
    quantity: int = 1
    dev_offer_id: str | None = None
    """Your offer id; it appears on the collection item after the grant."""
    sandbox_id: str | None = None
    """The ``sbx`` of a development sandbox: the grant then goes to ``/v7.0/purchases/grant``
    (``None``: RETAIL, through v6)."""

    def __attrs_post_init__(self) -> None:
        _checks.text(self.availability_id, "GrantRequest.availability_id")
        _checks.text(self.b2b_key, "GrantRequest.b2b_key")
        _checks.text(self.language, "GrantRequest.language")
        _checks.text(self.market, "GrantRequest.market")
        _checks.text(self.product_id, "GrantRequest.product_id")
        _checks.text(self.sku_id, "GrantRequest.sku_id")
        if type(self.quantity) is not int or self.quantity != 1:
            raise ValidationError("GrantRequest.quantity must be 1: the Store grants one at a time")
        _checks.optional_text(self.dev_offer_id, "GrantRequest.dev_offer_id")
        _checks.optional_text(self.sandbox_id, "GrantRequest.sandbox_id")

    @property
    def idempotency_key(self) -> str:
        """The GUID that makes resending this request safe: the ``order_id``."""
        return self.order_id

    @classmethod
    def for_caller_key(
        cls,
        key: str,
        *,
        availability_id: str,
        b2b_key: str,
        language: str,
        market: str,
        product_id: str,
        sku_id: str,
        dev_offer_id: str | None = None,
    ) -> GrantRequest:
        """A grant whose ``order_id`` is derived from your own id (a caller key, e.g.
        ``"order-42"``) with :func:`~store_async.models.guid_for_caller_key`: the same key
        gives the same order id on every resend, so a retried web request grants once.

        :raises ValidationError: for a blank ``key`` or any invalid field.
        """
        return cls(
            availability_id=availability_id,
            b2b_key=b2b_key,
            language=language,
            market=market,
            product_id=product_id,
            sku_id=sku_id,
            order_id=_checks.guid_for_caller_key(key),
            dev_offer_id=dev_offer_id,
        )


@attrs.frozen(kw_only=True)
class ClientContext:
    """``ClientContextV6``: which client created an order (your Entra app's client id)."""

    client: str | None = None


@attrs.frozen(kw_only=True)
class OrderLineItem:
    """``OrderLineItemV6``: one line of an :class:`Order`. Money is :class:`~decimal.Decimal`."""

    line_item_id: str
    product_id: str
    sku_id: str
    availability_id: str
    product_type: str
    """``Durable``, ``Application``, ``UnmanagedConsumable`` (or a newer value)."""
    quantity: int
    title: str
    """The localized title (``Title`` in the docs' table, ``title`` in their example)."""
    description: str
    currency_code: str
    list_price: Decimal
    retail_price: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    tax_type: str
    is_pi_required: bool
    """Whether a payment instrument is required (wire name ``isPIRequired``)."""
    is_tax_included: bool
    revenue_recognition_state: str
    agent: IdentityV6 | None = None
    beneficiary: IdentityV6 | None = None
    billing_state: str | None = None
    """``Charged`` once completed."""
    campaign_id: str | None = None
    dev_offer_id: str | None = None
    fulfillment_date: datetime | None = None
    fulfillment_state: str | None = None
    """``Fulfilled`` once completed."""
    legacy_billing_order_id: str | None = None


@attrs.frozen(kw_only=True)
class Order:
    """``OrderV6``: the answer to a grant.

    Fields the docs mark required and show in their example are required here. The docs' example
    lacks ``friendlyName``, ``totalAmountBeforeTax`` and ``totalChargedToCsvTopOffPI``, and the
    order validity times are "N/A for free apps", so those are optional. ``order_state`` is a
    plain string (``Editing``, ``CheckingOut``, ``Pending``, ``Purchased``, ``Refunded``,
    ``ChargedBack``, ``Cancelled``, or a newer value).
    """

    order_id: str
    order_state: str
    created_time: datetime
    """When the order was created (``createdtime`` in the docs' table, ``createdTime`` in the
    example; both are read)."""
    purchaser: IdentityV6
    client_context: ClientContext
    language: str
    market: str
    currency_code: str
    is_pi_required: bool
    total_amount: Decimal
    total_tax_amount: Decimal
    order_line_items: tuple[OrderLineItem, ...] = attrs.field(default=(), converter=_line_items)
    friendly_name: str | None = None
    order_validity_start_time: datetime | None = None
    order_validity_end_time: datetime | None = None
    total_amount_before_tax: Decimal | None = None
    total_charged_to_csv_top_off_pi: Decimal | None = None
    """Amount charged to stored value (wire name ``totalChargedToCsvTopOffPI``)."""
