"""Small, fast checks shared by the whole package: request records, the client, the engine.

Request records are built on the hot path (one :class:`ConsumeRequest` per consume call), so every
check here is a type test or a precompiled regular expression: no exceptions on the success path,
no :class:`uuid.UUID` round trip for a GUID that is already canonical.

Error messages name the field and say what to do; they never repeat the offending value, because
the value may be a secret (a Store ID key, a service ticket).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final, TypeVar
from uuid import UUID, uuid5

from store_async.errors import ValidationError

T = TypeVar("T")

# Canonical form: what we send. Matching it first keeps the common case (a GUID we generated or
# one already normalised) free of any parsing.
_CANONICAL_GUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
)
# Other spellings we accept and normalise: any case, optional braces, or 32 bare hex digits
# (the form the query API uses for item ids).
_HYPHENATED = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ANY_GUID: Final = re.compile(rf"(?:{_HYPHENATED}|\{{{_HYPHENATED}\}}|[0-9a-fA-F]{{32}})\Z")

REDACTED: Final = "<redacted>"


def redact(_value: object) -> str:
    """``repr`` of a secret attribute: never the value."""
    return REDACTED


def new_guid() -> str:
    """A fresh random (version 4) GUID string, lowercase and hyphenated.

    122 random bits from the OS, as :func:`uuid.uuid4` draws them, with the version and variant
    bits set in place; formatting the bytes directly skips the ``UUID`` object and its ``str``,
    which cost more than half of every ``ConsumeRequest.for_item`` call.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


CALLER_KEY_NAMESPACE: Final = UUID("c200f89e-39f8-5bff-8c6f-d71b7d829a58")
"""The namespace of :func:`guid_for_caller_key`: ``uuid5(NAMESPACE_URL,
"https://store-async.invalid/idempotency-key")``. Fixed forever: changing it would change every
derived idempotency key, and a resend after an upgrade would then apply twice."""


def guid_for_caller_key(key: str) -> str:
    """The idempotency key (a version 5 GUID) derived from a caller key such as ``"order-42"``.

    The same caller key gives the same GUID in every process, on every machine, after every
    restart: a web service that resends after a client disconnect, a crash or a retried HTTP
    request sends the same idempotency key, and the Store settles it once (a random GUID per
    attempt would look like a new fulfillment, and a conflicting one). So one caller key must
    name one fulfillment: an order with three items needs three keys (``"order-42/item-1"``...).

    :param key: the caller key, a non-blank string (compared exactly: case and spaces count).
    :raises ValidationError: if ``key`` is not a non-blank string.
    """
    return str(uuid5(CALLER_KEY_NAMESPACE, text(key, "key")))


def guid(value: object, field: str) -> str:
    """Return ``value`` as a lowercase hyphenated GUID string, or raise :class:`ValidationError`.

    Accepts a :class:`uuid.UUID` or a string in 8-4-4-4-12 form (any case, optional braces) or as
    32 hex digits.
    """
    if type(value) is str:
        if _CANONICAL_GUID.match(value):
            return value
        if _ANY_GUID.match(value):
            return str(UUID(value))
        raise ValidationError(
            f"{field} must be a GUID such as '3eea1529-611e-4aee-915c-345494e4ee76' "
            f"(got a {len(value)}-character string that is not one)"
        )
    if isinstance(value, UUID):
        return str(value)
    raise ValidationError(
        f"{field} must be a GUID string or a uuid.UUID, not {type(value).__name__}"
    )


def optional_guid(value: object, field: str) -> str | None:
    """Like :func:`guid`, but ``None`` stays ``None``."""
    if value is None or (type(value) is str and _CANONICAL_GUID.match(value)):
        return value
    return guid(value, field)


def text(value: object, field: str) -> str:
    """Return ``value`` if it is a non-blank string, else raise :class:`ValidationError`."""
    if type(value) is str and value and not value.isspace():
        return value
    if isinstance(value, str):
        raise ValidationError(f"{field} must not be empty")
    raise ValidationError(f"{field} must be a string, not {type(value).__name__}")


def optional_text(value: object, field: str) -> str | None:
    """Like :func:`text`, but ``None`` stays ``None``."""
    return None if value is None else text(value, field)


def aware(value: object, field: str) -> datetime | None:
    """Accept ``None`` or a timezone-aware :class:`datetime`.

    A naive datetime is refused rather than guessed: local time and UTC differ by hours, and a
    query filter that is silently hours off is worse than an error.
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValidationError(
            f"{field} must be timezone-aware; pass e.g. datetime.now(timezone.utc)"
        )
    return value


TUPLE_KEEPERS: Final[set[Callable[..., Any]]] = set()
"""The converters marked by :func:`keeps_tuples`."""


def keeps_tuples(*converters: Callable[..., Any]) -> None:
    """Mark record fields' converters that hand back any tuple they are given, unchanged (as
    :func:`tuple_of` does): the codec, which has built and checked that tuple itself, then skips
    the call (``store_async.codec`` reads this mark; nothing else does). A call, not a
    decorator: mypy's attrs plugin accepts only plain functions as converters."""
    TUPLE_KEEPERS.update(converters)


def tuple_of(value: Iterable[Any], field: str) -> tuple[Any, ...]:
    """Turn any iterable into a tuple, refusing a bare string (which would split into letters)."""
    if type(value) is tuple:
        return value
    if isinstance(value, (str, bytes)):
        raise ValidationError(
            f"{field} must be a list, not a single {type(value).__name__}; wrap it: [value]"
        )
    try:
        return tuple(value)
    except TypeError:
        raise ValidationError(
            f"{field} must be a list or another iterable, not {type(value).__name__}"
        ) from None


def items_of(values: tuple[Any, ...], cls: type[T], field: str) -> None:
    """Check that every element of ``values`` is a ``cls``."""
    for index, item in enumerate(values):
        if not isinstance(item, cls):
            raise ValidationError(
                f"{field}[{index}] must be a {cls.__name__}, not {type(item).__name__}"
            )


def texts_of(values: tuple[Any, ...], field: str) -> None:
    """Check that every element of ``values`` is a non-blank string."""
    for index, item in enumerate(values):
        text(item, f"{field}[{index}]")


def skus_of(values: tuple[Any, ...], field: str) -> None:
    """Check that every ``ProductSkuId`` of ``values`` names its SKU (v6 and v8 queries)."""
    for index, item in enumerate(values):
        if item.sku_id is None:
            raise ValidationError(f"{field}[{index}].sku_id is required by this query")


# -- numbers: seconds, counts, attempts (used by the client, the engine, the policy, the cache) --


def seconds(value: object, field: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite number of seconds (``> 0``, or ``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{field} must be a number of seconds, not {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValidationError(f"{field} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def count(value: object, field: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an ``int`` within ``minimum..maximum`` (``bool`` is refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValidationError(f"{field} must be an int {bound}, got {value!r}")
    return value


def attempts(value: object, field: str = "attempts") -> int:
    """Attempts per call: an ``int`` in 1..100."""
    return count(value, field, minimum=1, maximum=100)


def json_kind(value: Any, *, max_chars: int = 64) -> str:
    """The JSON type of a parsed value, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string" if len(value) <= max_chars else f"a {len(value)}-character string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
