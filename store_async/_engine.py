"""The engine: runs one call — a bare first attempt, then (only on failure) the retry driver.

:meth:`Engine.call` takes ``(route, body, key, context)``. Its success path is what every
consume pays, millions of times, so it does as little as possible: one clock read, the token
cache's synchronous fast path, a connection slot taken without awaiting, headers prebuilt per
token (copied once to add the call's ``MS-CV``, from a C-level iterator), one ``await`` of the
transport, the route's parser, one budget deposit. No tenacity object, no call object, no
closure, no logging call. What is fixed per client (hooks set or not) is decided once, at
construction, not re-checked per call.

Everything else — waiting for a token or a connection slot, hooks (call and attempt events), a
per-call timeout, attempt count, ``headers=`` or ``client_request_id=``, an operation whose
access token travels in its body, retries — goes through one slotted
:class:`~store_async._retry.Call` and :meth:`Engine._attempt`. Every attempt sends
``MS-CV: <base>.<attempt>``, and every error it raises carries that vector (``cv``).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy

from store_async._auth import TokenCache
from store_async._budget import RetryBudget
from store_async._cv import check_client_request_id, first_vectors
from store_async._headers import check_headers, merge_added
from store_async._operations import BoundRoute
from store_async._policy import RetryPolicy
from store_async._retry import Call, Retrier
from store_async._secrets import scrub_attempt_error
from store_async._transport import ConnectionSlots, Transport
from store_async.errors import (
    AuthenticationError,
    FailureKind,
    StoreError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from store_async.instrumentation._hooks import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
    ClientHooks,
)
from store_async.models import _checks
from store_async.pacing import UserPacer, user_of

__all__ = ["NOT_OPEN", "Engine"]

T = TypeVar("T")

_JSON: Final = "application/json"
_NEVER: Final = float("-inf")
TOKEN_DROP_INTERVAL: Final = 10.0
"""Seconds between two access-token drops caused by 401s: many users' bad Store ID keys (the
Store answers them with the same inner code as a bad token) must not cause a token-request
storm."""
Headers = CIMultiDictProxy[str]
"""Prebuilt request headers: aiohttp copies a multidict without converting it first."""
NOT_OPEN: Final = "the StoreClient is not open: use `async with StoreClient(...) as store:`"
_CV: Final = "MS-CV"
# What a server's MS-CV must look like to be kept (as ``server_cv``): a server that echoes
# anything else there (a token, a key) must not get it into errors, events or journals.
_CV_SHAPE: Final = re.compile(r"[A-Za-z0-9+/]{16,22}(?:\.[0-9]{1,10}){0,40}")


def _headers(values: dict[str, str]) -> Headers:
    return CIMultiDictProxy(CIMultiDict(values))


def _stamp(error: StoreError, cv: str) -> None:
    """Make ``error.cv`` the vector we sent; keep the server's own, if it differs, as
    ``server_cv`` (idempotent: an error stamped once is left alone)."""
    server = error.cv
    if server != cv:
        if server is not None:
            error.server_cv = server if _CV_SHAPE.fullmatch(server) else None
        error.cv = cv


class Engine:
    """Token, headers, connection slots, attempts and retries for one :class:`StoreClient`."""

    __slots__ = (
        "_bare",
        "_bare_headers",
        "_budget",
        "_call_ids",
        "_clock",
        "_cvs",
        "_header_token",
        "_hooks",
        "_json_headers",
        "_last_token_drop",
        "_limit",
        "_ok_sent_at",
        "_pacer",
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
        pacer: UserPacer | None = None,
    ) -> None:
        self.transport: Transport | None = None
        """Set while the client is open."""
        self._tokens = tokens
        self._policy = policy
        self._budget = RetryBudget.from_policy(policy, clock)
        self._hooks = hooks
        self._pacer = pacer
        # Decided once: the fast path serves only clients without hooks or per-user pacing.
        self._bare = hooks is None and pacer is None
        self._clock = clock
        self._timeout = policy.timeout
        self._limit = limit
        self._slots = ConnectionSlots(limit)
        self._retrier = Retrier(policy, self._budget, clock, sleep, self._attempt)
        self._user_agent = user_agent
        # An operation whose token travels in its body gets no Authorization header.
        self._token_body_headers = _headers({"Content-Type": _JSON, "User-Agent": user_agent})
        self._header_token: str | None = None
        self._ok_sent_at = _NEVER  # when the latest success with the header token was sent
        self._last_token_drop = _NEVER
        self._json_headers = self._bare_headers = self._token_body_headers
        self._cvs = first_vectors()
        self._call_ids = itertools.count(1)

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
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> T:
        """Run one call: the first attempt bare when it can be, the rest under tenacity."""
        started = self._clock()
        transport = self.transport
        if (
            self._bare
            and transport is not None
            and timeout is None
            and attempts is None
            and headers is None
            and client_request_id is None
            and route.token_body is None
        ):
            token = self._tokens.fresh_token()
            slots = self._slots
            if token is not None and slots.try_take():
                if token is not self._header_token:
                    self._set_headers(token)
                cv = next(self._cvs)
                sent = (self._json_headers if body is not None else self._bare_headers).copy()
                sent.add(_CV, cv)
                try:
                    try:
                        answer = await transport.send(
                            route.method, route.url, sent, body, self._timeout
                        )
                    finally:
                        slots.give()
                    result = route.parse(answer, 1, context)
                except StoreError as error:
                    scrub_attempt_error(error, token, body, route.secret_fields)
                    _stamp(error, cv)
                    if isinstance(error, AuthenticationError):
                        self._judge_401(error, token, started)
                    call = Call(
                        self._retrier,
                        route,
                        body,
                        key,
                        context,
                        started + self._timeout,
                        self._policy.attempts,
                        cv[:-2],  # the base: ".1" off
                    )
                    result = await call.retry(error)
                else:
                    self._ok_sent_at = started
                self._budget.deposit()
                return result
        return await self._call(
            route, body, key, context, started, timeout, attempts, headers, client_request_id
        )

    async def _call(
        self,
        route: BoundRoute[T],
        body: bytes | None,
        key: str | None,
        context: Any,
        started: float,
        timeout: float | None,
        attempts: int | None,
        headers: Mapping[str, str] | None,
        client_request_id: str | None,
    ) -> T:
        """The general path: one :class:`Call`, its first attempt, then retries if needed;
        call events around it when hooks are set."""
        if self.transport is None:
            raise ValidationError(NOT_OPEN)
        seconds = self._timeout if timeout is None else _checks.seconds(timeout, "timeout")
        max_attempts = self._policy.attempts if attempts is None else _checks.attempts(attempts)
        base = (
            next(self._cvs)[:-2]  # the base: ".1" off
            if client_request_id is None
            else check_client_request_id(client_request_id)
        )
        call = Call(
            self._retrier,
            route,
            body,
            key,
            context,
            started + seconds,
            max_attempts,
            base,
            check_headers(headers),
        )
        hooks = self._hooks
        if hooks is None:
            try:
                result = await self._attempt(call, 1, call.deadline_at - self._clock())
            except StoreError as error:
                result = await call.retry(error)
            self._budget.deposit()
            return result
        call.call_id = call_id = next(self._call_ids)
        hooks.call_started(
            CallStarted(
                operation=route.name,
                idempotency_key=key,
                call_id=call_id,
                cv_base=base,
                client_request_id=client_request_id,
            )
        )
        failure: StoreError | None = None
        interrupted: str | None = None
        try:
            try:
                result = await self._attempt(call, 1, call.deadline_at - self._clock())
            except StoreError as error:
                result = await call.retry(error)
        except StoreError as error:
            failure = error
            raise
        except BaseException as error:  # cancelled (or a bug): the end event still fires
            interrupted = type(error).__name__
            raise
        finally:
            hooks.call_finished(
                CallFinished(
                    operation=route.name,
                    idempotency_key=key,
                    call_id=call_id,
                    cv_base=base,
                    client_request_id=client_request_id,
                    attempts=call.attempts_started,
                    duration=self._clock() - started,
                    error=failure,
                    interrupted=interrupted,
                )
            )
        self._budget.deposit()
        return result

    async def _attempt(self, call: Call[T], number: int, remaining: float) -> T:
        """Send once: token, connection slot, headers, send, parse. Raises a classified
        :class:`StoreError` (its ``cv`` the vector this attempt sent, or would have)."""
        cv = f"{call.cv_base}.{number}"
        try:
            return await self._send(call, number, cv, remaining)
        except StoreError as error:
            _stamp(error, cv)
            raise

    async def _send(self, call: Call[T], number: int, cv: str, remaining: float) -> T:
        transport = self.transport
        if transport is None:
            raise ValidationError("the StoreClient was closed during the call")
        clock = self._clock
        token = self._tokens.fresh_token()
        if token is None:
            token = await self._wait_for_token(call, remaining)
        pacer, user, stamp = self._pacer, None, 0.0
        if pacer is not None:
            user, stamp = await self._pace(pacer, call)
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
                ours = self._token_body_headers
            else:
                ours = self._bare_headers if body is None else self._json_headers
            headers = ours.copy()
            if call.extra_headers is not None:
                headers.extend(call.extra_headers)
            hooks = self._hooks
            url = route.url
            url_text, address, port = route.http_identity
            if hooks is not None:
                call.attempts_started += 1
                added: dict[str, str] = {}
                hooks.attempt_started(
                    AttemptStarted(
                        operation=route.name,
                        idempotency_key=call.key,
                        call_id=call.call_id,
                        attempt=number,
                        cv=cv,
                        method=route.method,
                        url=url_text,
                        server_address=address,
                        server_port=port,
                        headers=added,
                    )
                )
                if added:
                    merge_added(headers, added)
            headers.add(_CV, cv)
            started = sent_at = clock()
            try:
                try:
                    answer = await transport.send(route.method, url, headers, body, remaining)
                finally:
                    slots.give()
                    slots = None  # given back: the outer finally must not give it twice
                result = route.parse(answer, number, call.context)
            except StoreError as error:
                scrub_attempt_error(error, token, body, route.secret_fields)
                _stamp(error, cv)
                if user is not None:
                    self._answered(user, stamp, error)
                if isinstance(error, AuthenticationError):
                    self._judge_401(error, token, sent_at)
                if hooks is not None:
                    self._finished(
                        hooks,
                        call,
                        number,
                        cv,
                        clock() - started,
                        status=error.status,
                        error=error,
                        correlation_id=error.correlation_id,
                        request_id=error.request_id,
                        server_cv=error.server_cv,
                    )
                raise
            except BaseException as error:  # cancelled mid-attempt: its end event still fires
                if hooks is not None:
                    self._finished(
                        hooks,
                        call,
                        number,
                        cv,
                        clock() - started,
                        status=None,
                        error=None,
                        interrupted=type(error).__name__,
                    )
                raise
        finally:
            if slots is not None:
                slots.give()
        if user is not None:
            self._answered(user, stamp, None)
        if token is self._header_token and sent_at > self._ok_sent_at:
            self._ok_sent_at = sent_at
        if hooks is not None:
            status, answer_headers, _ = answer
            server_cv = answer_headers.get(_CV)
            if server_cv is not None and (server_cv == cv or not _CV_SHAPE.fullmatch(server_cv)):
                server_cv = None
            self._finished(
                hooks,
                call,
                number,
                cv,
                clock() - started,
                status=status,
                error=None,
                correlation_id=answer_headers.get("MS-CorrelationId"),
                request_id=answer_headers.get("MS-RequestId"),
                server_cv=server_cv,
            )
        return result

    def _finished(
        self,
        hooks: ClientHooks,
        call: Call[Any],
        number: int,
        cv: str,
        duration: float,
        **outcome: Any,
    ) -> None:
        """Emit an attempt's end event: the attempt's identity, and ``outcome`` (status,
        error, correlation ids, or ``interrupted``)."""
        route = call.route
        url, address, port = route.http_identity
        hooks.attempt_finished(
            AttemptFinished(
                operation=route.name,
                idempotency_key=call.key,
                call_id=call.call_id,
                attempt=number,
                method=route.method,
                url=url,
                server_address=address,
                server_port=port,
                duration=duration,
                cv=cv,
                retry_budget=self._budget.tokens,
                **outcome,
            )
        )

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

    async def _pace(self, pacer: UserPacer, call: Call[Any]) -> tuple[str | None, float]:
        """Wait for the call's user to be below its rate (docs/design.md rule 11), within the
        call's timeout; else end at once, without sending, with ``ThrottledError``."""
        beneficiary = getattr(call.context, "beneficiary", None)
        value = getattr(beneficiary, "identity_value", None)
        if not isinstance(value, str):
            return None, 0.0  # not a per-user call
        user = user_of(value)
        wait = pacer.delay(user)
        if wait > 0:
            left = call.deadline_at - self._clock()
            if wait >= left:
                error = ThrottledError(
                    f"{call.route.name}: this user's rate ({pacer.rate}) allows the next call in "
                    f"{wait:.1f} s, beyond the call's timeout; nothing was sent",
                    retry_after=wait,
                )
                error.kind = FailureKind.NOT_SENT
                error.retryable = False
                raise error
            await self._retrier.sleep(wait)
        return user, pacer.record(user)

    def _answered(self, user: str, stamp: float, error: StoreError | None) -> None:
        pacer = self._pacer
        assert pacer is not None
        pacer.answered(user, stamp)
        if isinstance(error, ThrottledError) and error.retry_after:
            pacer.park(user, error.retry_after)

    def _judge_401(self, error: AuthenticationError, token: str, sent_at: float) -> None:
        """Decide whether a 401 is about our access token (drop it, resend once) or about the
        user's Store ID key (final): the Store answers ``AuthenticationTokenInvalid`` for both.

        The token is fine if a request sent *later* with it succeeded. Otherwise it is dropped,
        but at most once per :data:`TOKEN_DROP_INTERVAL` seconds (docs/design.md rule 7).
        """
        if not error.token_rejected:
            return
        if self._tokens.current != token:
            error.about_access_token = True  # already replaced: resend with the new one
        elif self._ok_sent_at > sent_at:
            error.about_access_token = False  # a later request with this token succeeded
        else:
            now = self._clock()
            if now - self._last_token_drop < TOKEN_DROP_INTERVAL:
                error.about_access_token = False
            else:
                self._last_token_drop = now
                self._tokens.invalidate(token)
                error.about_access_token = True

    def _set_headers(self, token: str) -> None:
        authorization = "Bearer " + token
        user_agent = self._user_agent
        self._json_headers = _headers(
            {"Authorization": authorization, "Content-Type": _JSON, "User-Agent": user_agent}
        )
        self._bare_headers = _headers({"Authorization": authorization, "User-Agent": user_agent})
        self._header_token = token
        self._ok_sent_at = _NEVER
