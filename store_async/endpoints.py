"""Where each API family lives: the Collections, Purchase and Store for Business hosts."""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

import attrs

from store_async.errors import ValidationError

__all__ = ["Endpoints"]

COLLECTIONS_PRODUCTION: Final = "https://collections.mp.microsoft.com"
PURCHASE_PRODUCTION: Final = "https://purchase.mp.microsoft.com"
BUSINESS_PRODUCTION: Final = "https://bspmts.mp.microsoft.com"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(value: str) -> str:
    """Validate one base URL: https anywhere, plain http only on loopback; no query/fragment."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"an endpoint must be a non-empty URL string, got {value!r}")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:
        # Not echoed: an unparsable URL may still hold user:password.
        raise ValidationError("an endpoint is not a valid URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError(f"an endpoint must be an absolute http(s) URL, got {value!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValidationError(
            f"plain http:// is refused for non-loopback host {host!r}: bearer tokens and "
            "Store ID keys would cross the network in clear text; use https://"
        )
    if parts.username or parts.password:
        # Not echoed: the URL itself holds a secret.
        raise ValidationError(f"an endpoint must not carry credentials (host {host!r})")
    if parts.query or parts.fragment:
        # Not echoed: a query may hold a token (?code=..., ?sig=...).
        raise ValidationError(f"an endpoint must not carry a query or a fragment (host {host!r})")
    return value.rstrip("/")


@attrs.frozen(kw_only=True)
class Endpoints:
    """Base URLs of the three API families (no trailing slash).

    Use :meth:`production` for Microsoft's hosts or :meth:`single` to send everything to one
    server, such as :class:`store_async.emulator.StoreEmulator`.
    """

    collections: str = attrs.field(converter=_base_url)
    """Collections API (query, consume, collections key renewal)."""
    purchase: str = attrs.field(converter=_base_url)
    """Purchase API (grant, subscriptions, clawback, purchase key renewal)."""
    business: str = attrs.field(converter=_base_url)
    """Microsoft Store for Business API (offline licenses, inventory, seats)."""

    @classmethod
    def production(cls) -> Endpoints:
        """Microsoft's production hosts."""
        return cls(
            collections=COLLECTIONS_PRODUCTION,
            purchase=PURCHASE_PRODUCTION,
            business=BUSINESS_PRODUCTION,
        )

    @classmethod
    def single(cls, url: str) -> Endpoints:
        """Route every API family to one base URL (an emulator or a staging proxy)."""
        return cls(collections=url, purchase=url, business=url)
