"""``TokenCache``: one access token per scope, refreshed ahead of expiry, single-flight.

Every Store call needs an Entra ID access token for ``https://onestore.microsoft.com``. Asking
the credential on every call would cost a network round trip (or at least a lock and a cache
lookup inside azure-identity) per request, and a cold start of 10,000 concurrent calls would
turn into 10,000 token requests. This cache keeps the current token and guarantees:

- **A synchronous fast path.** :meth:`TokenCache.fresh_token` returns the cached token without
  awaiting or locking while it is fresh: one clock read and one comparison.
- **Single flight.** At most one refresh runs at a time; every caller that needs a token while it
  runs awaits that same task (through :func:`asyncio.shield`, so a cancelled caller never cancels
  the refresh the others wait for).
- **Refresh ahead, without waiting.** Once a token passes its refresh time (``refresh_on`` from
  ``get_token_info``, else five minutes before ``expires_on``, minus a random jitter so a fleet
  of processes does not refresh in lock step), the next caller starts a background refresh and
  *keeps using the old token*; nobody waits while the old token is still valid.
- **A failed early refresh keeps serving.** It is logged (the exception type only: messages from
  identity libraries are not ours to vouch for) and retried later with exponential backoff,
  while the still-valid token stays in use.
- **Rejected tokens are dropped once.** :meth:`TokenCache.invalidate` drops a token the service
  refused with a 401, but only if it is still the cached one, so 1,000 concurrent 401s for the
  same token cause one refresh, not 1,000.

The cache belongs to one event loop and is not thread-safe (like everything in asyncio).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential

from store_async.errors import AuthenticationError, ValidationError
from store_async.models._checks import seconds as _seconds

__all__ = ["STORE_SCOPE", "Credential", "TokenCache"]

Credential: TypeAlias = AsyncTokenCredential | AsyncSupportsTokenInfo
"""Any azure-identity async credential: ``get_token`` and/or ``get_token_info``."""

STORE_SCOPE: Final = "https://onestore.microsoft.com/.default"
"""The scope of the bearer token every Store services call carries."""

_logger: Final = logging.getLogger("store_async")


class TokenCache:
    """Caches the access token of one scope from any azure-identity ``AsyncTokenCredential``.

    :param credential: ``ClientSecretCredential``, ``ManagedIdentityCredential``,
        ``DefaultAzureCredential``, :class:`~store_async.StaticTokenCredential`... The cache
        never closes it: whoever created the credential closes it.
    :param scope: the scope to request; the Store services want the default.
    :param refresh_margin: refresh this many seconds before ``expires_on`` when the credential
        gives no ``refresh_on``.
    :param refresh_jitter: refresh up to this many seconds earlier still, at random.
    :param expiry_margin: stop using a token this many seconds before it expires (clock skew,
        time in flight); callers then wait for the refresh.
    :param failure_backoff: first delay before retrying a failed *early* refresh; doubles on
        each failure up to ``failure_backoff_cap``.
    :param refresh_timeout: longest wait for the credential. A token request that hangs (a
        wedged identity endpoint) would otherwise hold the single-flight refresh forever, and
        every later call would wait on it; past this it counts as a failed refresh.
    :param clock: wall-clock time in epoch seconds (``expires_on`` is epoch seconds).
    """

    __slots__ = (
        "_backoff",
        "_backoff_cap",
        "_clock",
        "_expiry_margin",
        "_failures",
        "_fetched",
        "_fetches",
        "_get_token",
        "_get_token_info",
        "_last_error",
        "_random",
        "_refresh_at",
        "_refresh_jitter",
        "_refresh_margin",
        "_refresh_timeout",
        "_scope",
        "_task",
        "_token",
        "_usable_until",
    )

    def __init__(
        self,
        credential: Credential,
        scope: str = STORE_SCOPE,
        *,
        refresh_margin: float = 300.0,
        refresh_jitter: float = 30.0,
        expiry_margin: float = 10.0,
        failure_backoff: float = 1.0,
        failure_backoff_cap: float = 30.0,
        refresh_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        get_token_info: Callable[[str], Awaitable[AccessTokenInfo]] | None = getattr(
            credential, "get_token_info", None
        )
        get_token: Callable[[str], Awaitable[AccessToken]] | None = getattr(
            credential, "get_token", None
        )
        if not callable(get_token_info) and not callable(get_token):
            raise ValidationError(
                "credential must be an azure-identity AsyncTokenCredential "
                f"(with get_token or get_token_info), got {type(credential).__name__}"
            )
        if not isinstance(scope, str) or not scope.strip():
            raise ValidationError("scope must be a non-empty string")
        # Bound once; get_token_info is preferred: it carries refresh_on.
        self._get_token_info = get_token_info if callable(get_token_info) else None
        self._get_token = get_token if callable(get_token) else None
        self._scope = scope
        self._refresh_margin = _seconds(refresh_margin, "refresh_margin", allow_zero=True)
        self._refresh_jitter = _seconds(refresh_jitter, "refresh_jitter", allow_zero=True)
        self._expiry_margin = _seconds(expiry_margin, "expiry_margin", allow_zero=True)
        self._backoff = _seconds(failure_backoff, "failure_backoff")
        self._backoff_cap = _seconds(failure_backoff_cap, "failure_backoff_cap", allow_zero=True)
        self._refresh_timeout = _seconds(refresh_timeout, "refresh_timeout")
        self._clock = clock
        self._random = random.Random()
        self._token: str | None = None
        self._refresh_at = 0.0  # epoch seconds; the fast path serves the token before this
        self._usable_until = 0.0  # epoch seconds; after this the token is not sent any more
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._last_error: BaseException | None = None
        # The last token the credential gave (with its usable-until time), kept even when a 401
        # drops it from the cache; see get_token.
        self._fetched: tuple[str, float] | None = None
        self._fetches = 0

    @property
    def scope(self) -> str:
        """The scope whose token this cache holds."""
        return self._scope

    @property
    def fetches(self) -> int:
        """How many times the credential has been asked for a token (for tests and metrics)."""
        return self._fetches

    def fresh_token(self) -> str | None:
        """The cached token, synchronously, or ``None`` if the caller must await :meth:`get_token`.

        Past the refresh time but before expiry, this starts a background refresh (if none is
        running) and still returns the current token.
        """
        token = self._token
        if token is None:
            return None
        now = self._clock()
        if now < self._refresh_at:
            return token
        if now < self._usable_until:
            task = self._task
            if task is None or task.done():
                self._start_refresh()
            return token
        return None

    async def get_token(self) -> str:
        """The current token, waiting for the (shared) refresh when there is no usable one.

        :raises AuthenticationError: the credential failed and no valid token is cached. The
            message names the exception type only; the original is chained as ``__cause__``.
        """
        # Two rounds: the refresh we joined may have been started before a 401 dropped the token
        # it fetched; then we wait for the next refresh once.
        for _ in range(2):
            token = self.fresh_token()
            if token is not None:
                return token
            task = self._task
            if task is None or task.done():
                task = self._start_refresh()
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and (current is None or not current.cancelling()):
                    # close() cancelled the refresh, not our caller: a CancelledError here
                    # would mark a caller cancelled that nobody cancelled.
                    raise ValidationError("the token cache was closed during the call") from None
                raise
            token = self._usable_token()
            if token is not None:
                return token
            if self._last_error is not None:
                break
            fetched = self._fetched
            if fetched is not None and self._clock() < fetched[1]:
                # The token this refresh fetched was dropped by a concurrent 401 before we
                # looked. Hand it out anyway: the service's own answer is the truthful outcome,
                # whereas fetching again would only race the next 401 - a credential that keeps
                # returning a refused token would end in an unrelated "no token" error.
                return fetched[0]
        error = self._last_error
        cause = type(error).__name__ if error is not None else "the token was rejected"
        raise AuthenticationError(
            f"could not get an access token for {self._scope} ({cause})"
        ) from error

    def invalidate(self, token: str) -> None:
        """Drop ``token`` (the service refused it) if it is still the cached one.

        A token that was already replaced is left alone, so concurrent 401s for one token cause
        one refresh.
        """
        if token == self._token:
            self._token = None
            self._refresh_at = 0.0
            self._usable_until = 0.0
            _logger.debug("access token for %s rejected by the service; dropped it", self._scope)

    @property
    def current(self) -> str | None:
        """The cached token, fresh or not (``None`` when there is none); never refreshes."""
        return self._token

    async def close(self) -> None:
        """Cancel a refresh in flight (the credential itself is not closed)."""
        task = self._task
        self._task = None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _usable_token(self) -> str | None:
        token = self._token
        if token is not None and self._clock() < self._usable_until:
            return token
        return None

    def _start_refresh(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._refresh())
        self._task = task
        return task

    async def _refresh(self) -> None:
        """Ask the credential once. Never raises an ``Exception``: waiters read the outcome."""
        self._fetches += 1
        refresh_on: float | None = None
        try:
            async with asyncio.timeout(self._refresh_timeout):
                if self._get_token_info is not None:
                    info = await self._get_token_info(self._scope)
                    raw_token, raw_expiry = info.token, info.expires_on
                    refresh_on = info.refresh_on
                else:
                    assert self._get_token is not None  # checked in __init__
                    access = await self._get_token(self._scope)
                    raw_token, raw_expiry = access.token, access.expires_on
            token, expires_on = self._checked(raw_token, raw_expiry)
        except Exception as error:  # recorded for the waiters, logged below
            self._refresh_failed(error)
            return
        self._store(token, expires_on, refresh_on)

    def _checked(self, token: object, expires_on: object) -> tuple[str, float]:
        # A token with whitespace or control characters would corrupt (or inject) headers.
        if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
            raise AuthenticationError("the credential returned a malformed access token")
        if isinstance(expires_on, bool) or not isinstance(expires_on, int | float):
            raise AuthenticationError("the credential returned no expiry time")
        if expires_on - self._expiry_margin <= self._clock():
            raise AuthenticationError("the credential returned an already expired access token")
        return token, float(expires_on)

    def _store(self, token: str, expires_on: float, refresh_on: float | None) -> None:
        now = self._clock()
        usable_until = expires_on - self._expiry_margin
        target = refresh_on if refresh_on is not None else expires_on - self._refresh_margin
        if not now < target < usable_until:
            # Short-lived tokens (shorter than the margin) refresh at half their remaining life.
            target = now + (usable_until - now) / 2
        jitter = min(self._refresh_jitter, (target - now) / 2)
        self._token = token
        self._usable_until = usable_until
        self._fetched = (token, usable_until)
        self._refresh_at = target - self._random.uniform(0.0, jitter)
        self._failures = 0
        self._last_error = None
        _logger.debug(
            "access token for %s refreshed; valid for %.0fs", self._scope, expires_on - now
        )

    def _refresh_failed(self, error: Exception) -> None:
        self._failures += 1
        self._last_error = error
        now = self._clock()
        if self._token is not None and now < self._usable_until:
            delay = min(self._backoff * 2 ** (self._failures - 1), self._backoff_cap)
            self._refresh_at = min(now + delay, self._usable_until)
            # DEBUG: nothing failed for the caller (the cached token keeps serving), and a
            # library does not print (docs/guides/observability.md).
            _logger.debug(
                "early refresh of the access token for %s failed (%s); keeping the current "
                "token, next try in %.1fs",
                self._scope,
                type(error).__name__,
                delay,
            )
        else:
            _logger.debug(  # raised to the callers that waited for it: theirs to log
                "could not get an access token for %s (%s)", self._scope, type(error).__name__
            )

    def __repr__(self) -> str:
        state = "empty" if self._token is None else "cached"
        return f"TokenCache(scope={self._scope!r}, token=<{state}>)"
