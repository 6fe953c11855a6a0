"""PostgreSQL DSNs: telling one from a file path, and keeping its password out of sight.

Shared by the two PostgreSQL journals (fulfillment and refunds), which sit in different layers;
this module imports nothing of ours.
"""

from __future__ import annotations

import urllib.parse

__all__ = ["dsn_password", "is_postgres_dsn", "redact_dsn", "scrub"]


def is_postgres_dsn(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL journal rather than a SQLite file."""
    return text.startswith(("postgresql://", "postgres://"))


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (in the user part or a ``password=`` parameter) replaced by
    ``***``; anything unparsable is reduced to its scheme."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            user_info, host = netloc.rsplit("@", 1)
            if ":" in user_info:
                user_info = user_info.split(":", 1)[0] + ":***"
            netloc = f"{user_info}@{host}"
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        return urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="*"), "")
        )
    except ValueError:
        return dsn.split(":", 1)[0] + "://***"


def dsn_password(dsn: str) -> str | None:
    """The password written in ``dsn`` itself, if any (to scrub it from error messages)."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        for name, value in urllib.parse.parse_qsl(parts.query):
            if name.lower() == "password" and value:
                return value
        return urllib.parse.unquote(parts.password) if parts.password else None
    except ValueError:
        return None


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with each non-empty secret (and its URL-quoted spelling) replaced by ``***``."""
    for secret in secrets:
        if secret:
            for spelling in {secret, urllib.parse.quote(secret, safe="")}:
                text = text.replace(spelling, "***")
    return text
