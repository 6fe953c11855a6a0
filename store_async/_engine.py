"""The engine: runs one call — a bare first attempt, then (only on failure) the retry driver.

:meth:`Engine.call` takes ``(route, body, key, context)``. Its success path is what every
consume pays, millions of times, so it does as little as possible: one clock read, the token
cache's synchronous fast path, a connection slot taken without awaiting, headers prebuilt per
token, one ``await`` of the transport, the route's parser, one budget deposit. No tenacity
object, no call object, no closure, no logging call. What is fixed per client (hooks set or not)
is decided once, at construction, not re-checked per call.

Everything else — waiting for a token or a connection slot, hooks, a per-call timeout or attempt
count, an operation whose access token travels in its body, retries — goes through one slotted
:class:`~store_async._retry.Call` and :meth:`Engine._attempt`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy

from store_async._auth import TokenCache
from store_async._budget import RetryBudget
from store_async._operations import BoundRoute
from store_async._policy import RetryPolicy
from store_async._retry import Call, Retrier
from store_async._transport import ConnectionSlots, Transport
from store_async.errors import (
    AuthenticationError,
    FailureKind,
    StoreError,
    TransportError,
    ValidationError,
)
from store_async.instrumentation._hooks import AttemptFinished, AttemptStarted, ClientHooks
from store_async.models import _checks

__all__ = ["NOT_OPEN", "Engine"]

T = TypeVar("T")

_JSON: Final = "application/json"
Headers = CIMultiDictProxy[str]
"""Prebuilt request headers: aiohttp copies a multidict without converting it first."""
NOT_OPEN: Final = "the StoreClient is not open: use `async with StoreClient(...) as store:`"


def _headers(values: dict[str, str]) -> Headers:
    return CIMultiDictProxy(CIMultiDict(values))


class Engine:
    """Token, headers, connection slots, attempts and retries for one :class:`StoreClient`."""

    __slots__ = (
        "_bare",
        "_bare_headers",
        "_budget",
        "_clock",
        "_header_token",
        "_hooks",
        "_json_headers",
        "_limit",
        "_policy",
        "_retrier",
        "_slots",
        "_timeout",
        "_token_body_headers",
        "_tokens",
        "_user_agent",
        "transport",
    )

    def __init__(
        self,
        tokens: TokenCache,
        policy: RetryPolicy,
        *,
        hooks: ClientHooks | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        user_agent: str,
        limit: int,
    ) -> None:
        self.transport: Transport | None = None
        """Set while the client is open."""
        self._tokens = tokens
        self._policy = policy
        self._budget = RetryBudget.from_policy(policy, clock)
        self._hooks = hooks
        self._bare = hooks is None  # decided once: the fast path serves only hook-less clients
        self._clock = clock
        self._timeout = policy.timeout
        self._limit = limit
        self._slots = ConnectionSlots(limit)
        self._retrier = Retrier(policy, self._budget, clock, sleep, self._attempt)
        self._user_agent = user_agent
        # An operation whose token travels in its body gets no Authorization header.
        self._token_body_headers = _headers({"Content-Type": _JSON, "User-Agent": user_agent})
        self._header_token: str | None = None
        self._json_headers = self._bare_headers = self._token_body_headers

    @property
    def budget(self) -> RetryBudget:
        return self._budget

    def open(self, transport: Transport) -> None:
        self._slots = ConnectionSlots(self._limit)
        self.transport = transport

    def close(self) -> None:
        """No new attempt starts; calls waiting for a connection slot end *not sent*."""
        self.transport = None
        self._slots.close()

    async def call(
        self,
        route: BoundRoute[T],
        body: bytes | None,
        key: str | None,
        context: Any,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> T:
        """Run one call: the first attempt bare when it can be, the rest under tenacity."""
        started = self._clock()
        transport = self.transport
        if (
            self._bare
            and transport is not None
            and timeout is None
            and attempts is None
            and route.token_body is None
        ):
            token = self._tokens.fresh_token()
            slots = self._slots
            if token is not None and slots.try_take():
                if token is not self._header_token:
                    self._set_headers(token)
                try:
                    try:
                        answer = await transport.send(
                            route.method,
                            route.url,
                            self._json_headers if body is not None else self._bare_headers,
                            body,
                            self._timeout,
                        )
                    finally:
                        slots.give()
                    result = route.parse(answer, 1, context)
                except StoreError as error:
                    if isinstance(error, AuthenticationError) and error.token_rejected:
                        self._tokens.invalidate(token)
                    call = Call(
                        self._retrier,
                        route,
                        body,
                        key,
                        context,
                        started + self._timeout,
                        self._policy.attempts,
                    )
                    result = await call.retry(error)
                self._budget.deposit()
                return result
        return await self._call(route, body, key, context, started, timeout, attempts)

    async def _call(
        self,
        route: BoundRoute[T],
        body: bytes | None,
        key: str | None,
        context: Any,
        started: float,
        timeout: float | None,
        attempts: int | None,
    ) -> T:
        """The general path: one :class:`Call`, its first attempt, then retries if needed."""
        if self.transport is None:
            raise ValidationError(NOT_OPEN)
        seconds = self._timeout if timeout is None else _checks.seconds(timeout, "timeout")
        max_attempts = self._policy.attempts if attempts is None else _checks.attempts(attempts)
        call = Call(self._retrier, route, body, key, context, started + seconds, max_attempts)
        try:
            result = await self._attempt(call, 1, call.deadline_at - self._clock())
        except StoreError as error:
            result = await call.retry(error)
        self._budget.deposit()
        return result

    async def _attempt(self, call: Call[T], number: int, remaining: float) -> T:
        """Send once: token, connection slot, headers, send, parse. Raises a classified
        :class:`StoreError`."""
        transport = self.transport
        if transport is None:
            raise ValidationError("the StoreClient was closed during the call")
        clock = self._clock
        token = self._tokens.fresh_token()
        if token is None:
            token = await self._wait_for_token(call, remaining)
        slots: ConnectionSlots | None = self._slots
        assert slots is not None
        if not slots.try_take():
            await slots.take(call.deadline_at - clock())
        try:
            remaining = call.deadline_at - clock()
            if remaining <= 0:
                raise TransportError(
                    "the call's timeout ran out before this attempt could be sent",
                    kind=FailureKind.NOT_SENT,
                )
            route = call.route
            if token is not self._header_token:
                self._set_headers(token)
            body = call.body
            if route.token_body is not None:
                body = route.token_body(token, call.context)
                headers = self._token_body_headers
            else:
                headers = self._bare_headers if body is None else self._json_headers
            hooks = self._hooks
            started = 0.0
            if hooks is not None:
                hooks.attempt_started(
                    AttemptStarted(operation=route.name, idempotency_key=call.key, attempt=number)
                )
                started = clock()
            try:
                try:
                    answer = await transport.send(route.method, route.url, headers, body, remaining)
                finally:
                    slots.give()
                    slots = None  # given back: the outer finally must not give it twice
                result = route.parse(answer, number, call.context)
            except StoreError as error:
                if isinstance(error, AuthenticationError) and error.token_rejected:
                    self._tokens.invalidate(token)
                if hooks is not None:
                    hooks.attempt_finished(
                        AttemptFinished(
                            operation=route.name,
                            idempotency_key=call.key,
                            attempt=number,
                            duration=clock() - started,
                            status=error.status,
                            error=error,
                            correlation_id=error.correlation_id,
                            request_id=error.request_id,
                            cv=error.cv,
                        )
                    )
                raise
        finally:
            if slots is not None:
                slots.give()
        if hooks is not None:
            status, answer_headers, _ = answer
            hooks.attempt_finished(
                AttemptFinished(
                    operation=route.name,
                    idempotency_key=call.key,
                    attempt=number,
                    duration=clock() - started,
                    status=status,
                    error=None,
                    correlation_id=answer_headers.get("MS-CorrelationId"),
                    request_id=answer_headers.get("MS-RequestId"),
                    cv=answer_headers.get("MS-CV"),
                )
            )
        return result

    async def _wait_for_token(self, call: Call[Any], remaining: float) -> str:
        """The shared token refresh, bounded by the call's timeout."""
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await self._tokens.get_token()
        except TimeoutError:
            raise TransportError(
                "the call's timeout ran out while it waited for an access token (the token "
                "request is slow or hanging: check the credential)",
                kind=FailureKind.NOT_SENT,
            ) from None

    def _set_headers(self, token: str) -> None:
        authorization = "Bearer " + token
        user_agent = self._user_agent
        self._json_headers = _headers(
            {"Authorization": authorization, "Content-Type": _JSON, "User-Agent": user_agent}
        )
        self._bare_headers = _headers({"Authorization": authorization, "User-Agent": user_agent})
        self._header_token = token
