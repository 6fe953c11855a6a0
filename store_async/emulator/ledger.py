"""The ledger: every change the emulator applied, for exactly-once audits.

A consume or a grant is *applied* when it changes state (an item becomes consumed, an order
is created). Replays answered from stored state are not applied again, and requests failed
by a fault before commit never reach the ledger. So after a run, each idempotency key of a
correct client shows ``applied(key) == 1``; ``2`` means the same key changed state twice (an
emulator bug), and a double credit by a client that changed its key on retry shows up as two
keys for one item, or as a conflict answer it did not expect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from store_async.emulator.wire import canonical_guid

__all__ = ["Ledger", "LedgerEntry"]

EntryKind = Literal["consume", "grant", "consume_v8", "subscription_change"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One applied change."""

    kind: EntryKind
    key: str
    """The idempotency key: ``trackingId`` (v6 and v8 consume), ``transactionId`` or
    ``orderId``."""
    user_id: str
    subject: str
    """The consumed ``itemId``, the granted ``productId/skuId``, or ``productId xN`` (v8)."""


class Ledger:
    """Counts of applied consumes and grants, by idempotency key."""

    __slots__ = ("_by_key", "_entries", "_replays")

    def __init__(self) -> None:
        self._by_key: Counter[str] = Counter()
        self._entries: list[LedgerEntry] = []
        self._replays: Counter[str] = Counter()

    def record(self, kind: EntryKind, key: str, *, user_id: str, subject: str) -> None:
        """Note one applied change (called by the emulator, after the state changed)."""
        key = canonical_guid(key) or key
        self._by_key[key] += 1
        self._entries.append(LedgerEntry(kind=kind, key=key, user_id=user_id, subject=subject))

    def record_replay(self, key: str) -> None:
        """Note a request answered from stored state, nothing applied (called by the emulator)."""
        self._replays[canonical_guid(key) or key] += 1

    def replays(self, key: str | None = None) -> int:
        """How many resends of an applied change were answered without applying it again (of
        one idempotency key, or of all): a resend after a lost answer shows up here."""
        if key is None:
            return sum(self._replays.values())
        return self._replays[canonical_guid(key) or key]

    def applied(self, key: str) -> int:
        """How many times the change with this idempotency key was applied (0, 1, ...).

        GUID keys match in any spelling (case, hyphens, braces), as the emulator stores them
        in canonical form.
        """
        return self._by_key[canonical_guid(key) or key]

    @property
    def total(self) -> int:
        """The number of applied changes."""
        return len(self._entries)

    def count(self, kind: EntryKind) -> int:
        """The number of applied changes of one kind."""
        return sum(1 for entry in self._entries if entry.kind == kind)

    def keys(self, kind: EntryKind | None = None) -> set[str]:
        """The idempotency keys applied at least once (of one kind, or all)."""
        return {entry.key for entry in self._entries if kind is None or entry.kind == kind}

    def order_ids(self) -> set[str]:
        """The order ids of applied grants."""
        return self.keys("grant")

    def duplicates(self) -> dict[str, int]:
        """Keys applied more than once, with their counts (empty when exactly-once held)."""
        return {key: count for key, count in self._by_key.items() if count > 1}

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Ledger(applied={len(self._entries)}, keys={len(self._by_key)})"
