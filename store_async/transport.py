"""One HTTP attempt over aiohttp: send, classify the failure, read a bounded body.

:meth:`Transport.post` either returns a 2xx answer or raises a :class:`StoreError` whose
``kind`` tells the retry engine what the failure means (DESIGN rule 1):

========================================================  ==============  ====================
aiohttp outcome                                           kind            why
========================================================  ==============  ====================
``ClientConnectorError`` family (refused, DNS, TLS,        not sent        no connection, so no
certificate, proxy connect), ``ConnectionTimeoutError``                    request bytes left
(connect phase, pool wait included); TLS/certificate                       (TLS: not retried)
errors are final
``ServerDisconnectedError``, ``ClientOSError`` /           maybe applied   the request may have
``ConnectionResetError`` after connecting, a total                         been read and
timeout (``TimeoutError``), ``SocketTimeoutError``,                        committed
``ClientPayloadError`` (cut body), other ``ClientError``
2xx with a body over ``max_response_bytes``                maybe applied   ``ResponseTooLarge
                                                                           Error`` (final)
4xx / 5xx                                                  from status     ``error_from_response``
========================================================  ==============  ====================

Timeouts: each attempt runs under one :class:`aiohttp.ClientTimeout` with a ``total`` (cheap:
one timer per request; ``sock_read`` re-arms on every read) and a ``connect`` below it. The
``connect`` timeout covers waiting for a pooled connection and opening one, and raises
``ConnectionTimeoutError`` (*not sent*). A bare total timeout therefore fires after a connection
was obtained: the request may be on the wire, so it is *maybe applied*. When the two are equal
(a last attempt clipped to the remaining deadline) a total timeout in the pool wait cannot be
told apart and is treated as *maybe applied*: conservative, never wrong.

Redirects are not followed: a 3xx would carry the bearer token to another URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final, TypeAlias

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from store_async.errors import (
    FailureKind,
    ResponseTooLargeError,
    StoreError,
    TransportError,
    error_from_response,
)

__all__ = ["Answer", "Transport", "classify_exception"]

Answer: TypeAlias = tuple[int, "CIMultiDictProxy[str]", bytes]
"""A 2xx answer: status, headers, body (``b""`` for 204)."""

_NOT_SENT: Final = FailureKind.NOT_SENT
_MAYBE_APPLIED: Final = FailureKind.MAYBE_APPLIED
_ERROR_BODY_LIMIT: Final = 64 * 1024  # error bodies beyond this are dropped, not buffered
_NETWORK_ERRORS: Final = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
_SECRET_HEADERS: Final = ("Authorization", "Proxy-Authorization")


def classify_exception(error: BaseException) -> FailureKind:
    """Whether an exception raised by aiohttp during an attempt means *not sent*."""
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return _NOT_SENT
    return _MAYBE_APPLIED


_PERMANENT: Final = (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, aiohttp.InvalidURL)
"""Failures that no retry can cure (a certificate will not become valid in 50 ms)."""


def _redact_request_info(error: aiohttp.ClientResponseError) -> None:
    """Blank the request headers an aiohttp error keeps (``request_info``, also in ``args``
    and ``repr``): they hold the bearer token, and the error stays chained as ``__cause__``."""
    info = error.request_info
    if isinstance(info, aiohttp.RequestInfo) and info.headers:
        headers = CIMultiDict(info.headers)
        for name in _SECRET_HEADERS:
            if name in headers:
                headers[name] = "<redacted>"
        error.request_info = aiohttp.RequestInfo(
            info.url, info.method, CIMultiDictProxy(headers), info.real_url
        )
        error.args = (error.request_info, *error.args[1:])


def _transport_error(error: BaseException, operation: str) -> TransportError:
    if isinstance(error, aiohttp.ClientResponseError):
        _redact_request_info(error)
    kind = classify_exception(error)
    detail = str(error) or "no details"
    failure = TransportError(
        f"{operation}: {type(error).__name__} ({kind.value.replace('_', ' ')}): {detail[:300]}",
        kind=kind,
    )
    if isinstance(error, _PERMANENT):
        failure.retryable = False
    return failure


class Transport:
    """Sends one request over a shared :class:`aiohttp.ClientSession`.

    :param session: the client's session (the transport never closes it).
    :param max_response_bytes: larger 2xx bodies raise :class:`ResponseTooLargeError` without
        being read whole (``Content-Length`` is checked first; otherwise the body is streamed
        and counted).
    """

    __slots__ = ("_max_bytes", "_session")

    def __init__(self, session: aiohttp.ClientSession, *, max_response_bytes: int) -> None:
        self._session = session
        self._max_bytes = max_response_bytes

    async def post(
        self,
        url: URL,
        body: bytes | None,
        headers: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
        operation: str,
        method: str = "POST",
    ) -> Answer:
        """Send ``body`` once (POST unless ``method`` says otherwise). Returns a 2xx answer;
        raises a classified :class:`StoreError`."""
        try:
            response = await self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
            )
        except _NETWORK_ERRORS as error:
            raise _transport_error(error, operation) from error
        status = response.status
        if status == 204:  # no body, no Content-Length: skip the bounded read entirely
            response.release()
            return status, response.headers, b""
        limit = self._max_bytes if 200 <= status < 300 else _ERROR_BODY_LIMIT
        try:
            payload = await _read_bounded(response, limit)
        except ResponseTooLargeError as error:
            response.close()  # do not drain megabytes just to reuse the connection
            if 200 <= status < 300:
                raise _with_headers(error, response) from None
            payload = b""
        except _NETWORK_ERRORS as error:
            response.close()
            raise _transport_error(error, operation) from error
        else:
            response.release()
        if 200 <= status < 300:
            return status, response.headers, payload
        raise error_from_response(status, response.headers, payload)


def _with_headers(error: StoreError, response: aiohttp.ClientResponse) -> StoreError:
    headers = response.headers
    error.status = response.status
    error.correlation_id = headers.get("MS-CorrelationId")
    error.request_id = headers.get("MS-RequestId")
    error.cv = headers.get("MS-CV")
    return error


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body if it is at most ``limit`` bytes; else ``ResponseTooLargeError``.

    Never holds much more than ``limit`` bytes (plus one read buffer) in memory.
    """
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseTooLargeError(
            f"the response announces {length} bytes, more than max_response_bytes={limit}"
        )
    if length is not None and aiohttp.hdrs.CONTENT_ENCODING not in response.headers:
        return await response.read()  # exactly `length` bytes, already checked
    # Unknown length (chunked) or compressed (the decoded size is unknown): count as we go.
    content = response.content
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLargeError(
                f"the response is larger than max_response_bytes={limit}; stopped reading"
            )
    return bytes(body)
