"""Who and what a call is about: user identities and product/SKU pairs."""

from __future__ import annotations

from typing import Final

import attrs

from store_async.models import _checks

__all__ = ["B2B", "IdentityV6", "ProductSkuId", "UserIdentity"]

B2B: Final = "b2b"
"""The ``identityType`` of a :class:`UserIdentity` that carries a Store ID key."""


@attrs.frozen(kw_only=True)
class UserIdentity:
    """The user a collections call acts for (the ``UserIdentity`` object of the docs).

    ``identity_value`` is the user's Microsoft Store ID key (collections or purchase key): a
    secret, never shown by ``repr``/``str``. ``local_ticket_reference`` is echoed back in every
    returned item; Microsoft suggests the key's ``userId`` claim.

    Raises :class:`~store_async.errors.ValidationError` for a missing or empty field.
    """

    identity_value: str = attrs.field(repr=_checks.redact)
    """The Store ID key (a JWT). Secret."""
    local_ticket_reference: str
    """Your reference for this user, echoed back in query results."""
    identity_type: str = B2B
    """Always ``"b2b"`` for the collections and purchase APIs."""

    def __attrs_post_init__(self) -> None:
        _checks.text(self.identity_value, "UserIdentity.identity_value")
        _checks.text(self.local_ticket_reference, "UserIdentity.local_ticket_reference")
        _checks.text(self.identity_type, "UserIdentity.identity_type")


@attrs.frozen(kw_only=True)
class IdentityV6:
    """An identity in a response: the purchaser of an item or order (``IdentityV6`` or
    ``IdentityContractV6`` in the docs).

    ``identity_type`` is ``"pub"`` and ``identity_value`` the publisher user id you put in the
    Store ID key: your own user id, not a secret.
    """

    identity_type: str
    identity_value: str


@attrs.frozen(kw_only=True)
class ProductSkuId:
    """A product and one of its SKUs: ``ProductSkuId(product_id="9NBLGGH42CFD", sku_id="0010")``.

    The v9 entitlement query takes a product without a SKU (``sku_id=None``: every SKU); the
    v6 and v8 queries need both, and refuse a pair without a SKU.

    Raises :class:`~store_async.errors.ValidationError` for a missing or empty field.
    """

    product_id: str
    """The Store ID of the product (12 characters, e.g. ``9NBLGGH42CFD``)."""
    sku_id: str | None = None
    """The Store ID of the SKU (e.g. ``0010``)."""

    def __attrs_post_init__(self) -> None:
        _checks.text(self.product_id, "ProductSkuId.product_id")
        _checks.optional_text(self.sku_id, "ProductSkuId.sku_id")
