"""error_from_response: every status and body shape maps to exactly one typed error."""

from __future__ import annotations

import email.utils
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from store_async._responses import error_from_response, parse_retry_after
from store_async.errors import (
    AuthenticationError,
    ConflictError,
    FailureKind,
    InnerError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ServiceError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
)

# The 401 body as observed in the wild (docs/store-api.md section 6).
UNAUTHORIZED_BODY = orjson.dumps(
    {
        "code": "Unauthorized",
        "data": [],
        "details": [],
        "innererror": {
            "code": "AuthenticationTokenInvalid",
            "data": [],
            "details": [],
            "message": "Access token validation failure.",
        },
        "message": "Access is denied due to invalid credentials.",
        "source": "PurchaseFD",
    }
)

HEADERS = CIMultiDict(
    {"MS-CorrelationId": "corr-1", "MS-RequestId": "req-1", "MS-CV": "cv.1", "Date": "x"}
)


def test_documented_401_body_is_read_into_every_field() -> None:
    error = error_from_response(401, HEADERS, UNAUTHORIZED_BODY)

    assert type(error) is AuthenticationError
    assert error.status == 401
    assert error.code == "Unauthorized"
    assert error.inner_code == "AuthenticationTokenInvalid"
    assert error.token_rejected is True
    assert error.message == "HTTP 401: Access token validation failure."
    assert (error.correlation_id, error.request_id, error.cv) == ("corr-1", "req-1", "cv.1")
    assert error.service_error == ServiceError(
        code="Unauthorized",
        message="Access is denied due to invalid credentials.",
        source="PurchaseFD",
        inner_error=InnerError(
            code="AuthenticationTokenInvalid", message="Access token validation failure."
        ),
    )
    assert error.kind is FailureKind.ANSWERED
    assert error.retryable is False


@pytest.mark.parametrize(
    ("inner_code", "token_rejected"),
    [
        ("AuthenticationTokenInvalid", True),
        ("PartnerAadTicketRequired", True),
        ("InconsistentClientId", False),
        (None, False),
    ],
)
def test_401_inner_codes_are_distinguishable(inner_code: str | None, token_rejected: bool) -> None:
    body = orjson.dumps({"code": "Unauthorized", "innererror": {"code": inner_code}})
    error = error_from_response(401, {}, body)
    assert isinstance(error, AuthenticationError)
    assert error.inner_code == inner_code
    assert error.token_rejected is token_rejected


@pytest.mark.parametrize(
    ("status", "cls", "kind", "retryable"),
    [
        (400, InvalidRequestError, FailureKind.ANSWERED, False),
        (403, StoreError, FailureKind.ANSWERED, False),
        (404, NotFoundError, FailureKind.ANSWERED, False),
        (408, RequestTimeoutError, FailureKind.NOT_SENT, True),
        (409, ConflictError, FailureKind.ANSWERED, False),
        (429, ThrottledError, FailureKind.ANSWERED, True),
        (500, ServiceUnavailableError, FailureKind.MAYBE_APPLIED, True),
        (502, ServiceUnavailableError, FailureKind.MAYBE_APPLIED, True),
        (503, ServiceUnavailableError, FailureKind.MAYBE_APPLIED, True),
        (504, ServiceUnavailableError, FailureKind.MAYBE_APPLIED, True),
        (501, ServiceUnavailableError, FailureKind.MAYBE_APPLIED, False),
    ],
)
def test_status_maps_to_class_kind_and_retryability(
    status: int, cls: type[StoreError], kind: FailureKind, retryable: bool
) -> None:
    error = error_from_response(status, {}, b"")
    assert type(error) is cls
    assert error.status == status
    assert error.kind is kind
    assert error.retryable is retryable
    assert error.message == f"HTTP {status}: no error details"


def test_html_from_a_proxy_gives_the_status_error_without_echoing_the_body() -> None:
    body = b"<html><body>Bad gateway, secret-ish proxy page</body></html>"
    error = error_from_response(502, {"Content-Type": "text/html"}, body)
    assert type(error) is ServiceUnavailableError
    assert error.service_error is None
    assert error.message == f"HTTP 502: non-JSON body of {len(body)} bytes"
    assert "proxy page" not in str(error)


def test_mixed_casing_body_is_accepted() -> None:
    body = b'{"Code": "BadRequest", "Message": "m", "InnerError": {"Code": "InvalidParameter"}}'
    error = error_from_response(400, {}, body)
    assert (error.code, error.inner_code, error.message) == (
        "BadRequest",
        "InvalidParameter",
        "HTTP 400: m",
    )


def test_retry_after_seconds_on_429_and_plain_dict_headers_any_case() -> None:
    error = error_from_response(429, {"retry-after": "7", "ms-correlationid": "c"}, b"")
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 7.0
    assert error.correlation_id == "c"


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == 30.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("-5", 0.0),
        ("1.5", 1.5),
        ("999999999", 86400.0),
        ("Sun, 06 Nov 1994 08:49:37", None),  # no zone: unreadable, not guessed
    ],
)
def test_retry_after_edge_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=0.0) == expected


def test_retry_after_in_the_past_is_zero() -> None:
    header = email.utils.formatdate(1_000.0, usegmt=True)
    assert parse_retry_after(header, now=2_000.0) == 0.0


def test_errors_pickle_with_all_fields() -> None:
    last = error_from_response(503, HEADERS, b"")
    error = OutcomeUnknownError("gave up", tracking_id="t-1", attempts=4, last_error=last)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is OutcomeUnknownError
    assert (copy.tracking_id, copy.attempts, copy.message) == ("t-1", 4, "gave up")
    assert type(copy.last_error) is ServiceUnavailableError
    assert copy.last_error.correlation_id == "corr-1"
    assert str(copy) == str(error)

    transport = TransportError("reset", kind=FailureKind.NOT_SENT)
    assert pickle.loads(pickle.dumps(transport)).kind is FailureKind.NOT_SENT


def test_str_names_status_codes_and_correlation() -> None:
    error = error_from_response(401, HEADERS, UNAUTHORIZED_BODY)
    assert str(error) == (
        "HTTP 401: Access token validation failure. (status=401, code=Unauthorized, "
        "inner_code=AuthenticationTokenInvalid, correlation_id=corr-1)"
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps)),
    retry_after=st.one_of(st.none(), st.text(max_size=40)),
)
def test_never_raises_on_any_input(status: int, body: bytes, retry_after: str | None) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    error = error_from_response(status, headers, body)
    assert isinstance(error, StoreError)
    assert error.status == status


def test_deeply_nested_body_does_not_raise() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    error = error_from_response(500, {}, body)
    assert isinstance(error, ServiceUnavailableError)


def test_service_error_records_store_sequences_as_tuples() -> None:
    error = ServiceError(data=[1], details=["d"], inner_error=InnerError(data=["x"], details=[]))
    assert error == ServiceError(data=(1,), details=("d",), inner_error=InnerError(data=("x",)))
