"""The emulator's HTTP face: routes, bearer and key checks, fault injection, headers.

Every route is declared once in :data:`ROUTES` (a :class:`Route`: path, endpoint name,
handler, the front door named in its error bodies, the fields that carry its idempotency
key); declaring it registers its endpoint name with the fault plans. Every request runs
through :meth:`StoreService.serve`, which notes it in the request log (when enabled), draws
the fault decision for it (one draw per request, in arrival order), applies faults that
happen before the commit (reset, 401, 429, 503, slow, hang), runs the handler (which may apply
the change), then the faults that happen after it (dropped answer, 500, raw or oversized
answer). Every answer carries ``MS-CorrelationId`` (the caller's, echoed, when sent),
``MS-RequestId``, ``MS-CV`` and ``MS-ServerId``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import hdrs, web

from store_async.emulator import control, v8_routes
from store_async.emulator.faults import (
    FaultKind,
    FaultPlan,
    FaultSequence,
    RawAnswer,
    register_endpoint,
)
from store_async.emulator.hanging import HangingRequests
from store_async.emulator.keys import KeyRejected, StoreIdKeys, looks_like_jwt
from store_async.emulator.limits import UserLimits
from store_async.emulator.request_log import LoggedRequest, RequestLog
from store_async.emulator.state import StoreState
from store_async.emulator.stats import ABORTED, EmulatorStats
from store_async.emulator.tokens import AccessTokens
from store_async.emulator.wire import ApiError, canonical_guid, error_body, lowered, new_guid

__all__ = ["ROUTES", "Route", "StoreService"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RouteHandler = Callable[["StoreService", web.Request], Awaitable[web.StreamResponse]]

_TOKEN_INVALID: Final = "AuthenticationTokenInvalid"
_INCONSISTENT: Final = "InconsistentClientId"
_JSON: Final = "application/json"
_FAULT_ANSWERS: Final = {
    FaultKind.HTTP_429: (429, "RateLimitExceeded", "Rate limit of 200 operations per 300 "
                         "seconds exceeded on aspect {userId; publisherId}."),
    FaultKind.HTTP_503: (503, "ServiceUnavailable", "The service is temporarily unavailable."),
    FaultKind.HTTP_500: (500, "InternalServerError", "An internal error occurred."),
    FaultKind.HTTP_401: (401, _TOKEN_INVALID, "The access token is invalid."),
}  # fmt: skip
_OVERSIZE_CHUNK: Final = b" " * 65536


@dataclass(frozen=True, slots=True)
class Route:
    """One emulated route; declaring it registers ``endpoint`` for fault plans.

    :param path: the aiohttp path pattern.
    :param endpoint: the name used by fault plans, stats and the request log.
    :param handler: ``async (service, request) -> response``; raises ``ApiError`` to refuse.
    :param source: the front door named in error bodies, as the service does ("PurchaseFD").
    :param key_fields: lowercase JSON body fields that carry the idempotency key, first found
        wins (for ``FaultPlan.by_key`` and the request log).
    :param method: the HTTP method.
    :param store: whether ``FaultPlan.rate`` applies (``False`` for Entra ID's endpoint).
    """

    path: str
    endpoint: str
    handler: RouteHandler
    source: str
    key_fields: tuple[str, ...] = ()
    method: str = hdrs.METH_POST
    store: bool = True

    def __post_init__(self) -> None:
        register_endpoint(self.endpoint, faulted_by_default=self.store)


def _idempotency_key(body: bytes, fields: tuple[str, ...]) -> str | None:
    try:
        document = lowered(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        return None
    for name in fields:
        value = document.get(name) if document else None
        if isinstance(value, str) and value:
            return canonical_guid(value) or value
    return None


class StoreService:
    """Routes and checks over a :class:`StoreState`; owned by a ``StoreEmulator``."""

    def __init__(
        self,
        *,
        state: StoreState,
        tokens: AccessTokens,
        keys: StoreIdKeys,
        faults: FaultSequence,
        stats: EmulatorStats,
        strict_keys: bool,
        wire_variants: bool,
        content_length_on_204: bool,
        request_log: RequestLog | None = None,
    ) -> None:
        self.state = state
        self.tokens = tokens
        self.keys = keys
        self.faults = faults
        self.stats = stats
        self.strict_keys = strict_keys
        self.wire_variants = wire_variants
        self.content_length_on_204 = content_length_on_204
        self.request_log = request_log
        self.hanging = HangingRequests()
        self.limits: UserLimits | None = None  # per-user rate limits, when configured
        self._request_number = 0
        self._retry_after = ""
        self._sources: dict[str, str] = {}
        self.set_faults(faults)
        self._server_id = f"store-emulator-{os.getpid()}"
        self._ids = itertools.count(1)
        self._id_prefix = new_guid()[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-"
        self._cv_base = base64.b64encode(os.urandom(9)).decode().replace("/", "_").replace("+", "-")

    def set_faults(self, faults: FaultSequence) -> None:
        """Decide with ``faults`` from the next request on."""
        self.faults = faults
        seconds = faults.plan.retry_after
        self._retry_after = str(int(seconds)) if seconds.is_integer() else str(seconds)

    def application(self) -> web.Application:
        """The aiohttp application with every route of :data:`ROUTES`."""
        app = web.Application(client_max_size=1024 * 1024)
        self._sources = {route.endpoint: route.source for route in ROUTES}
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._route(route))
        if self.content_length_on_204:
            app.on_response_prepare.append(_content_length_zero)
        control.register(app, self)  # /_emulator/...: keys, ledger, stats, faults
        return app

    def replace_faults(self, plan: FaultPlan) -> FaultSequence:
        """Put a new fault plan in force from the next request on (the control plane's PUT)."""
        sequence = plan.sequence()
        self.set_faults(sequence)
        return sequence

    def _route(self, route: Route) -> Handler:
        handler, endpoint, fields = route.handler, route.endpoint, route.key_fields

        async def bound(request: web.Request) -> web.StreamResponse:
            return await handler(self, request)

        async def serve(request: web.Request) -> web.StreamResponse:
            return await self.serve(request, endpoint, bound, key_fields=fields)

        return serve

    async def serve(
        self,
        request: web.Request,
        endpoint: str,
        handler: Handler,
        *,
        key_fields: tuple[str, ...] = (),
    ) -> web.StreamResponse:
        """One request, with its fault decision (and its entry in the request log)."""
        self._request_number += 1
        log, faults = self.request_log, self.faults
        entry = key = None
        if log is not None or (key_fields and faults.wants_keys):
            body = await request.read()  # aiohttp keeps it: the handler's read costs nothing
            key = _idempotency_key(body, key_fields) if key_fields else None
            if log is not None:
                entry = LoggedRequest(
                    self._request_number,
                    endpoint,
                    request.method,
                    request.path,
                    request.headers,
                    body,
                    key,
                )
                log.add(entry)
        decision = faults.decide(endpoint, key)
        if decision is None and entry is None:  # the common case, kept to one frame
            self.stats.counted(endpoint)
            try:
                response = await handler(request)
            except ApiError as error:
                response = self._error(request, endpoint, error)
            self.stats.answers[(endpoint, response.status)] += 1
            return response
        response = await self._faulted(request, endpoint, handler, decision)
        if entry is not None:
            transport = request.transport
            cut = transport is None or transport.is_closing()
            entry.status = ABORTED if cut else response.status
            entry.response_headers = {} if cut else response.headers
        return response

    async def _faulted(
        self,
        request: web.Request,
        endpoint: str,
        handler: Handler,
        decision: FaultKind | RawAnswer | None,
    ) -> web.StreamResponse:
        stats = self.stats
        stats.counted(endpoint)
        raw = None
        if isinstance(decision, RawAnswer):
            fault: FaultKind | None = FaultKind.RAW_ANSWER
            raw = decision
        else:
            fault = decision
        if fault is None:
            return await self._handled(request, endpoint, handler)
        stats.faults[(endpoint, fault)] += 1
        stats.fault_log.append((self._request_number, endpoint, fault))
        if fault is FaultKind.RESET_BEFORE_COMMIT:
            return self._cut(request, endpoint, reset=True)
        if fault in _BEFORE_COMMIT:
            return self._fault_answer(request, endpoint, fault)
        if fault is FaultKind.SLOW:
            await asyncio.sleep(self.faults.plan.slow_seconds)
        elif fault is FaultKind.HANG:
            hanging = self.hanging
            try:
                await hanging.hold()
                return await self._handled(request, endpoint, handler)
            finally:
                await hanging.done()
        response = await self._handled(request, endpoint, handler, count=False)
        if fault is FaultKind.DROP_AFTER_COMMIT:
            return self._cut(request, endpoint, reset=False)
        if fault is FaultKind.HTTP_500:
            return self._fault_answer(request, endpoint, fault)
        if fault is FaultKind.RAW_ANSWER:
            return self._raw(endpoint, raw or self.faults.plan.raw_answer)
        if fault is FaultKind.OVERSIZED and 200 <= response.status < 300:
            return await self._oversized(request, endpoint)
        self.stats.answers[(endpoint, response.status)] += 1
        return response

    async def _handled(
        self, request: web.Request, endpoint: str, handler: Handler, *, count: bool = True
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as error:
            response = self._error(request, endpoint, error)
        if count:
            self.stats.answers[(endpoint, response.status)] += 1
        return response

    # -- answers -------------------------------------------------------------------------

    def _headers(self, request: web.Request) -> dict[str, str]:
        # GUID-shaped ids from a random prefix and a counter: unique per emulator, and a
        # fraction of the cost of two uuid4() per request on the hot path.
        number = next(self._ids)
        request_id = f"{self._id_prefix}{number:012x}"
        incoming = request.headers
        correlation_id = incoming.get("MS-CorrelationId")
        incoming_cv = incoming.get("MS-CV")
        return {
            "MS-CorrelationId": correlation_id or request_id,
            "MS-RequestId": request_id,
            "MS-CV": f"{incoming_cv}.0" if incoming_cv else f"{self._cv_base}{number:x}.0",
            "MS-ServerId": self._server_id,
        }

    def _json(self, request: web.Request, status: int, document: Any) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(document),
            content_type=_JSON,
            headers=self._headers(request),
        )

    def _error(self, request: web.Request, endpoint: str, error: ApiError) -> web.Response:
        headers = self._headers(request)
        headers.update(error.headers)
        body = error_body(
            error.status,
            error.inner_code,
            error.message,
            source=self._sources.get(endpoint, "StoreEmulator"),
            details=error.details,
        )
        return web.Response(status=error.status, body=body, content_type=_JSON, headers=headers)

    def _fault_answer(self, request: web.Request, endpoint: str, fault: FaultKind) -> web.Response:
        status, code, message = _FAULT_ANSWERS[fault]
        extra = {"Retry-After": self._retry_after_value()} if status in (429, 503) else {}
        self.stats.answers[(endpoint, status)] += 1
        return self._error(request, endpoint, ApiError(status, code, message, headers=extra))

    def _retry_after_value(self) -> str:
        plan = self.faults.plan
        if plan.retry_after_date:  # an HTTP-date, whole seconds (RFC 9110 section 10.2.3)
            return email.utils.formatdate(time.time() + plan.retry_after, usegmt=True)
        return self._retry_after

    def _raw(self, endpoint: str, answer: RawAnswer | None) -> web.Response:
        assert answer is not None  # FaultPlan refuses RAW_ANSWER without raw_answer
        self.stats.answers[(endpoint, answer.status)] += 1
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    async def _oversized(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        """A 200 whose body is ``oversize_bytes`` long, chunked: no Content-Length to check."""
        self.stats.answers[(endpoint, 200)] += 1
        response = web.StreamResponse(status=200, headers=self._headers(request))
        response.content_type = _JSON
        response.enable_chunked_encoding()
        await response.prepare(request)
        remaining = self.faults.plan.oversize_bytes
        try:
            while remaining > 0:
                chunk = _OVERSIZE_CHUNK[:remaining]
                await response.write(chunk)
                remaining -= len(chunk)
            await response.write_eof()
        except ConnectionError:  # the client stopped reading at its limit, as it should
            pass
        return response

    def _cut(self, request: web.Request, endpoint: str, *, reset: bool) -> web.Response:
        """Close the connection without an answer; ``reset`` sends a TCP RST (SO_LINGER 0)."""
        self.stats.answers[(endpoint, ABORTED)] += 1
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if reset and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # aiohttp cannot write to the aborted transport and drops this quietly. A 500, so that
        # if it ever leaked it could not pass for a success of an unapplied request.
        return web.Response(status=500)

    # -- checks --------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            document = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError.invalid("The request body is not valid JSON.", "body") from None
        body = lowered(document)
        if body is None:
            raise ApiError.invalid("The request body must be a JSON object.", "body")
        return body

    def _user_for_key(self, value: str, kind: str, client_id: str) -> tuple[str, str]:
        """``(user id, publisher user id)`` behind a Store ID key or an opaque test user."""
        if looks_like_jwt(value):
            try:
                claims = self.keys.verify(value)
            except KeyRejected as rejected:
                raise ApiError(
                    401, _TOKEN_INVALID, f"The Store ID key is invalid: {rejected}."
                ) from None
            if claims.kind != kind:
                raise ApiError(401, _TOKEN_INVALID, f"A {claims.kind} key cannot be used here.")
            if claims.client_id != client_id:
                raise ApiError(
                    401, _INCONSISTENT, "The key's clientId differs from the token's appid."
                )
            return claims.user_id, claims.publisher_user_id
        if self.strict_keys:
            raise ApiError(401, _TOKEN_INVALID, "The identity value is not a Store ID key.")
        return value, value

    def _beneficiary(self, value: Any, field: str, client_id: str) -> tuple[str, str, str]:
        """``(user id, publisher user id, localTicketReference)`` of a UserIdentity."""
        identity = lowered(value)
        if identity is None:
            raise ApiError.invalid(f"{field} must be a UserIdentity object.", field)
        identity_type = identity.get("identitytype")
        key = identity.get("identityvalue")
        reference = identity.get("localticketreference")
        type_ok = isinstance(identity_type, str) and identity_type.lower() == "b2b"
        if type_ok and isinstance(key, str) and key and isinstance(reference, str):
            user_id, publisher_user_id = self._user_for_key(key, "collections", client_id)
            return user_id, publisher_user_id, reference
        bad = [] if type_ok else [f"{field}.identityType"]
        if not isinstance(key, str) or not key:
            bad.append(f"{field}.identityValue")
        if not isinstance(reference, str):
            bad.append(f"{field}.localTicketReference")
        raise ApiError.invalid(f"Invalid {field}.", *bad)

    # The helpers the handler modules (v8_routes) use, under public names.
    read_body = _body
    beneficiary = _beneficiary
    user_for_key = _user_for_key
    json = _json
    headers = _headers

    # -- routes --------------------------------------------------------------------------

    async def _query(self, request: web.Request) -> web.StreamResponse:
        client_id = self.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
        body = await self._body(request)
        raw = body.get("beneficiaries")
        if not isinstance(raw, list) or not raw:
            raise ApiError.invalid("beneficiaries must be a non-empty list.", "beneficiaries")
        beneficiaries = [self._beneficiary(entry, "beneficiaries", client_id) for entry in raw]
        if self.limits is not None:
            for user_id, _, _ in beneficiaries:
                self.limits.enforce(user_id, "query")
        return self._json(request, 200, self.state.query(beneficiaries, body))

    async def _consume(self, request: web.Request) -> web.StreamResponse:
        client_id = self.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
        body = await self._body(request)
        user_id, _, _ = self._beneficiary(body.get("beneficiary"), "beneficiary", client_id)
        if self.limits is not None:
            self.limits.enforce(user_id, "consume")
        self.state.consume(user_id, body)
        return web.Response(status=204, headers=self._headers(request))

    async def _grant(self, request: web.Request) -> web.StreamResponse:
        client_id = self.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
        body = await self._body(request)
        key = body.get("b2bkey")
        if not isinstance(key, str) or not key:
            raise ApiError.invalid("b2bKey is required.", "b2bKey")
        user_id, publisher_user_id = self._user_for_key(key, "purchase", client_id)
        if self.limits is not None:
            self.limits.enforce(user_id, "grant")
        order = self.state.grant(
            user_id, publisher_user_id, client_id, body, variants=self.wire_variants
        )
        return self._json(request, 200, order)

    async def _renew(self, request: web.Request) -> web.StreamResponse:
        # No Authorization header on this call: the token travels in the body.
        body = await self._body(request)
        ticket, key = body.get("serviceticket"), body.get("key")  # "Key" too (doc example)
        if not isinstance(ticket, str) or not ticket:
            raise ApiError.invalid("serviceTicket is required.", "serviceTicket")
        if not isinstance(key, str) or not key:
            raise ApiError.invalid("key is required.", "key")
        client_id = self.tokens.check(ticket)
        if not looks_like_jwt(key):
            raise ApiError(401, _TOKEN_INVALID, "The key is not a Store ID key.")
        try:
            claims = self.keys.verify(key, for_renewal=True)
        except KeyRejected as rejected:
            raise ApiError(
                401, _TOKEN_INVALID, f"The Store ID key is invalid: {rejected}."
            ) from None
        if claims.client_id != client_id:
            raise ApiError(401, _INCONSISTENT, "The key's clientId differs from the token's appid.")
        return self._json(request, 200, {"key": self.keys.renew(key)})

    async def _offline_license(self, request: web.Request) -> web.StreamResponse:
        self.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
        info = request.match_info
        document = self.state.offline_license(
            info["productId"], info["skuId"], info["contentId"], self.tokens.tenant_id
        )
        return self._json(request, 200, document)

    async def _token_v2(self, request: web.Request) -> web.StreamResponse:
        return await self._token(request, v1=False)

    async def _token_v1(self, request: web.Request) -> web.StreamResponse:
        return await self._token(request, v1=True)

    async def _token(self, request: web.Request, *, v1: bool) -> web.StreamResponse:
        try:
            posted = await request.post()
        except ValueError:  # not UTF-8: Entra ID answers such a form as missing its fields
            form = {}
        else:
            form = {key: value for key, value in posted.items() if isinstance(value, str)}
        status, document = self.tokens.token_endpoint(request.match_info["tenant"], form, v1=v1)
        response = self._json(request, status, document)
        response.headers["Cache-Control"] = "no-store, no-cache"
        return response


ROUTES: Final[list[Route]] = [
    Route("/v6.0/collections/query", "query", StoreService._query, "CollectionsFD"),
    Route(
        "/v6.0/collections/consume",
        "consume",
        StoreService._consume,
        "CollectionsFD",
        key_fields=("trackingid", "transactionid"),
    ),
    Route("/v6.0/purchases/grant", "grant", StoreService._grant, "PurchaseFD", ("orderid",)),
    Route("/v6.0/b2b/keys/renew", "renew", StoreService._renew, "CollectionsFD"),
    Route(
        "/V1/Products/{productId}/{skuId}/OfflineLicense/{contentId}",
        "offline_license",
        StoreService._offline_license,
        "BusinessStoreFD",
    ),
    # v8/v9 surface (issue 9)
    Route(
        "/v8.0/collections/consume",
        "consume",
        v8_routes.consume_v8,
        "CollectionsFD",
        key_fields=("trackingid",),
    ),
    Route("/v7.0/purchases/grant", "grant", StoreService._grant, "PurchaseFD", ("orderid",)),
    Route("/v8.0/collections/b2bLicensePreview", "query", v8_routes.license_query, "CollectionsFD"),
    Route("/v9.0/collections/publisherQuery", "query", v8_routes.publisher_query, "CollectionsFD"),
    Route("/v8.0/b2b/orders/query", "orders", v8_routes.query_orders, "PurchaseFD"),
    Route(
        "/v8.0/b2b/recurrences/query", "subscriptions", v8_routes.query_subscriptions, "PurchaseFD"
    ),
    Route(
        "/v8.0/b2b/recurrences/{recurrenceId}/change",
        "subscriptions",
        v8_routes.change_subscription,
        "PurchaseFD",
    ),
    Route("/{tenant}/oauth2/v2.0/token", "token", StoreService._token_v2, "EntraID", store=False),
    Route("/{tenant}/oauth2/token", "token", StoreService._token_v1, "EntraID", store=False),
]
"""Every route the emulator serves; a new route is one line here."""

_BEFORE_COMMIT: Final = frozenset({FaultKind.HTTP_429, FaultKind.HTTP_503, FaultKind.HTTP_401})


async def _content_length_zero(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``Content-Length: 0`` with 204, as the service does (aiohttp drops it, per RFC)."""
    if response.status == 204:
        response.headers[hdrs.CONTENT_LENGTH] = "0"
