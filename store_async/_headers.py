"""Request headers: what a caller (``headers=``) or a start hook may add, and what they may not.

The client owns ``Authorization``, ``Content-Type``, ``User-Agent`` and ``MS-CV`` (and the
framing headers aiohttp sets). A caller's per-call ``headers=`` naming one of them is refused
with :class:`~store_async.errors.ValidationError` (a mistake to fix, said at once, before
anything is sent); a hook's added header naming one is dropped (a hook never fails a call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from multidict import CIMultiDict

from store_async.errors import ValidationError

__all__ = ["RESERVED_HEADERS", "check_headers", "merge_added"]

RESERVED_HEADERS: Final = frozenset(
    (
        "authorization",
        "content-type",
        "content-length",
        "host",
        "ms-cv",
        "transfer-encoding",
        "user-agent",
    )
)
"""Request headers the client owns: a caller's ``headers=`` may not set them (ValidationError)
and a hook's added headers naming them are dropped."""
_TOKEN: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def check_headers(headers: object) -> tuple[tuple[str, str], ...] | None:
    """A caller's per-call ``headers=``, checked once per call.

    :raises ValidationError: not a mapping of strings, a name that is not an HTTP token, a
        value with a control character, or a header the client sets itself
        (:data:`RESERVED_HEADERS`).
    """
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise ValidationError(
            f"headers must be a mapping of header names to values, not {type(headers).__name__}"
        )
    pairs = []
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not _TOKEN.issuperset(name):
            raise ValidationError(f"headers: {name!r} is not a valid HTTP header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(
                f"headers: {name} is set by the client itself and cannot be given per call "
                f"(reserved: Authorization, Content-Type, Content-Length, Host, MS-CV, "
                f"Transfer-Encoding, User-Agent; pass client_request_id= to set MS-CV's base)"
            )
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
            raise ValidationError(f"headers: the value of {name} must be a printable string")
        pairs.append((name, value))
    return tuple(pairs) or None


def merge_added(headers: CIMultiDict[str], added: dict[str, str]) -> None:
    """Headers a start hook added (``traceparent``...): they replace a caller's of the same
    name; ours (:data:`RESERVED_HEADERS`) and malformed ones are dropped: a hook cannot fail a
    call, nor change what the client owns."""
    for name, value in added.items():
        if (
            isinstance(name, str)
            and name
            and _TOKEN.issuperset(name)
            and name.lower() not in RESERVED_HEADERS
            and isinstance(value, str)
            and value.isascii()
            and value.isprintable()
        ):
            headers[name] = value
