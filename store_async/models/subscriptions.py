"""Subscriptions (recurrences): ``POST /v8.0/b2b/recurrences/query`` and
``POST /v8.0/b2b/recurrences/{id}/change`` (docs/store-api.md sections 4.2, 4.3 and 10).

A change has **no idempotency key**: it is never sent again after a *maybe applied* failure,
and ends in :class:`~store_async.errors.OutcomeUnknownError`; query the subscription to learn
whether it was applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks

__all__ = [
    "CHANGE_TYPES",
    "TERMINAL_STATES",
    "Subscription",
    "SubscriptionChange",
    "SubscriptionPage",
    "SubscriptionQuery",
]

CHANGE_TYPES: Final = frozenset(("Cancel", "Extend", "Refund", "ToggleAutoRenew"))
"""The documented ``changeType`` values."""
TERMINAL_STATES: Final = frozenset(("Inactive", "Canceled", "Failed"))
"""States a subscription never leaves: the user must buy again, which makes a new id."""
_MAX_DAYS: Final = 36_500


def _items(value: Iterable[Subscription]) -> tuple[Subscription, ...]:
    return _checks.tuple_of(value, "SubscriptionPage.items")


_checks.keeps_tuples(_items)


def _days(value: int | str | None) -> str | None:
    """``extensionTimeInDays`` is typed as a string on the wire: an int is sent as its text."""
    if value is None:
        return None
    if type(value) is str:
        try:
            value = int(value)
        except ValueError:
            value = None
    if type(value) is not int or not -_MAX_DAYS <= value <= _MAX_DAYS:
        raise ValidationError(
            f"SubscriptionChange.extension_time_in_days must be a whole number of days "
            f"within -{_MAX_DAYS}..{_MAX_DAYS} (negative values are for testing)"
        )
    return str(value)


@attrs.frozen(kw_only=True)
class SubscriptionQuery:
    """One page of a user's subscriptions (use :meth:`StoreClient.list_subscriptions` for all).

    :raises ValidationError: an empty key, token or sandbox id.
    """

    b2b_key: str = attrs.field(repr=_checks.redact)
    """The user's **purchase** Store ID key. Secret."""
    continuation_token: str | None = None
    sandbox_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _checks.text(self.b2b_key, "SubscriptionQuery.b2b_key")
        _checks.optional_text(self.continuation_token, "SubscriptionQuery.continuation_token")
        _checks.optional_text(self.sandbox_id, "SubscriptionQuery.sandbox_id")

    def with_continuation(self, token: str | None) -> SubscriptionQuery:
        return attrs.evolve(self, continuation_token=token)


@attrs.frozen(kw_only=True)
class SubscriptionChange:
    """What to change: ``Cancel``, ``Extend`` (with ``extension_time_in_days``), ``Refund`` or
    ``ToggleAutoRenew`` (which only turns auto-renew off).

    :raises ValidationError: an unknown change type, ``Extend`` without days, days with another
        change type, or an empty key.
    """

    b2b_key: str = attrs.field(repr=_checks.redact)
    """The user's **purchase** Store ID key. Secret."""
    change_type: str
    extension_time_in_days: str | None = attrs.field(default=None, converter=_days)
    """Days to add (``Extend`` only); an int is accepted and sent as text, as documented."""
    sandbox_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _checks.text(self.b2b_key, "SubscriptionChange.b2b_key")
        if self.change_type not in CHANGE_TYPES:
            raise ValidationError(
                f"SubscriptionChange.change_type must be one of {sorted(CHANGE_TYPES)}"
            )
        if (self.change_type == "Extend") != (self.extension_time_in_days is not None):
            raise ValidationError(
                "SubscriptionChange.extension_time_in_days is required by Extend and only by it"
            )
        _checks.optional_text(self.sandbox_id, "SubscriptionChange.sandbox_id")


@attrs.frozen(kw_only=True)
class Subscription:
    """One subscription (recurrence) of a user.

    ``recurrence_state``: ``None`` (perpetual), ``Active``, ``InDunning`` (grace and dunning),
    or the terminal ``Inactive``, ``Canceled``, ``Failed`` (or a newer value). State updates can
    lag by hours: :meth:`is_active` also compares the time with the expiration.
    """

    id: str
    """``mdr:0:<32 hex>:<guid>``: the same for the subscription's whole life."""
    product_id: str | None = None
    sku_id: str | None = None
    recurrence_state: str | None = None
    auto_renew: bool | None = None
    is_trial: bool | None = None
    beneficiary: str | None = None
    """``pub:<publisher user id>``."""
    market: str | None = None
    start_time: datetime | None = None
    expiration_time: datetime | None = None
    """On cancel, set to the cancel time."""
    expiration_time_with_grace: datetime | None = None
    last_modified: datetime | None = None
    cancellation_date: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Inactive, Canceled or Failed: it will never be active again."""
        return self.recurrence_state in TERMINAL_STATES

    def is_active(self, now: datetime | None = None) -> bool:
        """Whether the user should have the subscription's benefits at ``now`` (default: now).

        A terminal state is never active; the ``None`` state (perpetual) always is; otherwise
        (``Active``, ``InDunning``, a newer state) the time decides: before
        ``expirationTimeWithGrace`` (or ``expirationTime`` when the grace time is missing).
        """
        if self.is_terminal:
            return False
        if self.recurrence_state == "None":
            return True
        end = self.expiration_time_with_grace or self.expiration_time
        if end is None:
            return False
        moment = now or datetime.now(UTC)
        if moment.utcoffset() is None:
            raise ValidationError("Subscription.is_active needs a timezone-aware time")
        return moment < end


@attrs.frozen(kw_only=True)
class SubscriptionPage:
    """One page of subscriptions; ``continuation_token`` is set when more pages exist."""

    items: tuple[Subscription, ...] = attrs.field(default=(), converter=_items)
    continuation_token: str | None = None


def subscriptions_in(document: Any) -> tuple[Any, ...]:
    """The answer of a change: a bare item or ``{items: [...]}`` (both are documented)."""
    if type(document) is dict:
        for key, value in document.items():
            if type(key) is str and key.lower() == "items":
                return tuple(value) if type(value) is list else (value,)
    return (document,)
