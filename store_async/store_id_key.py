"""Microsoft Store ID keys: read the claims of a key, without verifying it.

A Store ID key ("b2b key") is a JWT that a client app mints for the signed-in Store user and
hands to your service. Your service passes it, untouched, in the ``identityValue`` of query and
consume calls (a *collections* key) or in grant calls (a *purchase* key), and renews it before
it expires. Only the Store can check the signature, so this module never tries: it decodes the
claims to tell which kind of key it is, who it belongs to and when to renew it.

    >>> key = StoreIdKey.parse(received_key)                      # doctest: +SKIP
    >>> key.kind, key.user_id, key.expires_at                     # doctest: +SKIP
    (<StoreIdKeyKind.COLLECTIONS: 'collections'>, 'user-42', datetime(...))
    >>> if key.needs_refresh():                                   # doctest: +SKIP
    ...     key = await store.renew_store_id_key(key)

The key is a secret (anyone holding it can act for that user): :attr:`StoreIdKey.value` holds
it for sending, but no ``repr``, ``str`` or error message ever shows it, nor its opaque
``payload`` claim, which is not kept at all.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import orjson

from store_async.errors import InvalidStoreIdKeyError, ValidationError

__all__ = [
    "MAX_KEY_LENGTH",
    "REFRESH_AGE",
    "StoreIdKey",
    "StoreIdKeyKind",
]

MAX_KEY_LENGTH: Final = 16 * 1024
"""Longest key :meth:`StoreIdKey.parse` reads, in characters. Real keys are 1-2 KiB; the cap
keeps a pasted log file or a hostile request from costing more than a moment."""

REFRESH_AGE: Final = timedelta(days=14)
"""Age after which a key is renewed: the policy of Microsoft's C# library (Microsoft.StoreServices),
well inside both the old 90-day and the new 30-day lifetime."""

_CLAIM_PREFIX: Final = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
CLIENT_ID_CLAIM: Final = _CLAIM_PREFIX + "clientId"
USER_ID_CLAIM: Final = _CLAIM_PREFIX + "userId"
REFRESH_URI_CLAIM: Final = _CLAIM_PREFIX + "refreshUri"
PAYLOAD_CLAIM: Final = _CLAIM_PREFIX + "payload"

COLLECTIONS_AUDIENCE: Final = "https://collections.mp.microsoft.com/v6.0/keys"
PURCHASE_AUDIENCE: Final = "https://purchase.mp.microsoft.com/v6.0/keys"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# One JWT segment: unpadded base64url (padding tolerated, other characters are not; the stdlib
# decoder would silently skip them).
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# The path of an audience: /v6.0/keys today; any version is accepted for the day it changes.
_AUDIENCE_PATH: Final = re.compile(r"/v\d+(?:\.\d+)?/keys/?", re.IGNORECASE)


class StoreIdKeyKind(enum.StrEnum):
    """What a key is for, told apart by its ``aud`` claim (as Microsoft's library does)."""

    COLLECTIONS = "collections"
    """For the Collections API: query and consume (``aud`` ``https://collections.mp...``)."""
    PURCHASE = "purchase"
    """For the Purchase API: grant and subscriptions (``aud`` ``https://purchase.mp...``)."""


_KIND_BY_AUDIENCE: Final = {
    COLLECTIONS_AUDIENCE: StoreIdKeyKind.COLLECTIONS,
    PURCHASE_AUDIENCE: StoreIdKeyKind.PURCHASE,
}
_KIND_BY_HOST_LABEL: Final = {kind.value: kind for kind in StoreIdKeyKind}


@attrs.frozen(kw_only=True, repr=False)
class StoreIdKey:
    """The decoded claims of a Store ID key, and the key itself (never shown).

    Build one with :meth:`parse`. Two keys are equal when their :attr:`value` is equal (every
    other attribute is derived from it).

    **Times are taken as written.** The Dec 2024 documentation example has ``exp`` one hour
    *before* ``iat`` and ``nbf`` 30 days after it: the two look swapped. We do not guess: such a
    key parses, :attr:`expires_at` is its ``exp``, so :meth:`is_expired` and
    :meth:`needs_refresh` are true from the start and a caller renews it at once, which is the
    safe side (the Store itself would refuse a key past its ``exp`` for anything but renewal).
    :attr:`has_inconsistent_times` flags such keys for diagnostics.
    """

    value: str = attrs.field(eq=True)
    """The raw key, exactly as it is sent to the Store (a secret)."""
    kind: StoreIdKeyKind = attrs.field(eq=False)
    """Collections or purchase key, from ``aud``."""
    audience: str = attrs.field(eq=False)
    """The ``aud`` claim, e.g. ``https://collections.mp.microsoft.com/v6.0/keys``."""
    client_id: str = attrs.field(eq=False)
    """The developer's client id (``.../key/clientId``); it must match the token's ``appid``."""
    user_id: str | None = attrs.field(eq=False)
    """The ``publisherUserId`` the client app passed (``.../key/userId``); ``None`` if absent."""
    refresh_uri: str = attrs.field(eq=False)
    """Where to renew the key (``.../key/refreshUri``)."""
    issued_at: datetime = attrs.field(eq=False)
    """``iat``, aware UTC."""
    expires_at: datetime = attrs.field(eq=False)
    """``exp``, aware UTC: after it the Store accepts the key only for renewal (if at all)."""
    not_before: datetime | None = attrs.field(eq=False)
    """``nbf``, aware UTC; ``None`` if the key has none."""
    refresh_after: datetime = attrs.field(
        eq=False, default=attrs.Factory(lambda self: self.issued_at + REFRESH_AGE, takes_self=True)
    )
    """When to renew: :data:`REFRESH_AGE` (14 days) after ``iat``."""

    @classmethod
    def parse(cls, jwt: str) -> StoreIdKey:
        """Decode a Store ID key's claims. The signature is **not** verified (only the Store can).

        Surrounding whitespace is ignored. Required claims: ``aud`` (a collections or purchase
        keys audience), ``iat``, ``exp`` (JSON numbers, epoch seconds), ``.../key/clientId`` and
        ``.../key/refreshUri`` (strings). ``nbf`` and ``.../key/userId`` may be absent (the docs
        call ``publisherUserId`` optional) but must have the right type when present. Other
        claims are ignored; the opaque ``payload`` is not kept.

        Raises:
            InvalidStoreIdKeyError: the text is not such a key. The message says what is wrong
                and never contains the key.
        """
        if not isinstance(jwt, str):
            raise InvalidStoreIdKeyError(f"a Store ID key must be a str, got {type(jwt).__name__}")
        if len(jwt) > MAX_KEY_LENGTH:
            raise InvalidStoreIdKeyError(
                f"Store ID key is too long: {len(jwt)} characters (at most {MAX_KEY_LENGTH})"
            )
        value = jwt.strip()
        if not value:
            raise InvalidStoreIdKeyError("Store ID key is empty")
        parts = value.split(".")
        if len(parts) != 3:
            raise InvalidStoreIdKeyError(
                f"Store ID key is not a JWT: expected 3 dot-separated parts, got {len(parts)}"
            )
        header_segment, claims_segment, signature_segment = parts
        _decode_json_object(header_segment, "header")
        claims = _decode_json_object(claims_segment, "claims")
        if not _SEGMENT.fullmatch(signature_segment):
            raise InvalidStoreIdKeyError("Store ID key signature segment is not base64url")

        audience, kind = _audience(claims)
        issued_at = _time(claims, "iat")
        try:
            refresh_after = issued_at + REFRESH_AGE
        except OverflowError:
            raise InvalidStoreIdKeyError("Store ID key claim 'iat' is out of range") from None
        not_before = _time(claims, "nbf") if "nbf" in claims else None
        return cls(
            value=value,
            kind=kind,
            audience=audience,
            client_id=_text(claims, CLIENT_ID_CLAIM),
            user_id=_text(claims, USER_ID_CLAIM) if USER_ID_CLAIM in claims else None,
            refresh_uri=_text(claims, REFRESH_URI_CLAIM),
            issued_at=issued_at,
            expires_at=_time(claims, "exp"),
            not_before=not_before,
            refresh_after=refresh_after,
        )

    @property
    def has_inconsistent_times(self) -> bool:
        """True when ``exp`` is not after ``iat``, or ``nbf`` is not before ``exp``.

        The new documentation example is such a key (``exp`` and ``nbf`` look swapped). It is
        still accepted; see the class docstring.
        """
        if self.expires_at <= self.issued_at:
            return True
        return self.not_before is not None and self.not_before >= self.expires_at

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once ``now`` (default: the current time) reaches ``exp``, as written."""
        return _now(now) >= self.expires_at

    def needs_refresh(self, now: datetime | None = None) -> bool:
        """True once the key is older than :attr:`refresh_after`, or expired."""
        moment = _now(now)
        return moment >= self.refresh_after or moment >= self.expires_at

    def __repr__(self) -> str:
        return (
            f"StoreIdKey(kind={self.kind.value}, user_id={self.user_id!r}, "
            f"client_id={self.client_id!r}, expires_at={self.expires_at.isoformat()})"
        )

    def __str__(self) -> str:
        user = "no user id" if self.user_id is None else f"user {self.user_id!r}"
        return (
            f"{self.kind.value} Store ID key for {user} (client {self.client_id}), "
            f"expires {self.expires_at.isoformat()}"
        )


def _decode_json_object(segment: str, part: str) -> dict[str, Any]:
    """Decode one base64url JWT segment holding a JSON object ("header" or "claims")."""
    if not segment or not _SEGMENT.fullmatch(segment):
        raise InvalidStoreIdKeyError(f"Store ID key {part} segment is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidStoreIdKeyError(f"Store ID key {part} segment is not base64url") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidStoreIdKeyError(f"Store ID key {part} segment is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidStoreIdKeyError(f"Store ID key {part} segment is not a JSON object")
    return document


def _claim(claims: dict[str, Any], name: str) -> Any:
    try:
        return claims[name]
    except KeyError:
        raise InvalidStoreIdKeyError(f"Store ID key claim {name!r} is missing") from None


def _text(claims: dict[str, Any], name: str) -> str:
    value = _claim(claims, name)
    if not isinstance(value, str):
        raise InvalidStoreIdKeyError(
            f"Store ID key claim {name!r} must be a string, got {_json_type(value)}"
        )
    return value


def _time(claims: dict[str, Any], name: str) -> datetime:
    """An epoch-seconds claim as an aware UTC datetime (JSON numbers only, not strings)."""
    value = _claim(claims, name)
    # bool is an int in Python, but `true` is no time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidStoreIdKeyError(
            f"Store ID key claim {name!r} must be a number of seconds since the epoch, "
            f"got {_json_type(value)}"
        )
    try:
        if not math.isfinite(value):
            raise OverflowError
        return _EPOCH + timedelta(seconds=value)
    except OverflowError:
        raise InvalidStoreIdKeyError(f"Store ID key claim {name!r} is out of range") from None


def _audience(claims: dict[str, Any]) -> tuple[str, StoreIdKeyKind]:
    """The ``aud`` claim and the kind it names; a JWT may also carry a list of audiences."""
    value = _claim(claims, "aud")
    candidates = value if isinstance(value, list) else [value]
    if not candidates or not all(isinstance(item, str) for item in candidates):
        raise InvalidStoreIdKeyError(
            f"Store ID key claim 'aud' must be a string, got {_json_type(value)}"
        )
    found = [(item, kind) for item in candidates if (kind := _kind_of(item)) is not None]
    if len({kind for _, kind in found}) == 1:
        return found[0]
    shown = ", ".join(repr(item[:100]) for item in candidates[:3])
    reason = "names both kinds" if found else "is not a Store ID key audience"
    raise InvalidStoreIdKeyError(
        f"Store ID key claim 'aud' {reason} (expected {COLLECTIONS_AUDIENCE} or "
        f"{PURCHASE_AUDIENCE}, got {shown})"
    )


def _kind_of(audience: str) -> StoreIdKeyKind | None:
    """Which kind an audience names; lenient about host variants and API versions.

    ``https://collections.md.mp.microsoft.com/v7.0/keys`` is a collections audience: the first
    DNS label names the API family and the path ends in ``/v<version>/keys``.
    """
    kind = _KIND_BY_AUDIENCE.get(audience)
    if kind is not None:
        return kind
    try:
        parts = urlsplit(audience.strip())
        host = parts.hostname or ""
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme.lower() not in ("https", "http") or not _AUDIENCE_PATH.fullmatch(parts.path):
        return None
    return _KIND_BY_HOST_LABEL.get(host.split(".", 1)[0])


def _json_type(value: Any) -> str:
    """The JSON type name of a decoded value (for messages that must not echo the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValidationError("now must be a timezone-aware datetime")
    return now
