"""``MS-CV`` correlation vectors: one base per call, ``<base>.<N>`` on attempt *N*.

Microsoft's Correlation Vector v2: a base of 22 base64 characters (128 bits; so the last
character carries only 2 bits and is one of ``A``, ``Q``, ``g``, ``w``), then dot-separated
decimal elements; at most 127 characters in all. Microsoft support finds a request by it.

A fresh base per call must cost next to nothing on the fast path, so a client's bases
(:func:`first_vectors`) are 72 random bits, drawn once, followed by a 56-bit call counter: the
counter's high 48 bits are re-encoded once per 256 calls, its low 8 bits come from a table of
ready strings. Bases are unique per client (the counter) and across clients and processes (the
random bits).

A caller's own ``client_request_id=`` becomes the base instead (:func:`check_client_request_id`):
a CV base (16 or 22 base64 characters) optionally extended by elements (``<base>.3``, an incoming
request's vector), so the Store's vector continues the caller's.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import Final

from store_async.errors import ValidationError

__all__ = ["MAX_CLIENT_REQUEST_ID", "check_client_request_id", "first_vectors"]

_B64: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_LAST: Final = "AQgw"  # the 22nd character of a 128-bit base: its low 4 bits are padding
_TAILS: Final = tuple(_B64[low >> 2] + _LAST[low & 3] for low in range(256))
_FIRSTS: Final = tuple(tail + ".1" for tail in _TAILS)  # a first attempt's vector, ready-made
_HIGH_MASK: Final = (1 << 48) - 1
MAX_CLIENT_REQUEST_ID: Final = 120
"""Longest ``client_request_id``: the vector stays within the 127 characters of CV v2 with room
for ``.<attempt>``."""
_CLIENT_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9+/]{16}(?:[A-Za-z0-9+/]{6})?(?:\.[0-9]{1,10})*")


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_B64[value & 63])
        value >>= 6
    return "".join(reversed(chars))


def _prefixes(random: str) -> Iterator[str]:
    for high in itertools.count():
        yield random + _encode(high & _HIGH_MASK, 8)


def _firsts(prefix: str) -> Iterator[str]:
    return map(prefix.__add__, _FIRSTS)


def first_vectors() -> Iterator[str]:
    """Fresh calls' first-attempt vectors (``<base>.1``), one per ``next()``: a base's 72
    random bits are drawn here, once. ``next()`` runs in C but once per 256 calls (a plain
    method call would cost several times more on the fast path)."""
    random = _encode(int.from_bytes(os.urandom(9)), 12)
    return itertools.chain.from_iterable(map(_firsts, _prefixes(random)))


def check_client_request_id(value: object) -> str:
    """Validate a caller's ``client_request_id`` (the base of its calls' ``MS-CV``).

    :raises ValidationError: not a string of a CV base (16 or 22 characters of
        ``A-Z a-z 0-9 + /``) optionally followed by ``.<number>`` elements, at most
        :data:`MAX_CLIENT_REQUEST_ID` characters.
    """
    if (
        not isinstance(value, str)
        or len(value) > MAX_CLIENT_REQUEST_ID
        or _CLIENT_REQUEST_ID.fullmatch(value) is None
    ):
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise ValidationError(
            f"client_request_id must be a correlation-vector base: 16 or 22 characters of "
            f"A-Z a-z 0-9 + /, optionally extended with .<number> elements, at most "
            f"{MAX_CLIENT_REQUEST_ID} characters in all (got {shown})"
        )
    return value
