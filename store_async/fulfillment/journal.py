"""The journal contract: what the :class:`~store_async.fulfillment.Fulfiller` needs from storage.

A journal is what makes *exactly once* survive a crash. It records, per caller key, the request
and its idempotency key (the ``trackingId`` of a consume by item or of a v8 consume, the
``transactionId`` of a consume by transaction) **before** the request is first sent, so that
whatever happens next (a timeout, a ``kill -9``, a power cut with a ``synchronous=FULL``
journal) a later run resends the *same* request under the *same* idempotency key, and the Store
deduplicates it.

The rules every journal implements:

- A v8 consume is deduplicated by the Store on its trackingId **and** user, product and
  quantity: a journal keeps all of them (and the sandbox) and refuses a key with other values
  (:attr:`ClaimOutcome.CONFLICT`); :meth:`Journal.mark_done` keeps the order ids of the first
  answer that had any (a developer-managed replay returns none).
- :meth:`Journal.claim` is the only way a row is created. It is durable (committed) before the
  awaitable it returns completes, and a key is bound to exactly one idempotency key forever:
  a second claim of the key gets the journaled request back (with the original tracking id), or a
  :attr:`ClaimOutcome.CONFLICT` if the request differs.
- ``mark_*`` record outcomes. They may be written lazily: losing one in a crash only leaves the
  row *pending*, and resending a pending row is always safe.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

import attrs

from store_async.errors import FailureKind, StoreError
from store_async.models import ConsumeRequest, ConsumeResult

__all__ = [
    "Claim",
    "ClaimOutcome",
    "FailureInfo",
    "Fulfillment",
    "Journal",
    "JournalError",
    "RowState",
]


class JournalError(StoreError):
    """The journal cannot be used: not a journal, a newer schema, corrupt, locked, or an I/O error.

    Nothing was sent for a fulfillment whose claim failed with this error.
    """

    kind = FailureKind.NOT_SENT


class RowState(enum.Enum):
    """Where a journaled fulfillment stands."""

    PENDING = "pending"
    """Claimed (the intent is durable); not known to be applied. Resending it is safe."""
    DONE = "done"
    """The Store confirmed it (204; 200 with the balance for a v8 consume)."""
    FAILED = "failed"
    """The Store refused it for good (a 4xx that retrying cannot cure)."""


class ClaimOutcome(enum.Enum):
    """What a :meth:`Journal.claim` decided for one fulfillment."""

    SEND = "send"
    """A new key: its intent row is committed; send the request."""
    RESEND = "resend"
    """The key was pending (or failed, with ``retry_failed``) from an earlier run: send again
    with the journaled idempotency key."""
    ALREADY_DONE = "already_done"
    """The key is done: skip it."""
    ALREADY_FAILED = "already_failed"
    """The key failed permanently in an earlier run: skip it (``retry_failed`` re-drives it)."""
    DUPLICATE = "duplicate"
    """The same key with the same request was already claimed earlier in this run: skip it."""
    CONFLICT = "conflict"
    """The key (or the idempotency key) is journaled with a *different* request: refuse it."""


@attrs.frozen(kw_only=True)
class FailureInfo:
    """Why a fulfillment failed: the parts of a :class:`StoreError` worth keeping (no secrets)."""

    error_type: str
    """The exception class name, e.g. ``"InvalidRequestError"``."""
    status: int | None = None
    code: str | None = None
    inner_code: str | None = None
    message: str = ""
    cv: str | None = None
    """The ``MS-CV`` correlation vector the client sent with the failed attempt (for
    Microsoft support)."""

    @classmethod
    def from_error(cls, error: StoreError) -> FailureInfo:
        """Keep the status, service codes, message (capped) and sent ``MS-CV`` of ``error``.

        Safe to store and print: :class:`StoreError` messages never contain a secret.
        """
        return cls(
            error_type=type(error).__name__,
            status=error.status,
            code=error.code,
            inner_code=error.inner_code,
            message=error.message[:500],
            cv=error.cv,
        )

    def __str__(self) -> str:
        parts = [f"{self.error_type}: {self.message}"]
        parts += [f"{name}={value}" for name, value in self._codes() if value is not None]
        return " ".join(parts) if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"

    def _codes(self) -> tuple[tuple[str, object], ...]:
        return (
            ("status", self.status),
            ("code", self.code),
            ("inner_code", self.inner_code),
            ("cv", self.cv),
        )


@attrs.frozen(kw_only=True)
class Fulfillment:
    """One consumable to report as fulfilled, under the caller's own ``key``.

    ``key`` is the caller's id for this fulfillment (an order id, a line id...). The journal binds
    it to one idempotency key for ever. Build one with :meth:`of`.

    ``caller_tracking_id`` says whether the caller chose ``request.tracking_id``: if so, a journal
    row for the key with another tracking id is a conflict; if not (the id was generated), the
    journaled tracking id wins and is the one sent. A consume by transaction always carries the
    caller's ``transaction_id``.
    """

    key: str
    request: ConsumeRequest
    line: int | None = None
    """The input line number, for messages (``None`` when not read from a file)."""
    caller_tracking_id: bool = False

    @classmethod
    def of(
        cls,
        request: ConsumeRequest,
        key: str | None = None,
        *,
        line: int | None = None,
        caller_tracking_id: bool = False,
    ) -> Fulfillment:
        """A fulfillment of ``request`` under ``key``.

        Without a key, the request's idempotency key (tracking id or transaction id) is the key,
        and the tracking id is then the caller's by definition. With a key, pass
        ``caller_tracking_id=True`` if you chose the tracking id yourself (rather than letting
        :meth:`ConsumeRequest.for_item` generate one) and want a mismatch refused.
        """
        if key is None:
            key, caller_tracking_id = request.idempotency_key, True
        return cls(key=key, request=request, line=line, caller_tracking_id=caller_tracking_id)


@attrs.frozen(kw_only=True)
class Claim:
    """The answer of :meth:`Journal.claim`."""

    outcome: ClaimOutcome
    request: ConsumeRequest | None = None
    """For ``SEND``/``RESEND``: the request to send, carrying the journaled idempotency key;
    for ``ALREADY_FAILED``: the journaled request."""
    detail: str | None = None
    """For ``CONFLICT``/``DUPLICATE``: why, naming the differing fields (never their values)."""
    failure: FailureInfo | None = None
    """For ``ALREADY_FAILED``: the journaled reason."""


@runtime_checkable
class Journal(Protocol):
    """Durable storage of fulfillment intents and outcomes (see the module docstring)."""

    async def begin_run(self, *, retry_failed: bool = False) -> int:
        """Start a run and return its id. Claims made until the next run belong to it.

        With ``retry_failed``, claims of failed keys return ``RESEND`` instead of
        ``ALREADY_FAILED``.
        """
        ...

    def claim(self, fulfillment: Fulfillment) -> Awaitable[Claim]:
        """Bind ``fulfillment.key`` to its request (if new) and say what to do with it.

        Called synchronously in input order (so claims of one key are decided in that order);
        the returned awaitable completes once the intent is durable. It raises
        :class:`JournalError` when the journal cannot be written.
        """
        ...

    async def mark_done(self, key: str, result: ConsumeResult) -> None:
        """Record that the Store confirmed ``key`` (may be written lazily)."""
        ...

    async def mark_failed(self, key: str, error: StoreError) -> None:
        """Record a permanent refusal of ``key`` (may be written lazily)."""
        ...

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        """Record a failed attempt whose outcome is unknown; ``key`` stays pending."""
        ...

    async def flush(self) -> None:
        """Make every mark recorded so far durable."""
        ...

    async def close(self) -> None:
        """Flush, then release the storage. The journal cannot be used afterwards."""
        ...
