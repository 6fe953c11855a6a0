"""The transport seam: one HTTP attempt, and its aiohttp implementation.

A :class:`Transport` is any object with one async method, :meth:`Transport.send`, that sends one
request and either returns a 2xx answer or raises a classified
:class:`~store_async.errors.StoreError` (docs/design.md, rule 1). :class:`AiohttpTransport` is
the one ``StoreClient`` builds; :class:`~store_async.MockTransport` serves users' unit tests;
a custom one goes to ``StoreClient(transport=...)``.

How :class:`AiohttpTransport` classifies what aiohttp does:

========================================================  ==============  ====================
aiohttp outcome                                           kind            why
========================================================  ==============  ====================
``ClientConnectorError`` family (refused, DNS, TLS,        not sent        no connection, so no
certificate, proxy connect), ``ConnectionTimeoutError``                    request bytes left
(connect phase); TLS/certificate errors are final                          (TLS: not retried)
``ServerDisconnectedError``, ``ClientOSError`` /           maybe applied   the request may have
``ConnectionResetError`` after connecting, a total                         been read and
timeout (``TimeoutError``), ``SocketTimeoutError``,                        committed
``ClientPayloadError`` (cut body), other ``ClientError``
2xx with a body over ``max_response_bytes``                maybe applied   ``ResponseTooLarge
                                                                           Error`` (final)
4xx / 5xx                                                  from status     ``error_from_response``
========================================================  ==============  ====================

Timeouts: each attempt runs under one :class:`aiohttp.ClientTimeout` with a ``total`` and a
``connect`` below it. The engine never lets more attempts run than the pool has connections
(:class:`ConnectionSlots`), so aiohttp's own pool queue (unfair, and counted against ``connect``)
never forms: ``connect`` times only the opening of a connection, and a timeout there is *not
sent*. A bare total timeout fires after a connection was obtained: *maybe applied*.

Redirects are not followed: a 3xx would carry the bearer token to another URL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from store_async._operations import Answer
from store_async._responses import error_from_response
from store_async.errors import (
    FailureKind,
    ResponseTooLargeError,
    StoreError,
    TransportError,
)

__all__ = ["AiohttpTransport", "ConnectionSlots", "Transport", "classify_exception"]

_NOT_SENT: Final = FailureKind.NOT_SENT
_MAYBE_APPLIED: Final = FailureKind.MAYBE_APPLIED
_ERROR_BODY_LIMIT: Final = 64 * 1024  # error bodies beyond this are dropped, not buffered
_NETWORK_ERRORS: Final = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
_SECRET_HEADERS: Final = ("Authorization", "Proxy-Authorization")
# aiohttp rounds timeouts of 5 s or more up to the next whole second of loop time (cheaper
# timers). An attempt that must end by the call's deadline gets an exact timeout instead.
_NO_CEILING: Final = 1e12
_CEILING_SLACK: Final = 1.0


@runtime_checkable
class Transport(Protocol):
    """Sends one attempt. ``StoreClient(transport=...)`` takes any object with this method."""

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        time_left: float,
    ) -> Answer:
        """Send once and return ``(status, headers, body)`` for a 2xx answer.

        :param time_left: seconds this attempt may take at most (the call's time left); a
            transport may end it sooner (its own per-attempt limit).
        :raises StoreError: any failure, classified: a non-2xx answer as
            :func:`~store_async._responses.error_from_response` builds it, a network failure as
            :class:`~store_async.errors.TransportError` with ``kind`` *not sent* or *maybe
            applied*.
        """
        ...


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


def _transport_error(error: BaseException) -> TransportError:
    if isinstance(error, aiohttp.ClientResponseError):
        _redact_request_info(error)
    kind = classify_exception(error)
    detail = str(error) or "no details"
    failure = TransportError(
        f"{type(error).__name__} ({kind.value.replace('_', ' ')}): {detail[:300]}", kind=kind
    )
    if isinstance(error, _PERMANENT):
        failure.retryable = False
    return failure


class AiohttpTransport:
    """One attempt over a shared :class:`aiohttp.ClientSession` (never closed by it).

    :param session: the client's session.
    :param max_response_bytes: larger 2xx bodies raise :class:`ResponseTooLargeError` without
        being read whole (``Content-Length`` is checked first; otherwise the body is streamed
        and counted).
    :param attempt_timeout: seconds one attempt may take at most.
    :param connect_timeout: seconds to open a connection (a timeout then is *not sent*).
    """

    __slots__ = ("_attempt_timeout", "_closing", "_connect", "_full", "_max_bytes", "_session")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_response_bytes: int,
        attempt_timeout: float,
        connect_timeout: float,
    ) -> None:
        self._session = session
        self._max_bytes = max_response_bytes
        self._attempt_timeout = attempt_timeout
        self._connect = connect_timeout
        # Built once: the common attempt (plenty of time left) reuses it.
        self._full = aiohttp.ClientTimeout(total=attempt_timeout, connect=connect_timeout)
        self._closing = False

    def closing(self) -> None:
        """The client is closing its session: aiohttp cancels what it has in flight, which
        this transport then reports as a typed error, not as a ``CancelledError`` raised into
        calls nobody cancelled."""
        self._closing = True

    def _timeout(self, remaining: float) -> aiohttp.ClientTimeout:
        """The attempt timeout, or one that ends exactly when the call must end."""
        if remaining >= self._attempt_timeout + _CEILING_SLACK:
            return self._full
        total = max(min(remaining, self._attempt_timeout), 0.001)
        return aiohttp.ClientTimeout(
            total=total, connect=min(self._connect, total), ceil_threshold=_NO_CEILING
        )

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        time_left: float,
    ) -> Answer:
        """Send once. Returns a 2xx answer; raises a classified :class:`StoreError`."""
        try:
            return await self._send(method, url, headers, body, time_left)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing and (task is None or not task.cancelling()):
                raise TransportError(
                    "the StoreClient was closed during the attempt (maybe applied)",
                    kind=_MAYBE_APPLIED,
                ) from None
            raise

    async def _send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        time_left: float,
    ) -> Answer:
        try:
            response = await self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(time_left),
                allow_redirects=False,
            )
        except _NETWORK_ERRORS as error:
            raise _transport_error(error) from error
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
            raise _transport_error(error) from error
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


class ConnectionSlots:
    """At most ``size`` attempts in flight, queued fairly (first come, first served).

    aiohttp queues requests beyond its pool limit itself, but unfairly (p99 of 1.2 s at 1,024
    callers on 100 connections) and against the *connect* timeout, so a burst larger than the
    pool fails as *not sent* against a healthy server. Queueing here instead keeps aiohttp's
    queue empty; a wait is bounded by the call's own timeout and spends no retry budget.
    ``size=0`` means no limit.
    """

    __slots__ = ("_closed", "_free", "_unlimited", "_waiters")

    def __init__(self, size: int) -> None:
        self._unlimited = size == 0
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed: StoreError | None = None

    def try_take(self) -> bool:
        """Take a slot without waiting (hot path); ``False`` when none is free."""
        if self._unlimited:
            return True
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self, timeout: float) -> None:
        """Wait (fairly) for a slot, at most ``timeout`` seconds.

        :raises TransportError: *not sent*: the time ran out, or the client was closed.
        """
        if self._closed is not None:
            error = TransportError(self._closed.message, kind=_NOT_SENT)
            error.retryable = False
            raise error
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise TransportError(
                "the call's timeout ran out while it waited for a free connection (all "
                "connections busy: raise StoreClient(limit=...) or send fewer calls at once)",
                kind=_NOT_SENT,
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give()  # granted just as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Return a slot: hand it to the first waiter, if any."""
        if self._unlimited:
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def close(self) -> None:
        """Fail every waiter, and every later taker, with a *not sent* ``TransportError``."""
        message = "the StoreClient was closed before this call could be sent"
        self._closed = TransportError(message, kind=_NOT_SENT)
        self._closed.retryable = False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                error = TransportError(message, kind=_NOT_SENT)  # one each: no shared traceback
                error.retryable = False
                waiter.set_exception(error)
