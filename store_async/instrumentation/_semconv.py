"""What the OpenTelemetry and Prometheus adapters share: the HTTP semantic conventions'
duration buckets and ``url.full`` redaction. Imports neither library."""

from __future__ import annotations

from typing import Final

__all__ = ["DURATION_BUCKETS", "safe_url"]

DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""The HTTP semantic conventions' advised buckets (seconds) for
``http.client.request.duration``."""


def safe_url(url: str) -> str:
    """``url`` without user information or query values: ``url.full`` must carry no
    credential. The Store's URLs have neither; this guards against one that does."""
    if "@" not in url and "?" not in url:
        return url  # the common case: nothing to redact, no parsing
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{pair.partition('=')[0]}=REDACTED" for pair in parts.query.split("&") if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
