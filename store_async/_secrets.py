"""Secrets the client knows, scrubbed from any text a server sends back (docs/design.md).

A server or proxy error message may quote the request: its ``Authorization`` header (our access
token), its body (the user's Store ID key, the key renewal's service ticket), its URL (a SAS
signature). Such text becomes an exception message, a journal's error column, a report, a log
line. :func:`scrub_error` rewrites a :class:`~store_async.errors.StoreError` in place, before
anyone sees it, so that none of the secrets of the call it answers survives, in any of the
forms a server really sends them back in:

- verbatim (a JSON string of a JWT needs no escaping);
- percent-encoded (a proxy quoting the request URL or a form body: ``+ / =`` of base64);
- JSON-escaped: ``\\/`` (many encoders) and ``\\u002B`` for ``+`` (.NET's default
  ``System.Text.Json`` encoder, which the Store's own services use, escapes ``+ & < > ' "``);
- cut short: an echo truncated by a length limit still leaks the start of a token, so any run
  of at least :data:`MIN_FRAGMENT` characters that starts like a secret is removed too;
- ``sig=`` values (SAS signatures), whatever the call.

It runs on the error path only: the engine calls it where an attempt's failure is caught, with
the access token it sent and the body it sent (the route row names the body fields that carry
Store ID keys). A success pays nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote

import attrs
import orjson

from store_async.errors import InnerError, OutcomeUnknownError, ServiceError, StoreError
from store_async.models.refunds import redact_sas

__all__ = ["MIN_FRAGMENT", "MIN_SECRET", "REDACTED", "body_secrets", "scrub_error", "scrub_text"]

REDACTED: Final = "<redacted>"
MIN_FRAGMENT: Final = 12
"""A run this long that starts like a secret is taken for a cut-short echo of it."""
MIN_SECRET: Final = 8
"""Shorter values are no credential (tokens and keys run to hundreds of characters, a SAS
signature to 44): they are not looked for, since removing every ``u`` would mangle the text."""
_DOTNET_ESCAPED: Final = {c: f"\\u{ord(c):04X}" for c in "+&<>'\"`"}
_CHAIN_DEPTH: Final = 8
_RUN_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-%\\"
)
"""Characters a token, key or signature (or an encoded form of one) continues with; not ``.``,
so an echo cut short and marked ``...`` is still a cut-short echo."""


def _variants(secret: str) -> set[str]:
    """The forms a server echoes ``secret`` in (see the module docstring)."""
    json_escaped = orjson.dumps(secret).decode()[1:-1]
    dotnet = "".join(
        _DOTNET_ESCAPED.get(c, c) if ord(c) < 128 else f"\\u{ord(c):04X}" for c in json_escaped
    )
    return {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="/"),
        json_escaped,
        json_escaped.replace("/", "\\/"),
        dotnet,
        dotnet.replace("/", "\\/"),
    }


def _forms(secrets: Iterable[str | None]) -> tuple[str, ...]:
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            forms |= _variants(secret)
    # Longest first: a form that contains another is removed whole.
    return tuple(sorted(forms, key=len, reverse=True))


def _scrub(text: str, forms: tuple[str, ...]) -> str:
    # Whole echoes first: JWTs share their first characters (``eyJhbGciOi...``), so the
    # cut-short pass below, run for one secret, would otherwise take the start of *another*
    # whole secret for a fragment of its own and leave that one's rest in the text.
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    for form in forms:
        head = form[:MIN_FRAGMENT]
        start = text.find(head)
        while start >= 0:
            end = start + len(head)
            limit = min(len(text), start + len(form))
            while end < limit and text[end] == form[end - start]:
                end += 1
            if end - start < len(form) and end < len(text) and text[end] in _RUN_CHARS:
                # The run goes on with other characters: another string that starts like this
                # secret (another JWT: the same header), not a cut-short echo of it.
                start = text.find(head, start + 1)
                continue
            text = text[:start] + REDACTED + text[end:]
            start = text.find(head, start + len(REDACTED))
    return redact_sas(text)


def scrub_text(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` without any of ``secrets`` (in any echoed form) or SAS signature."""
    return _scrub(text, _forms(secrets))


def body_secrets(body: bytes | None, fields: frozenset[str]) -> list[str]:
    """The string values of ``fields`` (wire names) anywhere in a JSON request body."""
    if not body or not fields:
        return []
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    found: list[str] = []
    todo: list[Any] = [document]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for name, value in item.items():
                if name in fields and isinstance(value, str):
                    found.append(value)
                elif isinstance(value, dict | list):
                    todo.append(value)
        elif isinstance(item, list):
            todo.extend(item)
    return found


def _deep(value: Any, forms: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _scrub(value, forms)
    if isinstance(value, dict):
        return {_deep(name, forms): _deep(item, forms) for name, item in value.items()}
    if type(value) is list or type(value) is tuple:  # not a named tuple (aiohttp's RequestInfo)
        return type(value)(_deep(item, forms) for item in value)
    return value


def _service_error(error: ServiceError, forms: tuple[str, ...]) -> ServiceError:
    inner = error.inner_error
    if inner is not None:
        inner = InnerError(
            **{f.name: _deep(getattr(inner, f.name), forms) for f in attrs.fields(InnerError)}
        )
    fields = {f.name: _deep(getattr(error, f.name), forms) for f in attrs.fields(ServiceError)}
    fields["inner_error"] = inner
    return ServiceError(**fields)


_TEXT_FIELDS: Final = ("message", "code", "inner_code", "correlation_id", "request_id", "cv")


def scrub_error(error: BaseException, secrets: Iterable[str | None]) -> None:
    """Remove ``secrets`` (and SAS signatures) from ``error`` in place: its message and
    ``args``, its service-error body, the error it wraps, and the exceptions chained to it
    (aiohttp's, which may quote a malformed answer)."""
    forms = _forms(secrets)
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < _CHAIN_DEPTH:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(_deep(arg, forms) for arg in current.args)
        if isinstance(current, StoreError):
            for name in _TEXT_FIELDS:
                value = getattr(current, name, None)
                if isinstance(value, str):
                    setattr(current, name, _scrub(value, forms))
            if current.service_error is not None:
                current.service_error = _service_error(current.service_error, forms)
            if isinstance(current, OutcomeUnknownError):
                todo.append(current.last_error)
        else:  # aiohttp's errors keep the text they quote in attributes too (message, line)
            for name, value in list(getattr(current, "__dict__", {}).items()):
                if isinstance(value, str):
                    with contextlib.suppress(AttributeError):  # a read-only property
                        setattr(current, name, _scrub(value, forms))
        todo += [current.__cause__, current.__context__]


def scrub_attempt_error(
    error: StoreError, token: str | None, body: bytes | None, fields: frozenset[str]
) -> None:
    """The engine's one call (error path only): scrub the access token the attempt sent and
    the secrets its body carried (``fields``: the route row's ``secret_fields``)."""
    scrub_error(error, [token, *body_secrets(body, fields)])
