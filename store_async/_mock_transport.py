"""``MockTransport``: answer a client's requests from a function, for your unit tests.

::

    def handler(request: MockRequest) -> MockResponse:
        assert request.json()["trackingId"]
        return MockResponse(204)

    async with StoreClient(StaticTokenCredential("t"), transport=MockTransport(handler)) as store:
        await store.consume(ConsumeRequest.for_item(user, item_id))

The handler (plain or ``async``) gets each attempt as a :class:`MockRequest` and returns a
:class:`MockResponse`; a non-2xx one becomes the same typed error a real answer would
(:class:`~store_async.ThrottledError` with ``retry_after`` for a 429...). To simulate the network
failing, raise :class:`~store_async.TransportError` with ``kind=FailureKind.NOT_SENT`` or
``MAYBE_APPLIED``. Every request is kept in :attr:`MockTransport.requests`.

For behaviour closer to the real service (deduplication, balances, seeded faults, a ledger),
use the emulator (``store_async.emulator``) over real sockets instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from store_async._operations import Answer
from store_async._responses import error_from_response
from store_async.errors import ValidationError

__all__ = ["MockRequest", "MockResponse", "MockTransport"]


def _body_repr(body: bytes | None) -> str:
    return "None" if body is None else f"<{len(body)} bytes>"


@attrs.frozen(kw_only=True)
class MockRequest:
    """One attempt as the transport saw it. ``headers`` (``Authorization``) and ``body`` (Store ID
    keys) hold secrets: ``repr`` shows neither."""

    method: str
    url: URL
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes | None = attrs.field(repr=_body_repr)
    time_left: float
    """Seconds the attempt was given at most."""

    def json(self) -> Any:
        """The body parsed as JSON (``None`` without a body)."""
        return None if self.body is None else orjson.loads(self.body)


@attrs.frozen(kw_only=True, init=False)
class MockResponse:
    """What the handler answers: a status, headers and a body (or ``json=``, encoded)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __init__(
        self,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        json: Any = None,
    ) -> None:
        if json is not None:
            if body:
                raise ValidationError("MockResponse: give body or json, not both")
            body = orjson.dumps(json)
        self.__attrs_init__(status=status, headers=dict(headers or {}), body=body)


Handler = Callable[[MockRequest], "MockResponse | Awaitable[MockResponse]"]


class MockTransport:
    """A :class:`~store_async._transport.Transport` that calls ``handler`` for every attempt."""

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise ValidationError("MockTransport needs a callable handler(request) -> response")
        self._handler = handler
        self.requests: list[MockRequest] = []
        """Every request sent, in order."""

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        time_left: float,
    ) -> Answer:
        request = MockRequest(
            method=method, url=url, headers=dict(headers), body=body, time_left=time_left
        )
        self.requests.append(request)
        response = self._handler(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, MockResponse):
            raise ValidationError(
                f"the MockTransport handler must return a MockResponse, not "
                f"{type(response).__name__}"
            )
        headers_in = CIMultiDictProxy(CIMultiDict(response.headers))
        if 200 <= response.status < 300:
            return response.status, headers_in, response.body
        raise error_from_response(response.status, headers_in, response.body)
