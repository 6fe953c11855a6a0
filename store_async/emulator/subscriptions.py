"""Subscriptions (recurrences): query and change (docs/store-api.md sections 4.2, 4.3, 10).

States: ``Active``, ``InDunning`` (grace and dunning), ``None`` (perpetual), and the terminal
``Inactive``, ``Canceled``, ``Failed``. Changes:

- ``Cancel``: state ``Canceled``, ``expirationTime`` (and the grace time) set to now, auto-renew
  off, ``cancellationDate`` now (as documented);
- ``Extend``: both expiration times move by ``extensionTimeInDays`` (a string on the wire; an
  int is accepted too; it may be negative, for testing);
- ``Refund``: **our guess** (undocumented): like ``Cancel``;
- ``ToggleAutoRenew``: turns auto-renew off; nothing when it is already off (documented).

Refusals the docs leave open, **our guesses**: an unknown id, or one of another user, is 404
``SubscriptionNotFound``; a change of a terminal subscription is 409 ``SubscriptionNotActive``.
A change has no idempotency key: every applied change is one ledger entry
(``subscription_change``), so a client that repeats a change shows up as two.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from store_async.emulator.ledger import Ledger
from store_async.emulator.wire import ApiError, new_guid, now, wire_time

__all__ = ["Subscription", "Subscriptions"]

TERMINAL: Final = frozenset(("Inactive", "Canceled", "Failed"))
_PAGE: Final = 25  # the UWP page's default pageSize


@dataclass(slots=True)
class Subscription:
    """One user's subscription (live state)."""

    id: str
    user_id: str
    publisher_user_id: str
    product_id: str
    sku_id: str
    state: str
    auto_renew: bool
    is_trial: bool
    start: datetime
    expiration: datetime
    grace: timedelta
    market: str
    last_modified: datetime
    cancellation_date: datetime | None = None

    def to_wire(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "autoRenew": self.auto_renew,
            "beneficiary": f"pub:{self.publisher_user_id}",
            "expirationTime": wire_time(self.expiration),
            "expirationTimeWithGrace": wire_time(self.expiration + self.grace),
            "id": self.id,
            "isTrial": self.is_trial,
            "lastModified": wire_time(self.last_modified),
            "market": self.market,
            "productId": self.product_id,
            "skuId": self.sku_id,
            "startTime": wire_time(self.start),
            "recurrenceState": self.state,
        }
        if self.cancellation_date is not None:
            document["cancellationDate"] = wire_time(self.cancellation_date)
        return document


class Subscriptions:
    """Every subscription, by user."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._by_user: dict[str, list[Subscription]] = {}
        self._by_id: dict[str, Subscription] = {}
        self._changes = itertools.count(1)

    def add(
        self,
        user_id: str,
        product_id: str,
        *,
        sku_id: str = "0010",
        state: str = "Active",
        days_left: float = 30.0,
        grace_days: float = 0.0,
        auto_renew: bool = True,
        is_trial: bool = False,
        publisher_user_id: str | None = None,
        market: str = "US",
    ) -> Subscription:
        """A subscription of ``user_id`` that expires in ``days_left`` (negative: expired)."""
        moment = now()
        subscription = Subscription(
            id=f"mdr:0:{os.urandom(16).hex()}:{new_guid()}",
            user_id=user_id,
            publisher_user_id=publisher_user_id or user_id,
            product_id=product_id,
            sku_id=sku_id,
            state=state,
            auto_renew=auto_renew,
            is_trial=is_trial,
            start=moment - timedelta(days=1),
            expiration=moment + timedelta(days=days_left),
            grace=timedelta(days=grace_days),
            market=market,
            last_modified=moment,
        )
        self._by_user.setdefault(user_id, []).append(subscription)
        self._by_id[subscription.id] = subscription
        return subscription

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def query(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One page of a user's subscriptions (``body`` has lowercase keys)."""
        token = body.get("continuationtoken")
        offset = 0
        if token is not None:
            try:
                offset = orjson.loads(token)["skip"] if isinstance(token, str) else -1
            except (orjson.JSONDecodeError, TypeError, KeyError):
                offset = -1
            if type(offset) is not int or offset < 0:
                raise ApiError.invalid("Unknown continuationToken.", "continuationToken")
        owned = self._by_user.get(user_id, [])
        page: dict[str, Any] = {"items": [s.to_wire() for s in owned[offset : offset + _PAGE]]}
        if offset + _PAGE < len(owned):
            page["continuationToken"] = orjson.dumps({"skip": offset + _PAGE}).decode()
        return page

    def change(self, user_id: str, subscription_id: str, body: dict[str, Any]) -> Subscription:
        """Apply one change (``body`` has lowercase keys). Raises ``ApiError``."""
        change_type = body.get("changetype")
        if change_type not in ("Cancel", "Extend", "Refund", "ToggleAutoRenew"):
            raise ApiError.invalid(
                "changeType must be Cancel, Extend, Refund or ToggleAutoRenew.", "changeType"
            )
        days = _days(body.get("extensiontimeindays")) if change_type == "Extend" else None
        subscription = self._by_id.get(subscription_id)
        if subscription is None or subscription.user_id != user_id:
            raise ApiError(404, "SubscriptionNotFound", "No such subscription for this user.")
        if subscription.state in TERMINAL:
            raise ApiError(409, "SubscriptionNotActive", "The subscription has ended.")
        moment = now()
        if change_type in ("Cancel", "Refund"):
            subscription.state = "Canceled"
            subscription.expiration = moment
            subscription.grace = timedelta(0)
            subscription.auto_renew = False
            subscription.cancellation_date = moment
        elif change_type == "Extend":
            subscription.expiration += timedelta(days=days or 0)
        else:
            subscription.auto_renew = False
        subscription.last_modified = moment
        self.ledger.record(
            "subscription_change",
            f"{subscription_id}#{next(self._changes)}",
            user_id=user_id,
            subject=f"{subscription_id} {change_type}",
        )
        return subscription


def _days(value: Any) -> int:
    if type(value) is str:
        try:
            return int(value)
        except ValueError:
            pass
    elif type(value) is int:
        return value
    raise ApiError.invalid(
        "Extend needs extensionTimeInDays (a number of days).", "extensionTimeInDays"
    )
