"""HTTP answer -> typed error: the one place that reads a failed answer's status, headers and body.

:func:`error_from_response` never raises; whatever the body (a ServiceError JSON, an HTML page
from a proxy, nothing), it returns a :class:`~store_async.errors.StoreError` subclass chosen by
status. :func:`parse_retry_after` reads ``Retry-After`` as delta-seconds or an HTTP-date.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from store_async.errors import (
    AuthenticationError,
    ConflictError,
    InnerError,
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    ServiceError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
)

__all__ = ["error_from_response", "parse_retry_after"]

_BY_STATUS: Final[dict[int, type[StoreError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    429: ThrottledError,
}

_RETRY_AFTER_CAP: Final = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns ``None`` for a missing or unreadable value; never negative; at most one day.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not hasattr(headers, "getall"):  # plain dicts are case-sensitive
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _seq(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else ()


def _lowered(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {key.lower(): item for key, item in value.items() if isinstance(key, str)}


def _parse_service_error(body: bytes) -> ServiceError | None:
    """Read a ServiceError body leniently (any casing, missing parts); ``None`` if not JSON."""
    if not body:
        return None
    try:
        document = _lowered(orjson.loads(body))
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if document is None:
        return None
    inner = _lowered(document.get("innererror"))
    inner_error = None
    if inner is not None:
        inner_error = InnerError(
            code=_text(inner.get("code")),
            message=_text(inner.get("message")),
            source=_text(inner.get("source")),
            data=_seq(inner.get("data")),
            details=_seq(inner.get("details")),
        )
    return ServiceError(
        code=_text(document.get("code")),
        message=_text(document.get("message")),
        source=_text(document.get("source")),
        data=_seq(document.get("data")),
        details=_seq(document.get("details")),
        inner_error=inner_error,
    )


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> StoreError:
    """Build the typed error for an unsuccessful HTTP answer.

    ``headers`` may be aiohttp's case-insensitive multidict or a plain mapping. The body may be
    anything (a ServiceError JSON, an HTML page from a proxy, nothing); this function never
    raises, it always returns a :class:`StoreError`.
    """
    try:
        service_error = _parse_service_error(body)
    except Exception:
        service_error = None
    code = service_error.code if service_error else None
    inner = service_error.inner_error if service_error else None
    inner_code = inner.code if inner else None
    detail = (inner.message if inner and inner.message else None) or (
        service_error.message if service_error else None
    )
    if detail is None:
        detail = (
            f"non-JSON body of {len(body)} bytes"
            if body and service_error is None
            else "no error details"
        )
    cls: type[StoreError]
    cls = ServiceUnavailableError if status >= 500 else _BY_STATUS.get(status, StoreError)
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
    return cls(
        f"HTTP {status}: {detail[:500]}",
        status=status,
        code=code,
        inner_code=inner_code,
        correlation_id=_header(headers, "MS-CorrelationId"),
        request_id=_header(headers, "MS-RequestId"),
        cv=_header(headers, "MS-CV"),
        retry_after=retry_after,
        service_error=service_error,
    )
