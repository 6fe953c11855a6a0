"""What one load-test call does: a small registry of operations, mixed by weight.

Each operation is one :class:`OperationSpec`: a name, the kind of Store ID key it needs, whether
it writes (writes are audited against the emulator's ledger) and a coroutine function that makes
one call with a **fresh idempotency key**. Adding an operation is one :func:`register` call.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from store_async import ConsumeRequest, GrantRequest, QueryRequest, StoreClient, UserIdentity
from store_async.errors import ValidationError

__all__ = ["OPERATIONS", "LoadUser", "Mix", "OperationSpec", "register"]

KeyKind = Literal["collections", "purchase"]


@dataclass(frozen=True, slots=True)
class LoadUser:
    """One simulated user: its collections identity and, for grants, its purchase key."""

    identity: UserIdentity
    purchase_key: str | None = None

    def __repr__(self) -> str:  # the keys are secrets
        return f"LoadUser({self.identity.local_ticket_reference!r})"


CallFunction = Callable[[StoreClient, LoadUser, str], Awaitable[object]]
"""``(client, user, unique tag) -> awaitable``; the tag makes item ids unique per call."""


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """One operation a load test can run."""

    name: str
    call: CallFunction
    key_kind: KeyKind
    """The Store ID key the operation sends."""
    writes: bool
    """Whether a success is one applied change in the Store's (the emulator's) ledger."""
    description: str


OPERATIONS: dict[str, OperationSpec] = {}
"""Every registered operation, by name."""


def register(spec: OperationSpec) -> OperationSpec:
    """Add an operation to :data:`OPERATIONS` (names are unique)."""
    if spec.name in OPERATIONS:
        raise ValueError(f"operation {spec.name!r} is already registered")
    OPERATIONS[spec.name] = spec
    return spec


# -- the operations ------------------------------------------------------------------------

V8_PRODUCT_ID: Final = "loadtest-v8-consumable"
GRANT_PRODUCT_ID: Final = "loadtest-free-product"


async def _consume_v6(store: StoreClient, user: LoadUser, tag: str) -> object:
    # A new item id per call: the emulator creates it on first sight (auto_create); the
    # tracking id is new too (for_item), so each call is one applied consume.
    return await store.consume(ConsumeRequest.for_item(user.identity, f"loadtest-{tag}"))


async def _query(store: StoreClient, user: LoadUser, tag: str) -> object:
    request = QueryRequest(
        beneficiaries=(user.identity,), product_types=("UnmanagedConsumable",), max_page_size=25
    )
    return await store.query_products(request)


async def _grant(store: StoreClient, user: LoadUser, tag: str) -> object:
    if user.purchase_key is None:  # pragma: no cover - the runner mints one when grant is mixed in
        raise ValidationError("grant needs a purchase Store ID key per user")
    request = GrantRequest(
        availability_id="loadtest-availability",
        b2b_key=user.purchase_key,
        language="en-us",
        market="us",
        product_id=GRANT_PRODUCT_ID,
        sku_id="0010",
    )
    return await store.grant_free_product(request)


async def _consume_v8(store: StoreClient, user: LoadUser, tag: str) -> object:
    # One unit of a store-managed consumable per call, a new tracking id each time (the
    # emulator gives each user a large balance of it on first sight).
    for_quantity = ConsumeRequest.for_quantity  # type: ignore[attr-defined,unused-ignore]
    return await store.consume(for_quantity(user.identity, V8_PRODUCT_ID, 1))


register(OperationSpec("consume", _consume_v6, "collections", True, "v6 consume by item (default)"))
register(OperationSpec("query", _query, "collections", False, "v6 collections query, one page"))
register(OperationSpec("grant", _grant, "purchase", True, "grant a free product (new order id)"))
if hasattr(ConsumeRequest, "for_quantity"):  # the v8 surface (issue 9), once the client has it
    register(OperationSpec("consume-v8", _consume_v8, "collections", True, "v8 consume, 1 unit"))


# -- mixes ---------------------------------------------------------------------------------


class Mix:
    """Operations chosen per call with fixed weights (seeded, so a run is repeatable).

    :param weights: operation name -> weight (> 0).
    :raises ValidationError: an unknown operation or a weight <= 0.
    """

    def __init__(self, weights: Mapping[str, float], *, seed: int = 0) -> None:
        if not weights:
            raise ValidationError("a mix needs at least one operation")
        specs, bounds, total = [], [], 0.0
        for name, weight in weights.items():
            spec = OPERATIONS.get(name)
            if spec is None:
                raise ValidationError(f"unknown operation {name!r}; known: {sorted(OPERATIONS)}")
            if not weight > 0:
                raise ValidationError(f"the weight of {name!r} must be > 0, got {weight}")
            total += weight
            specs.append(spec)
            bounds.append(total)
        self.weights = dict(weights)
        self.specs: tuple[OperationSpec, ...] = tuple(specs)
        self._bounds = [bound / total for bound in bounds]
        self._random = random.Random(seed)

    @classmethod
    def parse(cls, texts: Sequence[str], *, seed: int = 0) -> Mix:
        """``["consume=3", "query"]`` -> consume 3/4, query 1/4 (a weight defaults to 1)."""
        weights: dict[str, float] = {}
        for text in texts or ["consume"]:
            name, _, weight = text.partition("=")
            try:
                weights[name.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise ValidationError(
                    f"an operation is NAME or NAME=WEIGHT, e.g. consume=3; got {text!r}"
                ) from None
        return cls(weights, seed=seed)

    def pick(self) -> OperationSpec:
        """The operation of the next call."""
        if len(self.specs) == 1:
            return self.specs[0]
        position = bisect.bisect_right(self._bounds, self._random.random())
        return self.specs[min(position, len(self.specs) - 1)]

    def key_kinds(self) -> set[KeyKind]:
        """The Store ID key kinds this mix needs."""
        return {spec.key_kind for spec in self.specs}


def tags(prefix: str) -> Callable[[], str]:
    """Unique call tags: ``prefix-1``, ``prefix-2``..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"
