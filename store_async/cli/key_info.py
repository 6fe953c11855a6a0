"""``store-async key-info``: show what a Store ID key says, and whether to renew it.

Prints the claims (kind, audience, user id, client id, refresh URI, issue, not-before and expiry
times, when to renew) and a status line; never the key or its opaque payload. A malformed key
exits with status 1 and a one-line error. ``--json`` prints one JSON object instead.

Imports only the key parser (no aiohttp), so it answers at once.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from store_async.errors import InvalidStoreIdKeyError
from store_async.store_id_key import MAX_KEY_LENGTH, REFRESH_AGE, StoreIdKey

__all__ = ["configure", "describe", "run", "status_of"]

# Enough for a key with generous surrounding whitespace; a longer stdin is refused unread.
_STDIN_LIMIT: Final = 4 * MAX_KEY_LENGTH


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``key-info`` arguments."""
    parser.add_argument(
        "key",
        metavar="KEY",
        help="the Store ID key, or - to read it from stdin (preferred: an argument is visible "
        "to other local users in the process list and lands in shell history)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of text lines"
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        type=_moment,
        default=None,
        help="judge expiry and renewal at this ISO 8601 time (UTC if no offset) instead of now",
    )


def run(args: argparse.Namespace) -> int:
    """Print the key's claims; a malformed key raises ``InvalidStoreIdKeyError`` (exit 1)."""
    key = StoreIdKey.parse(_read_key(args.key))
    now: datetime = args.at if args.at is not None else datetime.now(UTC)
    if args.json:
        sys.stdout.write(
            orjson.dumps(_document(key, now), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        sys.stdout.write(describe(key, now))
    return 0


def status_of(key: StoreIdKey, now: datetime) -> tuple[str, str]:
    """``(code, sentence)`` saying what to do with ``key`` at ``now``.

    Codes: ``expired``, ``renew`` (older than 14 days), ``not_yet_valid`` (before ``nbf``),
    ``valid``.
    """
    expires = _time(key.expires_at)
    if key.is_expired(now):
        return "expired", (
            f"expired: since {expires} (renew it; if the Store refuses, create a new key "
            "on the client)"
        )
    if key.needs_refresh(now):
        return "renew", f"renew now (older than {REFRESH_AGE.days} days; valid until {expires})"
    if key.not_before is not None and now < key.not_before:
        return "not_yet_valid", f"not yet valid: from {_time(key.not_before)} (until {expires})"
    return "valid", f"valid until {expires} (renew after {_time(key.refresh_after)})"


def describe(key: StoreIdKey, now: datetime) -> str:
    """The text report: one ``label: value`` line per claim, the status, maybe a warning."""
    rows = [
        ("kind", key.kind.value),
        ("audience", _printable(key.audience)),
        ("user id", "(none)" if key.user_id is None else _printable(key.user_id)),
        ("client id", _printable(key.client_id)),
        ("refresh uri", _printable(key.refresh_uri)),
        ("issued", _time(key.issued_at)),
        ("not before", "(none)" if key.not_before is None else _time(key.not_before)),
        ("expires", _time(key.expires_at)),
        ("refresh after", _time(key.refresh_after)),
        ("status", status_of(key, now)[1]),
    ]
    if key.has_inconsistent_times:
        rows.append(("warning", _INCONSISTENT_TIMES))
    return "".join(f"{label + ':':<15}{text}\n" for label, text in rows)


# The Dec 2024 documentation example has exp and nbf swapped; see StoreIdKey's docstring.
_INCONSISTENT_TIMES: Final = (
    "exp is not after iat, or nbf is not before exp (exp and nbf may be swapped); "
    "times are taken as written"
)


def _document(key: StoreIdKey, now: datetime) -> dict[str, Any]:
    code, _ = status_of(key, now)
    return {
        "kind": key.kind.value,
        "audience": key.audience,
        "user_id": key.user_id,
        "client_id": key.client_id,
        "refresh_uri": key.refresh_uri,
        "issued_at": _time(key.issued_at),
        "not_before": None if key.not_before is None else _time(key.not_before),
        "expires_at": _time(key.expires_at),
        "refresh_after": _time(key.refresh_after),
        "checked_at": _time(now),
        "status": code,
        "expired": key.is_expired(now),
        "needs_refresh": key.needs_refresh(now),
        "inconsistent_times": key.has_inconsistent_times,
    }


def _read_key(argument: str) -> str:
    if argument != "-":
        return argument
    text = sys.stdin.read(_STDIN_LIMIT + 1)
    if len(text) > _STDIN_LIMIT:
        raise InvalidStoreIdKeyError(
            f"stdin holds more than {_STDIN_LIMIT} characters; a Store ID key is far shorter"
        )
    text = text.strip()
    if not text:
        raise InvalidStoreIdKeyError("no Store ID key on stdin")
    return text


def _moment(text: str) -> datetime:
    """argparse type for ``--at``: ISO 8601, naive means UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _printable(text: str) -> str:
    """Escape control characters: claim values come from outside and go to a terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
