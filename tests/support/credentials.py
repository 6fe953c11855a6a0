"""Credentials that count their calls, hold them at a gate, or fail on chosen calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

GOOD_TOKEN = "good-token-0123456789"
"""The default token of :class:`CountingCredential`; :func:`tests.support.emulator.emulator`
makes it the emulator's development token, so it is accepted."""


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
