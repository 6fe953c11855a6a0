"""Consumable balances and the v8 consume (``POST /v8.0/collections/consume``).

Wire facts: docs/store-api.md sections 9 and 10.

Two kinds of consumable, as on the GDK pages:

- **store-managed**: the Store keeps a balance per user and product, fed by purchases (lots:
  one order line each, with a quantity). A consume removes ``removeQuantity`` units, oldest lot
  first, and answers the new balance; with ``includeOrderIds`` it lists the lots it drew from.
- **developer-managed**: each purchase is one unit that must be reported fulfilled before the
  user can buy again; quantity is ignored and the answer's ``newQuantity`` is 0.

Deduplication is on the trackingId **and** the user, product and quantity (section 10): the
same four values again are a *replay*, answered from the current balance without applying
anything (store-managed replays repeat the order ids; developer-managed replays return none,
"this data isn't tracked"); the same trackingId with other values is a **new consume**, applied
again, as documented. The ledger counts applications per trackingId, so a client that resends
a key with changed values shows up as ``applied(key) == 2``.

Codes the docs leave open (section 10: "documented nowhere"), **our guesses**:

- not enough units left: **409** ``InsufficientQuantity`` (the request is well formed; it is the
  balance that refuses it);
- no balance or no unfulfilled purchase of the product: **404** ``ProductNotOwned``;
- a developer-managed consume in a development sandbox (not RETAIL) needs XSTS auth, which an
  Entra token is not (documented); the answer is undocumented: **401** ``XstsTokenRequired``
  (an inner code that does not make the client drop its access token);
- a malformed field: 400 ``InvalidParameter`` naming it.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, cast

from store_async.emulator.ledger import Ledger
from store_async.emulator.wire import ApiError, canonical_guid, new_guid, now, wire_time

__all__ = ["RETAIL", "Balance", "Balances", "Lot"]

RETAIL: Final = "RETAIL"
"""The production sandbox: requests without ``sbx`` act on it."""
_MAX_QUANTITY: Final = 2**31 - 1
_AUTO_BALANCE: Final = 1_000_000

Management = Literal["store", "developer"]


@dataclass(slots=True)
class Lot:
    """One purchase feeding a balance: an order line and the units left of it."""

    order_id: str
    line_item_id: str
    quantity: int
    left: int
    state: str = "Purchased"
    """``Purchased``, ``Refunded`` or ``Revoked`` (orders query, clawback v1)."""
    purchased: datetime = field(default_factory=now)
    refunded: datetime | None = None
    short_order_id: str = field(default_factory=lambda: str(int.from_bytes(os.urandom(4))))
    revoked_units: int = 0


@dataclass(slots=True)
class Balance:
    """One user's consumable of one product in one sandbox."""

    user_id: str
    product_id: str
    sandbox_id: str
    managed: Management
    item_id: str
    lots: deque[Lot] = field(default_factory=deque)
    """Lots with units left, oldest first."""
    history: list[Lot] = field(default_factory=list)
    """Every lot ever bought (for the orders query)."""
    consumed: int = 0
    """Units removed by applied consumes."""

    @property
    def quantity(self) -> int:
        """Units left (store-managed) or unfulfilled purchases (developer-managed)."""
        return sum(lot.left for lot in self.lots)


@dataclass(slots=True)
class _Applied:
    """What the first application of one (user, trackingId, product, quantity) answered."""

    balance: Balance
    transactions: list[dict[str, Any]]


class Balances:
    """Every consumable balance, and the v8 consume over them."""

    def __init__(self, ledger: Ledger, *, auto_create: bool = False) -> None:
        self.ledger = ledger
        self.auto_create = auto_create
        self._balances: dict[tuple[str, str, str], Balance] = {}
        # (user, trackingId, product, quantity) -> the first answer's facts.
        self._applied: dict[tuple[str, str, str, int], _Applied] = {}

    # -- seeding -------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        product_id: str,
        quantity: int,
        *,
        managed: Management = "store",
        sandbox_id: str = RETAIL,
        order_id: str | None = None,
    ) -> Balance:
        """One purchase of ``quantity`` units (developer-managed: ``quantity`` purchases)."""
        if type(quantity) is not int or quantity < 1:
            raise ValueError("quantity must be an int >= 1")
        if managed not in ("store", "developer"):
            raise ValueError("managed must be 'store' or 'developer'")
        key = (user_id, sandbox_id, product_id)
        balance = self._balances.get(key)
        if balance is None:
            balance = self._balances[key] = Balance(
                user_id=user_id,
                product_id=product_id,
                sandbox_id=sandbox_id,
                managed=managed,
                item_id=new_guid().replace("-", ""),
            )
        elif balance.managed != managed:
            raise ValueError(f"{product_id!r} is {balance.managed}-managed for this user")
        if managed == "store":
            lots = [Lot(order_id or new_guid(), new_guid(), quantity, quantity)]
        else:  # one unit per purchase, each its own order
            lots = [Lot(order_id or new_guid(), new_guid(), 1, 1) for _ in range(quantity)]
        balance.lots.extend(lots)
        balance.history.extend(lots)
        return balance

    def refund(self, user_id: str, order_id: str, state: str = "Refunded") -> list[Lot]:
        """Mark the lots of an order ``Refunded`` or ``Revoked``; a revoke also removes the
        units left (and flags consumed ones as revoked). Returns the lots changed."""
        if state not in ("Refunded", "Revoked"):
            raise ValueError("state must be 'Refunded' or 'Revoked'")
        changed = []
        for (user, _, _), balance in self._balances.items():
            if user != user_id:
                continue
            for lot in balance.history:
                if lot.order_id == order_id:
                    lot.state, lot.refunded = state, now()
                    if state == "Revoked":
                        lot.revoked_units, lot.left = lot.left, 0
                    changed.append(lot)
            balance.lots = deque(lot for lot in balance.lots if lot.left)
        if not changed:
            raise ValueError(f"user {user_id!r} has no order {order_id!r}")
        return changed

    def orders(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The orders query (clawback v1) over every lot of the user in one sandbox."""
        states = body.get("lineitemstatefilter")
        if states is not None and (
            not isinstance(states, list) or not all(isinstance(s, str) for s in states)
        ):
            raise ApiError.invalid(
                "lineItemStateFilter must be a list of states.", "lineItemStateFilter"
            )
        sandbox = body.get("sbx", body.get("sandbox")) or RETAIL
        orders: dict[str, dict[str, Any]] = {}
        for balance in self.of_user(user_id, sandbox):
            for lot in balance.history:
                order = orders.setdefault(
                    lot.order_id,
                    {
                        "orderId": lot.order_id,
                        "shortOrderId": lot.short_order_id,
                        "orderPurchasedDate": wire_time(lot.purchased),
                        "orderLineItems": [],
                    },
                )
                if lot.refunded is not None:
                    order["orderRefundedDate"] = wire_time(lot.refunded)
                order["orderLineItems"].append(
                    {
                        "lineItemId": lot.line_item_id,
                        "lineItemState": lot.state,
                        "productId": balance.product_id,
                        "quantity": lot.quantity,
                        "skuId": "0010",
                        "wasConsumableQuantityRevoked": lot.revoked_units > 0
                        or (lot.state == "Revoked" and lot.left < lot.quantity),
                    }
                )
        wanted = set(states) if states else None
        items = [
            order
            for order in orders.values()
            if wanted is None
            or any(line["lineItemState"] in wanted for line in order["orderLineItems"])
        ]
        return {"items": items}

    def get(self, user_id: str, product_id: str, sandbox_id: str = RETAIL) -> Balance | None:
        return self._balances.get((user_id, sandbox_id, product_id))

    def of_user(self, user_id: str, sandbox_id: str = RETAIL) -> list[Balance]:
        return [
            balance
            for (user, sandbox, _), balance in self._balances.items()
            if user == user_id and sandbox == sandbox_id
        ]

    # -- consume -------------------------------------------------------------------------

    def consume(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply (or replay) one v8 consume; ``body`` has lowercase keys. Raises ``ApiError``."""
        product_id, tracking_id, quantity, with_orders, sandbox_id = _fields(body)
        balance = self._balances.get((user_id, sandbox_id, product_id))
        if balance is None and self.auto_create:
            balance = self.add(user_id, product_id, _AUTO_BALANCE, sandbox_id=sandbox_id)
        if balance is None:
            raise ApiError(404, "ProductNotOwned", "The user owns no such consumable.")
        if balance.managed == "developer" and sandbox_id != RETAIL:
            raise ApiError(
                401,
                "XstsTokenRequired",
                "Developer-managed consumables in a development sandbox need XSTS authentication.",
            )
        # Developer-managed consumables ignore the quantity: it is not part of their identity.
        dedup_quantity = quantity if balance.managed == "store" else 1
        fingerprint = (user_id, tracking_id, product_id, dedup_quantity)
        applied = self._applied.get(fingerprint)
        if applied is not None:  # a replay: nothing applied, the balance as it is now
            replayed = applied.transactions if balance.managed == "store" else []
            return _answer(balance, tracking_id, replayed if with_orders else None)
        if balance.managed == "store":
            if balance.quantity < quantity:
                raise ApiError(
                    409, "InsufficientQuantity", "The balance is smaller than removeQuantity."
                )
            transactions = _draw(balance, quantity)
            balance.consumed += quantity
        else:
            if not balance.lots:
                raise ApiError(404, "ProductNotOwned", "No unfulfilled purchase of the product.")
            transactions = _draw(balance, 1)
            balance.consumed += 1
        self._applied[fingerprint] = _Applied(balance, transactions)
        self.ledger.record(
            "consume_v8",
            tracking_id,
            user_id=user_id,
            subject=f"{product_id} x{dedup_quantity}",
        )
        return _answer(balance, tracking_id, transactions if with_orders else None)


def _draw(balance: Balance, quantity: int) -> list[dict[str, Any]]:
    """Remove ``quantity`` units, oldest lot first; the order lines they came from."""
    transactions = []
    while quantity:
        lot = balance.lots[0]
        taken = min(lot.left, quantity)
        lot.left -= taken
        quantity -= taken
        transactions.append(
            {
                "orderId": lot.order_id,
                "orderLineItemId": lot.line_item_id,
                "quantityConsumed": taken,
            }
        )
        if not lot.left:
            balance.lots.popleft()
    return transactions


def _answer(
    balance: Balance, tracking_id: str, transactions: list[dict[str, Any]] | None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "newQuantity": balance.quantity if balance.managed == "store" else 0,
        "itemId": balance.item_id,
        "trackingId": tracking_id,
        "productId": balance.product_id,
    }
    if transactions is not None:
        answer["orderTransactions"] = transactions
    return answer


def _fields(body: dict[str, Any]) -> tuple[str, str, int, bool, str]:
    """``(productId, trackingId, removeQuantity, includeOrderIds, sandbox)`` or 400 naming every
    invalid field. ``removeQuantity`` defaults to 1 (developer-managed callers may omit it)."""
    invalid = []
    product_id = body.get("productid")
    if not isinstance(product_id, str) or not product_id:
        invalid.append("productId")
    tracking_id = canonical_guid(body.get("trackingid"))
    if tracking_id is None:
        invalid.append("trackingId")
    quantity = body.get("removequantity", 1)
    if type(quantity) is not int or not 1 <= quantity <= _MAX_QUANTITY:
        invalid.append("removeQuantity")
    with_orders = body.get("includeorderids", False)
    if type(with_orders) is not bool:
        invalid.append("includeOrderIds")
    # Some documented examples still say "sandbox" instead of "sbx" (section 10): read both.
    sandbox = body.get("sbx", body.get("sandbox"))
    if sandbox is not None and (not isinstance(sandbox, str) or not sandbox):
        invalid.append("sbx")
    if invalid or tracking_id is None:
        raise ApiError.invalid("Invalid or missing parameters.", *invalid)
    return cast(str, product_id), tracking_id, quantity, with_orders, sandbox or RETAIL
