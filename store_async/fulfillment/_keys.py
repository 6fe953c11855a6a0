"""The fulfiller's Store ID key lifecycle: renew keys past their refresh time, refuse expired ones.

A Store ID key lives 30 days and the Store renews it only before it expires (STORE_API.md
sections 2 and 5); like Microsoft's library we renew it once it is 14 days old
(:data:`~store_async.store_id_key.REFRESH_AGE`). Per distinct key value, once per run:

- not a JWT (emulator users, tests): sent as it is;
- expired: its rows fail at once, without a request ("the client app must issue a new one");
- past its refresh time: renewed through ``renew_store_id_key`` (single-flight: one renewal per
  key, however many rows carry it), and the renewed key is sent and replaces the old one in the
  journal for the pending rows; a refused renewal fails the key's rows like an expiry;
- otherwise: sent as it is.

The decision for a key is remembered for the run (bounded), so a row costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from store_async.errors import InvalidStoreIdKeyError, StoreError
from store_async.models import UserIdentity
from store_async.store_id_key import StoreIdKey

__all__ = ["KeyLifecycle", "KeyRenewingClient", "KeyReplacingJournal", "UnusableKey"]

_MAX_REMEMBERED = 100_000


@runtime_checkable
class KeyRenewingClient(Protocol):
    """A client that renews Store ID keys (:class:`store_async.StoreClient` does)."""

    async def renew_store_id_key(self, key: StoreIdKey | str) -> StoreIdKey: ...


@runtime_checkable
class KeyReplacingJournal(Protocol):
    """A journal that can put a renewed Store ID key in place of the old one."""

    def replace_store_id_key(self, old: UserIdentity, new_value: str) -> Awaitable[int]:
        """Use the key ``new_value`` instead of ``old``'s for the rows that carry it; return
        how many journaled beneficiaries changed. Durable once the awaitable completes."""
        ...


class UnusableKey(Exception):
    """The rows of this key cannot be sent; ``error`` is journaled as their failure
    (:class:`StoreError` messages never contain the key)."""

    def __init__(self, error: StoreError, *, final: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.final = final
        """``True``: fail the rows; ``False``: the renewal failed transiently, rows stay pending."""


class KeyLifecycle:
    """Per-run decisions about Store ID keys (see the module docstring).

    :param renew: the client's ``renew_store_id_key`` (``None``: keys past refresh are sent as
        they are, expired ones still fail).
    :param replace: the journal's ``replace_store_id_key`` (``None``: not persisted).
    :param now: the current time (aware UTC), injectable for tests.
    """

    def __init__(
        self,
        renew: Callable[[StoreIdKey], Awaitable[StoreIdKey]] | None,
        replace: Callable[[UserIdentity, str], Awaitable[int]] | None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._renew = renew
        self._replace = replace
        self._now = now
        # value -> the value to send, an UnusableKey, or the renewal under way
        self._decided: dict[str, str | UnusableKey | asyncio.Future[str]] = {}
        self.renewed = 0
        """Keys renewed in this run."""
        self.refused = 0
        """Keys whose rows failed (expired, or renewal refused)."""

    def renewed_value(self, value: str) -> str:
        """The renewed key for ``value`` if renewed in this run, else ``value`` (no waiting)."""
        decided = self._decided.get(value)
        return decided if isinstance(decided, str) else value

    def known(self, value: str) -> str | None:
        """The key to send for ``value`` when already decided usable (the hot path: a lookup),
        else ``None`` (call :meth:`usable`)."""
        decided = self._decided.get(value)
        return decided if isinstance(decided, str) else None

    async def usable(self, identity: UserIdentity) -> str:
        """The key value to send instead of ``identity.identity_value``.

        :raises UnusableKey: expired, renewal refused, or renewal failed for now.
        """
        value = identity.identity_value
        decided = self._decided.get(value)
        if decided is None:
            decided = self._decide(identity)
        if isinstance(decided, str):
            return decided
        if isinstance(decided, UnusableKey):
            raise decided
        return await asyncio.shield(decided)  # one renewal; a cancelled row does not stop it

    def _decide(self, identity: UserIdentity) -> str | UnusableKey | asyncio.Future[str]:
        value = identity.identity_value
        if len(self._decided) >= _MAX_REMEMBERED:
            self._decided = {
                k: v for k, v in self._decided.items() if isinstance(v, asyncio.Future)
            }
        try:
            key = StoreIdKey.parse(value)
        except InvalidStoreIdKeyError:
            decided: str | UnusableKey | asyncio.Future[str] = value  # opaque: sent as it is
        else:
            now = self._now()
            if key.is_expired(now):
                self.refused += 1
                decided = UnusableKey(
                    InvalidStoreIdKeyError(
                        f"Store ID key expired at {key.expires_at.isoformat()}; "
                        "the client app must issue a new one"
                    ),
                    final=True,
                )
            elif key.needs_refresh(now) and self._renew is not None:
                decided = asyncio.ensure_future(self._renewal(key, identity))
            else:
                decided = value
        self._decided[value] = decided
        return decided

    async def _renewal(self, key: StoreIdKey, identity: UserIdentity) -> str:
        assert self._renew is not None
        old = key.value
        try:
            renewed = (await self._renew(key)).value
        except StoreError as error:
            final = error.status is not None and not error.retryable
            if final:
                self.refused += 1
            unusable = UnusableKey(
                InvalidStoreIdKeyError(
                    f"Store ID key renewal was refused ({type(error).__name__}: "
                    f"{error.message[:200]}); the client app must issue a new one"
                    if final
                    else f"Store ID key renewal failed for now ({type(error).__name__}: "
                    f"{error.message[:200]}); the rows stay pending",
                    status=error.status,
                    code=error.code,
                    inner_code=error.inner_code,
                ),
                final=final,
            )
            self._decided[old] = unusable
            raise unusable from None
        self.renewed += 1
        self._decided[old] = renewed
        self._decided[renewed] = renewed  # fresh: no need to parse it again
        if self._replace is not None:
            await self._replace(identity, renewed)
        return renewed
