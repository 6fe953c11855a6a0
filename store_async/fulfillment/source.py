"""Read fulfillments from a JSON Lines file, streamed, with a precise error per bad line.

One fulfillment per line, in one of three forms::

    {"key": "order-1", "beneficiary": {"identityValue": "<Store ID key>",
     "localTicketReference": "user-1"}, "itemId": "...", "trackingId": "<guid>"}
    {"key": "order-2", "beneficiary": {...}, "productId": "9NBLGGH4R315",
     "transactionId": "<guid>"}
    {"key": "order-3", "beneficiary": {...}, "productId": "9NBLGGH4R315", "quantity": 3}

The third is a v8 consume (``/v8.0/collections/consume``) of ``quantity`` units, with optional
``trackingId`` (else derived from ``key``, the same on every run), ``sandboxId`` (``sbx``) and
``includeOrderIds`` (default ``true``: the journal keeps the order ids of the first answer).
``newQuantity`` and ``orderTransactions`` (what ``store-async journal --export done`` writes
beside a done row) are read and ignored.

- ``key`` is the caller's own id for the fulfillment (an order id...). It may be left out when
  the line carries its own idempotency key, ``trackingId`` or ``transactionId``: that GUID is
  then the key. Without a ``trackingId``, a consume by item gets a generated one, which the
  journal binds to the key the first time it sees it.
- ``beneficiary.identityType`` is optional (``"b2b"``, the only documented value).
- Unknown fields are refused (a misspelt ``itemID`` would otherwise look "missing").
- Blank lines are skipped; a UTF-8 byte order mark at the start is ignored.

A malformed line (bad JSON, missing or mistyped field, invalid GUID, both or neither form, a
line over ``max_line_bytes``, a truncated last line) becomes a :class:`LineError` with its line
number, and reading goes on. Messages name fields, never values: ``identityValue`` is a secret.

Memory is flat in the file size: lines are read a chunk at a time in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any, Final

import attrs
import orjson

from store_async.errors import ValidationError
from store_async.fulfillment.journal import Fulfillment
from store_async.models import ConsumeRequest, UserIdentity

__all__ = ["LineError", "iter_jsonl", "parse_line", "read_jsonl"]

MAX_LINE_BYTES: Final = 64 * 1024
MAX_KEY_LENGTH: Final = 1000
_IDENTITY_CACHE: Final = 4096

_TOP_FIELDS: Final = frozenset(
    ("key", "beneficiary", "itemId", "trackingId", "productId", "transactionId", "quantity")
) | {"sandboxId", "includeOrderIds", "newQuantity", "orderTransactions"}
_MAX_QUANTITY: Final = 2**31 - 1
_BENEFICIARY_FIELDS: Final = frozenset(("identityValue", "localTicketReference", "identityType"))
_GUID: Final = re.compile(
    r"(?:\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"
    r"|[0-9a-fA-F]{32})\Z"
)
_BOM: Final = b"\xef\xbb\xbf"


@attrs.frozen(kw_only=True)
class LineError:
    """An input line that was skipped, and why. ``key`` when the line had a readable one."""

    line: int
    message: str
    key: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class _Invalid(Exception):
    """Internal: a line is malformed (message names the field, never its value)."""


def _text(document: dict[str, Any], name: str, *, label: str | None = None) -> str:
    value = document.get(name)
    if type(value) is str and value and not value.isspace():
        return value
    label = label or name
    if value is None:
        raise _Invalid(f"missing field {label!r}")
    if not isinstance(value, str):
        raise _Invalid(f"{label!r} must be a string, not {_json_type(value)}")
    raise _Invalid(f"{label!r} must not be empty")


def _guid(document: dict[str, Any], name: str) -> str:
    value = _text(document, name)
    if not _GUID.match(value):
        raise _Invalid(f"{name!r} must be a GUID such as 3eea1529-611e-4aee-915c-345494e4ee76")
    return value


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array",
             dict: "an object", str: "a string"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _unknown(document: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    if document.keys() <= allowed:
        return
    unknown = sorted(name for name in document if name not in allowed)
    names = ", ".join(repr(name[:40]) for name in unknown[:5])
    raise _Invalid(f"unknown field{'s' if len(unknown) > 1 else ''} {names}{where}")


_Identities = dict[tuple[str, str, str | None], UserIdentity]


def _beneficiary(document: dict[str, Any], identities: _Identities) -> UserIdentity:
    value = document.get("beneficiary")
    if value is None:
        raise _Invalid("missing field 'beneficiary'")
    if not isinstance(value, dict):
        raise _Invalid(f"'beneficiary' must be an object, not {_json_type(value)}")
    _unknown(value, _BENEFICIARY_FIELDS, " in 'beneficiary'")
    identity_value = _text(value, "identityValue", label="beneficiary.identityValue")
    ticket = _text(value, "localTicketReference", label="beneficiary.localTicketReference")
    identity_type = None
    if "identityType" in value:
        identity_type = _text(value, "identityType", label="beneficiary.identityType")
    # Lines of one user share one record (and one journal row of the Store ID key).
    cache_key = (identity_value, ticket, identity_type)
    found = identities.get(cache_key)
    if found is None:
        if len(identities) >= _IDENTITY_CACHE:
            identities.clear()
        if identity_type is None:
            found = UserIdentity(identity_value=identity_value, local_ticket_reference=ticket)
        else:
            found = UserIdentity(
                identity_value=identity_value,
                local_ticket_reference=ticket,
                identity_type=identity_type,
            )
        identities[cache_key] = found
    return found


def _fulfillment(document: dict[str, Any], line: int, identities: _Identities) -> Fulfillment:
    _unknown(document, _TOP_FIELDS, "")
    key = None
    if "key" in document:
        key = _text(document, "key")
        if len(key) > MAX_KEY_LENGTH:
            raise _Invalid(f"'key' is longer than {MAX_KEY_LENGTH} characters")
    if "quantity" in document:
        return _v8_fulfillment(document, key, line, identities)
    for name in ("sandboxId", "includeOrderIds"):
        if name in document:
            raise _Invalid(f"{name!r} belongs to a v8 line (productId + quantity)")
    by_item = "itemId" in document or "trackingId" in document
    by_transaction = "productId" in document or "transactionId" in document
    if by_item and by_transaction:
        raise _Invalid("give either itemId (+ trackingId) or productId + transactionId, not both")
    beneficiary = _beneficiary(document, identities)
    if by_transaction:
        product_id = _text(document, "productId")
        transaction_id = _guid(document, "transactionId")
        request = ConsumeRequest.for_transaction(beneficiary, product_id, transaction_id)
        return Fulfillment(key=key or request.idempotency_key, request=request, line=line)
    if not by_item:
        raise _Invalid("missing field 'itemId' (or 'productId' + 'transactionId')")
    item_id = _text(document, "itemId")
    tracking_id = _guid(document, "trackingId") if "trackingId" in document else None
    if key is None and tracking_id is None:
        raise _Invalid("missing field 'key' (required unless 'trackingId' is given)")
    request = ConsumeRequest.for_item(beneficiary, item_id, tracking_id)
    return Fulfillment(
        key=key or request.idempotency_key,
        request=request,
        line=line,
        caller_tracking_id=tracking_id is not None,
    )


def _v8_fulfillment(
    document: dict[str, Any], key: str | None, line: int, identities: _Identities
) -> Fulfillment:
    for name in ("itemId", "transactionId"):
        if name in document:
            raise _Invalid(f"a v8 line (productId + quantity) takes no {name!r}")
    quantity = document["quantity"]
    if type(quantity) is not int or not 1 <= quantity <= _MAX_QUANTITY:
        raise _Invalid(f"'quantity' must be an integer from 1 to {_MAX_QUANTITY}")
    beneficiary = _beneficiary(document, identities)
    product_id = _text(document, "productId")
    tracking_id = _guid(document, "trackingId") if "trackingId" in document else None
    if key is None and tracking_id is None:
        raise _Invalid("missing field 'key' (required unless 'trackingId' is given)")
    sandbox_id = _text(document, "sandboxId") if "sandboxId" in document else None
    with_orders = document.get("includeOrderIds", True)
    if type(with_orders) is not bool:
        raise _Invalid(f"'includeOrderIds' must be true or false, not {_json_type(with_orders)}")
    request = ConsumeRequest.for_quantity(
        beneficiary,
        product_id,
        quantity,
        tracking_id=tracking_id,
        key=key if tracking_id is None else None,
        include_order_ids=with_orders,
        sandbox_id=sandbox_id,
    )
    return Fulfillment(
        key=key or request.idempotency_key,
        request=request,
        line=line,
        caller_tracking_id=tracking_id is not None,
    )


def parse_line(
    raw: bytes, line: int, identities: _Identities | None = None
) -> Fulfillment | LineError | None:
    """Parse one line (without or with its newline). ``None`` for a blank line.

    ``identities`` (a dict the caller keeps between lines) lets lines of one user share one
    :class:`UserIdentity`.
    """
    if not raw.strip():
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return LineError(line=line, message=_decode_problem(raw, error))
    if not isinstance(document, dict):
        return LineError(line=line, message=f"expected a JSON object, got {_json_type(document)}")
    key = document.get("key")
    key = key[:MAX_KEY_LENGTH] if isinstance(key, str) and key else None
    try:
        return _fulfillment(document, line, {} if identities is None else identities)
    except _Invalid as error:
        return LineError(line=line, message=str(error), key=key)
    except ValidationError as error:  # the records' own checks: they never repeat values
        return LineError(line=line, message=error.message, key=key)


def _decode_problem(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """What is wrong with a line orjson refused. orjson reports bytes that are not UTF-8 as
    "surrogates not allowed" (a message about Python strings): say what the file has instead."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"not UTF-8: byte 0x{raw[bad.start]:02x} at byte {bad.start + 1} "
            "(save the file as UTF-8)"
        )
    return f"invalid JSON: {error.msg} at column {error.colno}"


def _raw_lines(file: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes | None, bool]]:
    """Yield ``(line number, bytes or None if too long, ends with a newline)``."""
    number = 0
    while True:
        raw = file.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            ended = False
            while chunk := file.readline(max_line_bytes):  # skip the rest of this line
                if chunk.endswith(b"\n"):
                    ended = True
                    break
            yield number, None, ended
            continue
        yield number, raw, raw.endswith(b"\n")


def _parsed(
    number: int, raw: bytes | None, ended: bool, max_line_bytes: int, identities: _Identities
) -> Fulfillment | LineError | None:
    if raw is None:
        return LineError(line=number, message=f"line is longer than {max_line_bytes} bytes")
    item = parse_line(raw, number, identities)
    if isinstance(item, LineError) and not ended:
        return LineError(
            line=number,
            message=f"truncated last line (no newline at end of file): {item.message}",
            key=item.key,
        )
    return item


def iter_jsonl(
    file: IO[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Fulfillment | LineError]:
    """Parse a binary JSON Lines stream synchronously (blank lines skipped)."""
    identities: _Identities = {}
    for number, raw, ended in _raw_lines(file, max_line_bytes):
        item = _parsed(number, raw, ended, max_line_bytes, identities)
        if item is not None:
            yield item


async def read_jsonl(
    path: str | os.PathLike[str] | IO[bytes],
    *,
    chunk_lines: int = 256,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> AsyncIterator[Fulfillment | LineError]:
    """Stream a JSON Lines file: disk reads run in a thread, ``chunk_lines`` lines at a time.

    ``path`` may also be an open binary stream (``sys.stdin.buffer``), read to its end and left
    open. Raises :class:`OSError` if the file cannot be opened.
    """
    identities: _Identities = {}
    if isinstance(path, (str, os.PathLike)):
        # Opening is instant; reads go to a thread.
        opened: Any = open(path, "rb")  # noqa: ASYNC230, SIM115
    else:
        opened = contextlib.nullcontext(path)
    with opened as file:
        lines = _raw_lines(file, max_line_bytes)

        def next_chunk() -> list[tuple[int, bytes | None, bool]]:
            return [entry for _, entry in zip(range(chunk_lines), lines, strict=False)]

        while chunk := await asyncio.to_thread(next_chunk):
            for number, raw, ended in chunk:
                item = _parsed(number, raw, ended, max_line_bytes, identities)
                if item is not None:
                    yield item
