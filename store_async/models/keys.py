"""Renew a Store ID key: ``POST /v6.0/b2b/keys/renew`` (docs/store-api.md section 5)."""

from __future__ import annotations

import attrs

from store_async.models import _checks

__all__ = ["KeyRenewalRequest", "KeyRenewalResponse"]


@attrs.frozen(kw_only=True)
class KeyRenewalRequest:
    """The renewal body. Both fields are secrets and never shown by ``repr``/``str``.

    This call has no ``Authorization`` header: the access token travels in the body as
    ``service_ticket``.
    """

    service_ticket: str = attrs.field(repr=_checks.redact)
    """An Entra ID access token for ``https://onestore.microsoft.com``."""
    key: str = attrs.field(repr=_checks.redact)
    """The Store ID key to renew."""

    def __attrs_post_init__(self) -> None:
        _checks.text(self.service_ticket, "KeyRenewalRequest.service_ticket")
        _checks.text(self.key, "KeyRenewalRequest.key")


@attrs.frozen(kw_only=True)
class KeyRenewalResponse:
    """The renewed Store ID key (secret; never shown by ``repr``/``str``)."""

    key: str = attrs.field(repr=_checks.redact)
