"""``CallEngine``: runs one call — a bare first attempt, then (only on failure) the retry engine.

The success path of :meth:`CallEngine.call` is what every consume pays, millions of times, so
it does as little as possible: one clock read, the token cache's synchronous fast path, headers
prebuilt per token, a timeout object built once, one ``await`` of the transport, one budget
deposit. No tenacity object, no closure, no logging call. Everything else (waiting for a token,
hooks, clipped timeouts, retries) happens only when needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from store_async.auth import TokenCache
from store_async.codec import dumps
from store_async.errors import (
    AuthenticationError,
    FailureKind,
    StoreError,
    TransportError,
    ValidationError,
)
from store_async.hooks import AttemptFinished, AttemptStarted, ClientHooks
from store_async.models import KeyRenewalRequest
from store_async.retry import Operation, RetryBudget, RetryPolicy, retry_call
from store_async.transport import Answer, Transport

__all__ = ["CallEngine", "Parse"]

T = TypeVar("T")
Parse = Callable[[Answer, int, Any], T]
"""``parse(answer, attempts, context) -> result``: a plain function, so no closure per call."""

# aiohttp rounds timeouts of 5 s or more up to the next whole second of loop time (cheaper
# timers). An attempt that must end by the deadline gets an exact timeout instead.
_NO_CEILING: Final = 1e12
_CEILING_SLACK: Final = 1.0
_JSON: Final = "application/json"
Headers = CIMultiDictProxy[str]
"""Prebuilt request headers: aiohttp copies a multidict without converting it first."""
NOT_OPEN: Final = "the StoreClient is not open: use `async with StoreClient(...) as store:`"


def check_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValidationError(f"attempts must be an int in 1..100, got {value!r}")
    return value


def check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 < value < float("inf"):
        raise ValidationError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


def _headers(values: dict[str, str]) -> Headers:
    return CIMultiDictProxy(CIMultiDict(values))


class CallEngine:
    """Token, headers, timeouts, attempts and retries for one :class:`StoreClient`."""

    __slots__ = (
        "_bare_headers",
        "_budget",
        "_clock",
        "_first_timeout",
        "_header_token",
        "_hooks",
        "_json_headers",
        "_policy",
        "_renew_headers",
        "_sleep",
        "_timeout",
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
    ) -> None:
        self.transport: Transport | None = None
        """Set while the client is open."""
        self._tokens = tokens
        self._policy = policy
        self._budget = RetryBudget.from_policy(policy, clock)
        self._hooks = hooks
        self._clock = clock
        self._sleep = sleep
        self._timeout = aiohttp.ClientTimeout(
            total=policy.attempt_timeout, connect=policy.connect_seconds
        )
        # The first attempt of a call with the policy's deadline: built once too.
        self._first_timeout = self._timeout_within(policy.deadline)
        self._user_agent = user_agent
        # Renewal carries the token in its body and no Authorization header.
        self._renew_headers = _headers({"Content-Type": _JSON, "User-Agent": user_agent})
        self._header_token: str | None = None
        self._json_headers = self._bare_headers = self._renew_headers

    @property
    def budget(self) -> RetryBudget:
        return self._budget

    async def call(
        self,
        operation: Operation,
        url: URL,
        body: bytes | None,
        key: str | None,
        parse: Parse[T],
        context: Any,
        deadline: float | None,
        attempts: int | None,
        renew_key: str | None = None,
    ) -> T:
        """Run one call: the first attempt bare, the rest (if any) under tenacity."""
        started = self._clock()
        transport = self.transport
        token = self._tokens.fresh_token() if transport is not None else None
        if (
            token is None
            or transport is None
            or deadline is not None
            or attempts is not None
            or renew_key is not None
            or self._hooks is not None
        ):
            return await self._call_general(
                operation, url, body, key, parse, context, deadline, attempts, renew_key, started
            )
        if token is not self._header_token:
            self._set_headers(token)
        try:
            answer = await transport.post(
                url,
                body,
                self._json_headers if body is not None else self._bare_headers,
                self._first_timeout,
                operation.name,
                operation.method,
            )
            result = parse(answer, 1, context)
        except StoreError as error:
            if isinstance(error, AuthenticationError) and error.token_rejected:
                self._tokens.invalidate(token)
            return await self._retry(
                operation, url, body, key, parse, context, error, started, None, None, None
            )
        self._budget.deposit()
        return result

    async def _call_general(
        self,
        operation: Operation,
        url: URL,
        body: bytes | None,
        key: str | None,
        parse: Parse[T],
        context: Any,
        deadline: float | None,
        attempts: int | None,
        renew_key: str | None,
        started: float,
    ) -> T:
        if self.transport is None:
            raise ValidationError(NOT_OPEN)
        seconds = self._policy.deadline if deadline is None else check_seconds("deadline", deadline)
        if attempts is not None:
            check_attempts(attempts)
        try:
            result = await self._attempt(
                operation, url, body, key, parse, context, 1, seconds, renew_key
            )
        except StoreError as error:
            return await self._retry(
                operation, url, body, key, parse, context, error, started, seconds, attempts,
                renew_key,
            )  # fmt: skip
        self._budget.deposit()
        return result

    async def _retry(
        self,
        operation: Operation,
        url: URL,
        body: bytes | None,
        key: str | None,
        parse: Parse[T],
        context: Any,
        error: StoreError,
        started: float,
        seconds: float | None,
        attempts: int | None,
        renew_key: str | None,
    ) -> T:
        async def attempt(number: int, remaining: float) -> T:
            return await self._attempt(
                operation, url, body, key, parse, context, number, remaining, renew_key
            )

        result = await retry_call(
            operation,
            key,
            error,
            attempt,
            policy=self._policy,
            budget=self._budget,
            clock=self._clock,
            sleep=self._sleep,
            deadline_at=started + (self._policy.deadline if seconds is None else seconds),
            max_attempts=self._policy.attempts if attempts is None else check_attempts(attempts),
        )
        self._budget.deposit()
        return result

    async def _attempt(
        self,
        operation: Operation,
        url: URL,
        body: bytes | None,
        key: str | None,
        parse: Parse[T],
        context: Any,
        number: int,
        remaining: float,
        renew_key: str | None,
    ) -> T:
        """Send once: token, headers, POST, classify, parse. Raises a classified StoreError."""
        transport = self.transport
        if transport is None:
            raise ValidationError("the StoreClient was closed during the call")
        token = self._tokens.fresh_token()
        if token is None:
            waited_from = self._clock()
            token = await self._wait_for_token(remaining)
            # The wait ate into the call's deadline: the attempt gets only what is left.
            remaining -= self._clock() - waited_from
            if remaining <= 0:
                raise TransportError(
                    "the deadline passed while waiting for an access token",
                    kind=FailureKind.NOT_SENT,
                )
        if token is not self._header_token:
            self._set_headers(token)
        if renew_key is not None:
            body = dumps(KeyRenewalRequest(service_ticket=token, key=renew_key))
            headers = self._renew_headers
        else:
            headers = self._bare_headers if body is None else self._json_headers
        timeout = self._timeout_within(remaining)
        hooks = self._hooks
        started = 0.0
        if hooks is not None:
            hooks.attempt_started(
                AttemptStarted(operation=operation.name, idempotency_key=key, attempt=number)
            )
            started = self._clock()
        try:
            answer = await transport.post(
                url, body, headers, timeout, operation.name, operation.method
            )
            result = parse(answer, number, context)
        except StoreError as error:
            if isinstance(error, AuthenticationError) and error.token_rejected:
                self._tokens.invalidate(token)
            if hooks is not None:
                hooks.attempt_finished(
                    AttemptFinished(
                        operation=operation.name,
                        idempotency_key=key,
                        attempt=number,
                        duration=self._clock() - started,
                        status=error.status,
                        error=error,
                        correlation_id=error.correlation_id,
                        request_id=error.request_id,
                        cv=error.cv,
                    )
                )
            raise
        if hooks is not None:
            status, answer_headers, _ = answer
            hooks.attempt_finished(
                AttemptFinished(
                    operation=operation.name,
                    idempotency_key=key,
                    attempt=number,
                    duration=self._clock() - started,
                    status=status,
                    error=None,
                    correlation_id=answer_headers.get("MS-CorrelationId"),
                    request_id=answer_headers.get("MS-RequestId"),
                    cv=answer_headers.get("MS-CV"),
                )
            )
        return result

    async def _wait_for_token(self, remaining: float) -> str:
        """The shared token refresh, bounded by the call's deadline."""
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await self._tokens.get_token()
        except TimeoutError:
            raise TransportError(
                "timed out waiting for an access token", kind=FailureKind.NOT_SENT
            ) from None

    def _set_headers(self, token: str) -> None:
        authorization = "Bearer " + token
        user_agent = self._user_agent
        self._json_headers = _headers(
            {"Authorization": authorization, "Content-Type": _JSON, "User-Agent": user_agent}
        )
        self._bare_headers = _headers({"Authorization": authorization, "User-Agent": user_agent})
        self._header_token = token

    def _timeout_within(self, remaining: float) -> aiohttp.ClientTimeout:
        """The attempt timeout, or one that ends exactly at the deadline if that comes first."""
        if remaining >= self._policy.attempt_timeout + _CEILING_SLACK:
            return self._timeout
        total = max(min(remaining, self._policy.attempt_timeout), 0.001)
        return aiohttp.ClientTimeout(
            total=total,
            connect=min(self._policy.connect_seconds, total),
            ceil_threshold=_NO_CEILING,
        )
