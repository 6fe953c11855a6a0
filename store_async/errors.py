"""Typed errors, and the one function that turns an HTTP answer into one of them.

Every error this library raises is a :class:`StoreError`. Each carries the HTTP status (when
there was an answer), the service's error ``code`` and ``inner_code`` (from its ServiceError
body), and the service's correlation headers, so a failure can be traced with Microsoft support.

Each error also says what it means for the retry engine:

- :attr:`StoreError.kind` - was the request *not sent*, *maybe applied*, or *answered*?
- :attr:`StoreError.retryable` - may the same request (same idempotency key) be sent again?

No message ever contains a token, a Store ID key or a client secret.
"""

from __future__ import annotations

import email.utils
import enum
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "FailureKind",
    "InnerError",
    "InvalidRequestError",
    "InvalidStoreIdKeyError",
    "NotFoundError",
    "OutcomeUnknownError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "ServiceError",
    "ServiceUnavailableError",
    "StoreError",
    "ThrottledError",
    "TransportError",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]

# The documented inner codes of a 401 (STORE_API.md section 3.2).
AUTHENTICATION_TOKEN_INVALID: Final = "AuthenticationTokenInvalid"
PARTNER_AAD_TICKET_REQUIRED: Final = "PartnerAadTicketRequired"
INCONSISTENT_CLIENT_ID: Final = "InconsistentClientId"


class FailureKind(enum.Enum):
    """What a failed attempt tells us about the service's state."""

    NOT_SENT = "not_sent"
    """The request never reached the service (connect refused, DNS, TLS, pool wait)."""
    MAYBE_APPLIED = "maybe_applied"
    """The service may have committed it (reset after sending, read timeout, 5xx, cut body)."""
    ANSWERED = "answered"
    """The service answered with a definite error (4xx)."""


@attrs.frozen(kw_only=True)
class InnerError:
    """The ``innererror`` member of a ServiceError body."""

    code: str | None = None
    message: str | None = None
    source: str | None = None
    data: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    details: tuple[Any, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen(kw_only=True)
class ServiceError:
    """The error body the Store services send with a 4xx/5xx (``code``, ``innererror``...)."""

    code: str | None = None
    message: str | None = None
    source: str | None = None
    data: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    details: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    inner_error: InnerError | None = None


class StoreError(Exception):
    """Base class of every error raised by ``store_async``.

    Attributes are ``None`` when they do not apply (for example ``status`` for an error raised
    before anything was sent).
    """

    kind: FailureKind = FailureKind.ANSWERED
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        inner_code: str | None = None,
        correlation_id: str | None = None,
        request_id: str | None = None,
        cv: str | None = None,
        retry_after: float | None = None,
        service_error: ServiceError | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.inner_code = inner_code
        self.correlation_id = correlation_id
        self.request_id = request_id
        self.cv = cv
        self.retry_after = retry_after
        self.service_error = service_error

    def _state(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("message", None)
        return state

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default Exception pickling, and errors
        # cross process boundaries in worker pools.
        return (_rebuild, (type(self), self.message, self._state()))

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.inner_code:
            parts.append(f"inner_code={self.inner_code}")
        if self.correlation_id:
            parts.append(f"correlation_id={self.correlation_id}")
        return " ".join(parts) if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


def _rebuild(cls: type[StoreError], message: str, state: dict[str, Any]) -> StoreError:
    error = cls.__new__(cls)
    StoreError.__init__(error, message)
    error.__dict__.update(state)
    error.args = (message,)
    return error


class ValidationError(StoreError, ValueError):
    """Bad input given to this library (a record, an endpoint, a policy); nothing was sent."""

    kind = FailureKind.NOT_SENT


class InvalidStoreIdKeyError(ValidationError):
    """A Store ID key that is not a well-formed JWT with the documented claims."""


class AuthenticationError(StoreError):
    """401: the bearer token or the Store ID key was refused.

    ``inner_code`` tells which: ``AuthenticationTokenInvalid`` (bad or expired token or key),
    ``PartnerAadTicketRequired`` (no token sent) or ``InconsistentClientId`` (the key's client id
    differs from the token's ``appid``).
    """

    @property
    def token_rejected(self) -> bool:
        """True when a fresh access token may cure it (refresh once and resend)."""
        return self.inner_code in (AUTHENTICATION_TOKEN_INVALID, PARTNER_AAD_TICKET_REQUIRED)


class InvalidRequestError(StoreError):
    """400: the service rejected the request body (``InvalidParameter`` and friends)."""


class NotFoundError(StoreError):
    """404: the product, SKU or seat does not exist."""


class ConflictError(StoreError):
    """409: the resource is not in a state that allows it.

    For an offline license: the organisation does not own the product, or it is not offline.
    """


class RequestTimeoutError(StoreError):
    """408: the service gave up waiting for the request; it was not applied and may be resent."""

    kind = FailureKind.NOT_SENT
    retryable = True


class ThrottledError(StoreError):
    """429: rate limited. ``retry_after`` holds the service's ``Retry-After`` in seconds."""

    retryable = True


class ServiceUnavailableError(StoreError):
    """5xx: the service failed; it may have applied the request before failing."""

    kind = FailureKind.MAYBE_APPLIED

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        # 501 Not Implemented / 505 HTTP Version Not Supported will not get better.
        self.retryable = self.status in (500, 502, 503, 504)


class TransportError(StoreError):
    """The network failed: no HTTP answer, or one cut short.

    ``kind`` is ``NOT_SENT`` when the request provably never left (connection refused, DNS, TLS
    handshake, connect timeout, pool wait) and ``MAYBE_APPLIED`` otherwise.
    """

    retryable = True

    def __init__(self, message: str, *, kind: FailureKind, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.kind = kind


class ResponseFormatError(StoreError):
    """A 2xx answer whose body is not what the operation promises (HTML from a proxy,
    truncated JSON, wrong types). The service may have applied the request."""

    kind = FailureKind.MAYBE_APPLIED
    retryable = True


class ResponseTooLargeError(ResponseFormatError):
    """The answer was larger than ``max_response_bytes``; it was not read whole."""

    retryable = False


class OutcomeUnknownError(StoreError):
    """Retries ended and at least one attempt may have been applied.

    This is a result, not a crash: send the same request again later (same ``tracking_id``,
    transaction id or order id) and the service settles it without applying it twice.
    """

    kind = FailureKind.MAYBE_APPLIED

    def __init__(
        self,
        message: str,
        *,
        tracking_id: str | None,
        attempts: int = 0,
        last_error: StoreError | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, **fields)
        self.tracking_id = tracking_id
        self.attempts = attempts
        self.last_error = last_error

    def __str__(self) -> str:
        return f"{super().__str__()} [tracking_id={self.tracking_id}, attempts={self.attempts}]"


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


# -- refund events (clawback v2) --------------------------------------------------------------


class RefundQueueNotOnboardedError(InvalidRequestError):
    """400 from ``GET /v8.0/b2b/clawback/sastoken``: the refund queue was never set up.

    The service answers 400 until the publisher has onboarded to clawback v2 (Partner Center);
    no retry will change that.
    """


class RefundQueueError(StoreError):
    """The refund queue (Azure Storage) failed: a refused SAS after a fresh one was fetched, a
    queue that does not exist, an unreachable account. The message names the operation, the
    HTTP status and the storage error code, never the SAS URI's signature."""

    kind = FailureKind.NOT_SENT
    retryable = True


__all__ += ["RefundQueueError", "RefundQueueNotOnboardedError"]
