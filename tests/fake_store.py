"""A small, precisely controllable fake of the Store services for the engine's tests.

A real ``aiohttp.web`` server on 127.0.0.1 (real sockets, real HTTP). Each request gets a
:class:`Fault` from ``store.plan`` (a callable; :func:`script` and :func:`random_faults` build
the usual ones) and the server records what it received and what it *applied*:

- ``applied[key]``: how many times the operation identified by ``key`` (tracking id,
  transaction id, order id) was committed. Like the real service it deduplicates, so a correct
  client and a correct server give 1; ``replays[key]`` counts the deduplicated resends;
- ``bodies[key]``: every distinct body received for ``key`` (a correct client sends one);
- ``sends[path]``: requests per endpoint, ``key_sends[key]`` per idempotency key;
  ``received``: every request (path, headers, body).

Faults model what networks do: drop the connection before the commit (``RESET_BEFORE_COMMIT``)
or after it (``DROP_AFTER_COMMIT``, the response is lost), answer 500/503/429 without
committing, refuse the token (401), or hang until ``release()`` is called.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from store_async.endpoints import Endpoints

GOOD_TOKEN = "good-token-0123456789"


class Fault(enum.Enum):
    NONE = "none"
    RESET_BEFORE_COMMIT = "reset_before_commit"
    DROP_AFTER_COMMIT = "drop_after_commit"
    ERROR_500 = "500"
    ERROR_503 = "503"
    THROTTLE_429 = "429"
    THROTTLE_429_DATE = "429_date"
    TOKEN_INVALID_401 = "401"
    HANG = "hang"


Plan = Callable[[str, int, "str | None"], Fault]
"""``plan(path, request_number, idempotency_key) -> Fault``."""


def script(*faults: Fault) -> Plan:
    """The given faults in order, then ``Fault.NONE`` forever."""
    queue = list(faults)

    def plan(_path: str, _number: int, _key: str | None) -> Fault:
        return queue.pop(0) if queue else Fault.NONE

    return plan


def always(fault: Fault) -> Plan:
    return lambda _path, _number, _key: fault


MIXED = (
    Fault.RESET_BEFORE_COMMIT,
    Fault.DROP_AFTER_COMMIT,
    Fault.ERROR_500,
    Fault.ERROR_503,
    Fault.THROTTLE_429,
)


def random_faults(rate: float, *, seed: int, kinds: Iterable[Fault] = MIXED) -> Plan:
    """Each request fails with probability ``rate``, with one of ``kinds`` at random."""
    rng = random.Random(seed)
    choices = tuple(kinds)

    def plan(_path: str, _number: int, _key: str | None) -> Fault:
        return rng.choice(choices) if rng.random() < rate else Fault.NONE

    return plan


class Received(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_store_id_key(
    kind: str = "collections", *, user_id: str = "user-1", serial: int = 0
) -> str:
    """An unsigned-but-well-formed Store ID key JWT with the documented claims."""
    prefix = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
    host = f"https://{kind}.mp.microsoft.com"
    now = int(time.time())
    claims = {
        "iat": now,
        "nbf": now - 60,
        "exp": now + 30 * 86400,
        "iss": f"{host}/v6.0/keys",
        "aud": f"{host}/v6.0/keys",
        prefix + "clientId": "client-1",
        prefix + "userId": user_id,
        prefix + "refreshUri": f"{host}/v6.0/b2b/keys/renew",
        prefix + "payload": _b64(f"opaque-{serial}".encode()),
        "serial": serial,
    }
    header = {"typ": "JWT", "alg": "RS256"}
    return ".".join(
        (_b64(orjson.dumps(header)), _b64(orjson.dumps(claims)), _b64(b"signature-" + bytes(8)))
    )


def collection_item(number: int) -> dict[str, Any]:
    return {
        "itemId": f"{number:032x}",
        "productId": "9NBLGGH4TNMP",
        "skuId": "0010",
        "productType": "UnmanagedConsumable",
        "skuType": "Full",
        "status": "Active",
        "ownershipType": "OwnedByBeneficiary",
        "localTicketReference": "ref-1",
        "transactionId": "f9ad7ba3-9a86-41a5-8fa6-6e1d3b0da5b4",
        "acquiredDate": "2024-01-01T00:00:00.0000000+00:00",
        "startDate": "2024-01-01T00:00:00.0000000+00:00",
        "endDate": "9999-12-31T23:59:59.9999999+00:00",
        "modifiedDate": "2024-01-01T00:00:00.0000000+00:00",
    }


def order(order_id: str) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "orderState": "Purchased",
        "createdtime": "2024-01-01T00:00:00.2068724+00:00",
        "purchaser": {"identityType": "pub", "identityValue": "user-1"},
        "clientContext": {"client": "client-1"},
        "language": "en-us",
        "market": "us",
        "currencyCode": "USD",
        "isPIRequired": False,
        "totalAmount": 0.0,
        "totalTaxAmount": 0.0,
        "orderLineItems": [],
    }


class FakeStore:
    """The fake server. ``async with FakeStore() as store: store.endpoints ...``."""

    def __init__(self, *, plan: Plan | None = None, tokens: Iterable[str] = (GOOD_TOKEN,)) -> None:
        self.plan: Plan = plan or always(Fault.NONE)
        self.valid_tokens = set(tokens)
        self.retry_after = "1"
        self.retry_after_date = "Wed, 21 Oct 2037 07:28:00 GMT"
        self.applied: Counter[str] = Counter()
        self.replays: Counter[str] = Counter()
        self.bodies: defaultdict[str, set[bytes]] = defaultdict(set)
        self.tracking_ids_by_item: defaultdict[str, set[str]] = defaultdict(set)
        self.sends: Counter[str] = Counter()
        self.key_sends: Counter[str] = Counter()
        self.received: list[Received] = []
        self.query_pages: list[dict[str, Any]] = [{"items": [collection_item(1)]}]
        self.raw_answer: tuple[int, dict[str, str], bytes] | None = None
        """When set, every request gets this (status, headers, body) after its fault."""
        self.oversize: int | None = None
        """When set, 2xx bodies are this many bytes, streamed chunked (no Content-Length)."""
        self.handling = 0
        self.started = asyncio.Event()
        self._idle = asyncio.Condition()
        self._release = asyncio.Event()
        self._numbers = itertools.count(1)
        self._renewals = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints.single(self.url)

    def release(self) -> None:
        """Let hanging requests continue."""
        self._release.set()

    async def drained(self) -> None:
        """Wait until no request is hanging any more."""
        async with self._idle:
            await self._idle.wait_for(lambda: self.handling == 0)

    async def __aenter__(self) -> FakeStore:
        app = web.Application()
        app.router.add_post("/v6.0/collections/consume", self._consume)
        app.router.add_post("/v6.0/collections/query", self._query)
        app.router.add_post("/v6.0/purchases/grant", self._grant)
        app.router.add_post("/v6.0/b2b/keys/renew", self._renew)
        app.router.add_post(
            "/V1/Products/{product}/{sku}/OfflineLicense/{content}", self._offline_license
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        assert self._runner is not None
        await self._runner.cleanup()

    # -- the common pipeline -------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        key: str | None,
        respond: Callable[[], Awaitable[web.StreamResponse]],
        *,
        token: str | None,
    ) -> web.StreamResponse:
        if key is not None:
            self.key_sends[key] += 1
        fault = self.plan(request.path, next(self._numbers), key)
        if fault is Fault.HANG:
            self.handling += 1
            self.started.set()
            try:
                await self._release.wait()
            finally:
                self.handling -= 1
                async with self._idle:
                    self._idle.notify_all()
        if fault is Fault.RESET_BEFORE_COMMIT:
            return self._abort(request)
        if token not in self.valid_tokens or fault is Fault.TOKEN_INVALID_401:
            return _error(401, "Unauthorized", "AuthenticationTokenInvalid")
        if fault is Fault.ERROR_500:
            return _error(500, "InternalServerError", "Oops")
        if fault is Fault.ERROR_503:
            return _error(503, "ServiceUnavailable", "Busy")
        if fault is Fault.THROTTLE_429:
            return _error(429, "TooManyRequests", "Slow down", {"Retry-After": self.retry_after})
        if fault is Fault.THROTTLE_429_DATE:
            headers = {"Retry-After": self.retry_after_date}
            return _error(429, "TooManyRequests", "Slow down", headers)
        if key is not None:
            if self.applied[key]:
                self.replays[key] += 1
            else:
                self.applied[key] += 1
        if fault is Fault.DROP_AFTER_COMMIT:
            return self._abort(request)
        if self.raw_answer is not None:
            status, headers, body = self.raw_answer
            return web.Response(status=status, headers=headers, body=body)
        return await respond()

    async def _record(self, request: web.Request) -> tuple[bytes, dict[str, Any]]:
        body = await request.read()
        self.sends[request.path] += 1
        self.received.append(Received(request.path, dict(request.headers), body))
        document = orjson.loads(body) if body else {}
        return body, document

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        value = request.headers.get("Authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=204)

    async def _json(self, request: web.Request, document: Any) -> web.StreamResponse:
        if self.oversize is None:
            return web.Response(body=orjson.dumps(document), content_type="application/json")
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(self.oversize // len(chunk) + 1):
            await response.write(chunk)
        await response.write_eof()
        return response

    # -- endpoints -------------------------------------------------------------------------

    async def _consume(self, request: web.Request) -> web.StreamResponse:
        body, document = await self._record(request)
        key = str(document.get("trackingId") or document.get("transactionId"))
        if document.get("itemId") and document.get("trackingId"):
            self.tracking_ids_by_item[document["itemId"]].add(document["trackingId"])
        self.bodies[key].add(body)
        headers = {"MS-CorrelationId": f"corr-{key}", "MS-RequestId": "req-1", "MS-CV": "cv.1"}

        async def respond() -> web.StreamResponse:
            return web.Response(status=204, headers=headers)

        return await self._serve(request, key, respond, token=self._bearer(request))

    async def _query(self, request: web.Request) -> web.StreamResponse:
        _body, document = await self._record(request)
        token = document.get("continuationToken")
        index = int(token.removeprefix("page-")) if token and token.startswith("page-") else 0
        page = dict(self.query_pages[index])
        if index + 1 < len(self.query_pages):
            page["continuationToken"] = f"page-{index + 1}"
        return await self._serve(
            request, None, lambda: self._json(request, page), token=self._bearer(request)
        )

    async def _grant(self, request: web.Request) -> web.StreamResponse:
        body, document = await self._record(request)
        key = document["orderId"]
        self.bodies[key].add(body)
        return await self._serve(
            request, key, lambda: self._json(request, order(key)), token=self._bearer(request)
        )

    async def _offline_license(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        info = request.match_info
        document = {
            "productKey": {"productId": info["product"], "skuId": info["sku"]},
            "licenseBlob": "QUJD",
            "licenseInstanceId": "1",
            "requestorId": "org-1",
            "contentId": info["content"],
        }
        return await self._serve(
            request, None, lambda: self._json(request, document), token=self._bearer(request)
        )

    async def _renew(self, request: web.Request) -> web.StreamResponse:
        _body, document = await self._record(request)
        new_key = make_store_id_key(serial=next(self._renewals))
        token = document.get("serviceTicket")
        if request.headers.get("Authorization") is not None:
            return _error(400, "BadRequest", "renew takes no Authorization header")
        return await self._serve(
            request, None, lambda: self._json(request, {"key": new_key}), token=token
        )


def _error(
    status: int, code: str, inner: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "code": code,
        "data": [],
        "details": [],
        "innererror": {"code": inner, "data": [], "details": [], "message": f"{inner} message"},
        "message": f"{code} message",
        "source": "FakeStore",
    }
    all_headers = {"MS-CorrelationId": "corr-error", "MS-RequestId": "req-error", "MS-CV": "cv.e"}
    all_headers.update(headers or {})
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=all_headers
    )


class FakeClock:
    """A clock that only moves when told to (or when ``sleep`` is awaited)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """A sleep that advances this clock instead of waiting (yields once to the loop)."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class CountingCredential:
    """An ``AsyncTokenCredential`` (``get_token`` and ``get_token_info``) that counts its calls.

    ``tokens`` are handed out in order (the last one repeats). ``gate``, when set, holds every
    call until it is opened. ``failures`` are call numbers (1-based) that raise ``error``.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (GOOD_TOKEN,),
        *,
        lifetime: float = 3600.0,
        refresh_in: float | None = None,
        clock: Callable[[], float] = time.time,
        gate: asyncio.Event | None = None,
        failures: Iterable[int] = (),
        error: Exception | None = None,
    ) -> None:
        self.tokens = list(tokens)
        self.lifetime = lifetime
        self.refresh_in = refresh_in
        self.clock = clock
        self.gate = gate
        self.failures = set(failures)
        self.error = error or RuntimeError("identity endpoint down: client_secret=s3cr3t")
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.entered = asyncio.Event()
        """Set when a call starts."""
        self.returned = asyncio.Event()
        """Set when a call returns a token (waiters wake after the caller stored it)."""

    async def _next(self, scopes: tuple[str, ...]) -> tuple[str, int, int | None]:
        self.calls += 1
        number = self.calls
        self.scopes.append(scopes)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if number in self.failures:
            raise self.error
        token = self.tokens[min(number, len(self.tokens)) - 1]
        now = self.clock()
        refresh_on = None if self.refresh_in is None else int(now + self.refresh_in)
        self.returned.set()
        return token, int(now + self.lifetime), refresh_on

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        token, expires_on, refresh_on = await self._next(scopes)
        return AccessTokenInfo(token, expires_on, refresh_on=refresh_on)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        token, expires_on, _ = await self._next(scopes)
        return AccessToken(token, expires_on)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> CountingCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class LegacyCredential(CountingCredential):
    """A credential with ``get_token`` only (older azure-identity)."""

    get_token_info = None  # type: ignore[assignment]


RawReply = Callable[[asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server that reads one HTTP request per connection and runs ``reply(writer)``:
    for answers no well-behaved HTTP server would give (cut bodies, lying lengths)."""

    def __init__(self, reply: RawReply) -> None:
        self.reply = reply
        self.requests = 0
        self.bytes_written = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            await self.reply(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()
