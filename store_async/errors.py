"""The exception tree. Every error this library raises is a :class:`StoreError`::

    StoreError                       status, code, inner_code, message, correlation ids
    ├── ValidationError (ValueError) bad input to this library; nothing was sent
    │   └── InvalidStoreIdKeyError   a Store ID key that is not a well-formed JWT
    ├── AuthenticationError          401 (token_rejected: about our access token)
    ├── InvalidRequestError          400
    ├── NotFoundError                404
    ├── ConflictError                409
    ├── RequestTimeoutError          408 (not sent; retryable)
    ├── ThrottledError               429 (retry_after; retryable)
    ├── ServiceUnavailableError      5xx (maybe applied)
    ├── TransportError               no usable answer (kind: not sent / maybe applied)
    ├── ResponseFormatError          a 2xx body that is not what the operation promises
    │   └── ResponseTooLargeError    over max_response_bytes; not read whole
    └── OutcomeUnknownError          retries ended after an attempt that may have been applied

Each carries the HTTP status (when there was an answer), the service's error ``code`` and
``inner_code`` (from its ServiceError body), and the service's correlation headers, so a failure
can be traced with Microsoft support. Each also says what it means for the retry engine:

- :attr:`StoreError.kind` - was the request *not sent*, *maybe applied*, or *answered*?
- :attr:`StoreError.retryable` - may the same request (same idempotency key) be sent again?

No message ever contains a token, a Store ID key or a client secret. How an HTTP answer becomes
one of these lives next to the transport (``store_async._responses``).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

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
]

# The documented inner codes of a 401 (docs/store-api.md section 3.2).
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
        server_cv: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.inner_code = inner_code
        self.correlation_id = correlation_id
        self.request_id = request_id
        self.cv = cv
        """The ``MS-CV`` correlation vector the client *sent* with the attempt that failed
        (quote it to Microsoft support); before an answer is stamped, the server's."""
        self.server_cv = server_cv
        """The ``MS-CV`` the server answered with, when it differs from :attr:`cv`."""
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

    about_access_token: bool | None = None
    """Set by the client when it could tell: ``True`` when the 401 is about our access token,
    ``False`` when it is about the user's Store ID key (the Store answers
    ``AuthenticationTokenInvalid`` for both: a request sent later with the same access token
    succeeded, so the token is fine)."""

    @property
    def token_rejected(self) -> bool:
        """True when a fresh access token may cure it (refresh once and resend)."""
        if self.about_access_token is not None:
            return self.about_access_token
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

    This is a result, not a crash: send the same request again later (same
    :attr:`idempotency_key`: tracking id, transaction id or order id) and the service settles it
    without applying it twice. An operation without an idempotency key (key renewal) has
    ``idempotency_key=None``: check its state before sending it again.
    """

    kind = FailureKind.MAYBE_APPLIED

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str | None = None,
        attempts: int = 0,
        last_error: StoreError | None = None,
        tracking_id: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, **fields)
        self.idempotency_key = idempotency_key if idempotency_key is not None else tracking_id
        self.attempts = attempts
        self.last_error = last_error

    @property
    def tracking_id(self) -> str | None:
        """Alias of :attr:`idempotency_key` (its name before 0.2; kept for compatibility)."""
        return self.idempotency_key

    def __str__(self) -> str:
        return (
            f"{super().__str__()} [idempotency_key={self.idempotency_key}, "
            f"attempts={self.attempts}]"
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
