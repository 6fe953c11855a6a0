"""Queue message text -> refund event, or the reason it cannot be one.

The Store writes each event as base64 of its JSON; Microsoft's own library decodes it as
base64url. Both alphabets are accepted, with or without ``=`` padding (never mixed in one
text). A message that is not base64, not a JSON object, has no string ``id``, or whose fields
have the wrong types is *rejected*: it is recorded with its raw text and a reason, and
deleted, so it never loops and nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

import attrs
import orjson

from store_async.codec import structure
from store_async.errors import ResponseFormatError
from store_async.models.refunds import RefundEvent

__all__ = ["DecodedEvent", "Rejection", "decode_message", "decode_text"]

_STANDARD: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")
_URLSAFE: Final = re.compile(r"[A-Za-z0-9\-_]*={0,2}\Z")
_TO_STANDARD: Final = str.maketrans("-_", "+/")
_MAX_REASON: Final = 300


@attrs.frozen(kw_only=True)
class DecodedEvent:
    """A readable message: the typed event and its JSON exactly as decoded (as received)."""

    event: RefundEvent
    json: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Rejection:
    """An unreadable message: why, and its raw text (kept whole in the journal)."""

    reason: str
    text: str = attrs.field(repr=False)


def decode_text(text: str) -> bytes:
    """The bytes behind base64 or base64url ``text``, padded or not.

    :raises ValueError: not base64 in either alphabet (mixed alphabets, bad length, stray
        characters).
    """
    compact = "".join(text.split())  # line breaks from MIME-style encoders
    if not compact:
        raise ValueError("the message is empty")
    if _STANDARD.match(compact):
        standard = compact
    elif _URLSAFE.match(compact):
        standard = compact.translate(_TO_STANDARD)
    else:
        raise ValueError("the message is not base64 or base64url text")
    unpadded = standard.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise ValueError("the message is not base64: its length is impossible")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the message is not base64 text") from None


def decode_message(text: str) -> DecodedEvent | Rejection:
    """Decode one message text; never raises for any text."""
    try:
        raw = decode_text(text)
    except ValueError as error:
        return Rejection(reason=str(error), text=text)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Rejection(reason=f"the decoded message is not JSON ({error.msg})", text=text)
    if not isinstance(document, dict):
        return Rejection(reason="the decoded message is not a JSON object", text=text)
    event_id = document.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        return Rejection(reason="the event has no id (a non-empty string)", text=text)
    try:
        event = structure(document, RefundEvent)
    except ResponseFormatError as error:
        return Rejection(reason=f"event {event_id[:80]!r}: {error}"[:_MAX_REASON], text=text)
    return DecodedEvent(event=event, json=raw)
