"""Refund events (clawback v2): the queue's SAS token and the events on the queue.

``GET /v8.0/b2b/clawback/sastoken`` answers ``{"expiresOn": "2022-12-09T02:13Z", "uri": ...}``:
the ``uri`` is an Azure Storage queue SAS URI whose ``sig=`` parameter is a secret. It is
never shown by ``repr``/``str``: :attr:`RefundQueueSas.redacted_uri` and :func:`redact_sas` are
what may be printed or logged.

Each queue message is the base64 (or base64url) of one event (STORE_API.md section 10): a
CloudEvents-style envelope (``id``, ``source``, ``type``, ``time``...) around ``data``, which
names the order line (``orderId``, ``lineItemId``, ``productId``) and what happened to it
(``eventState``). Events carry no user id: records are keyed by :attr:`RefundEvent.bundle_key`
(``orderId:lineItemId:productId``), since the events of a bundle share order and line item.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Final

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks

__all__ = [
    "RefundEvent",
    "RefundEventData",
    "RefundEventState",
    "RefundQueueSas",
    "RefundRecurrenceData",
    "redact_sas",
    "refund_event_state",
]

# "+", not "*": an already redacted "sig=<redacted>" must stay as it is (idempotent).
_SIGNATURE: Final = re.compile(r"(?i)(\bsig(?:=|%3D))[^&\s\"'<>,;\\]+")


def redact_sas(text: str) -> str:
    """``text`` with every SAS signature (``sig=...``, also URL-encoded) replaced by
    ``<redacted>``: apply it to anything that may hold a SAS URI before it is shown."""
    return _SIGNATURE.sub(r"\1" + _checks.REDACTED, text)


@attrs.frozen(kw_only=True)
class RefundQueueSas:
    """Where the refund queue is and until when we may read it.

    ``uri`` holds the SAS signature (a secret): ``repr``/``str`` show :attr:`redacted_uri`.
    """

    uri: str = attrs.field(repr=False)
    """The queue's SAS URI (``https://<account>.queue.core.windows.net/<queue>?sv=...&sig=...``)."""
    expires_on: datetime
    """When the SAS stops working (the service sends minute precision: ``2022-12-09T02:13Z``)."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri.lower().startswith(
            ("https://", "http://")
        ):
            raise ValidationError("RefundQueueSas.uri must be an http(s) URL")

    @property
    def redacted_uri(self) -> str:
        """The URI with its signature replaced by ``<redacted>`` (safe to show)."""
        return redact_sas(self.uri)

    def __repr__(self) -> str:
        return f"RefundQueueSas(uri={self.redacted_uri!r}, expires_on={self.expires_on!r})"

    __str__ = __repr__


class RefundEventState(enum.Enum):
    """What happened to an order line (``data.eventState``), and what the application does."""

    REVOKED = "Revoked"
    """Refunded, and the user kept consumed value: claw back what was granted."""
    RETURNED = "Returned"
    """Refunded, and the Store removed the entitlement: nothing to do."""
    REFUNDED = "Refunded"
    """Refunded, and the user keeps the item: nothing to do (watch for abuse)."""
    CHARGEBACK_REVERSAL = "ChargebackReversal"
    """An earlier chargeback was reversed: undo the claw-back made for it."""


# The documentation's tables also write "Refund" and "Return"; matched case-insensitively.
_STATES: Final = {state.value.lower(): state for state in RefundEventState} | {
    "refund": RefundEventState.REFUNDED,
    "return": RefundEventState.RETURNED,
}


def refund_event_state(value: str) -> RefundEventState | str:
    """The :class:`RefundEventState` for ``value``, or ``value`` itself when it is a state the
    documentation does not list (kept, so a state added later still reaches the application)."""
    return _STATES.get(value.lower(), value)


@attrs.frozen(kw_only=True)
class RefundRecurrenceData:
    """``data.recurrenceData``: the subscription behind a refunded recurrence."""

    recurrence_id: str | None = None
    duration_interval_start: datetime | None = None
    duration_in_days: int | None = None
    consumed_duration_in_days: int | None = None
    refund_type: str | None = None
    """``Full`` or ``Partial``."""


@attrs.frozen(kw_only=True)
class RefundEventData:
    """``data`` of a refund event: which order line, and what happened to it."""

    order_id: str
    line_item_id: str
    product_id: str
    event_state: RefundEventState | str
    """One of the four documented states, or the service's text for any other."""
    sku_id: str | None = None
    product_type: str | None = None
    """``Consumable``, ``UnmanagedConsumable``, ``Pass``, ``Durable`` or ``Game``."""
    purchased_date: datetime | None = None
    event_date: datetime | None = None
    sandbox_id: str | None = attrs.field(default=None, metadata={"wire": "sandboxId"})
    """``RETAIL`` in production."""
    recurrence_data: RefundRecurrenceData | None = None


@attrs.frozen(kw_only=True)
class RefundEvent:
    """One refund event (``ClawbackEventContractV2``). ``id`` is unique per event: the Store
    asks consumers to "implement idempotency using id", and the refund journal does."""

    id: str
    data: RefundEventData
    source: str | None = None
    """``/Purchase/Refund`` or ``/Purchase/Chargeback``."""
    type: str | None = None
    time: datetime | None = None
    specversion: str | None = None
    datacontenttype: str | None = None
    subject: str | None = None
    traceparent: str | None = None

    @property
    def bundle_key(self) -> str:
        """``orderId:lineItemId:productId``: the order line an event is about (the events of
        a bundle share order and line item and differ by product)."""
        data = self.data
        return f"{data.order_id}:{data.line_item_id}:{data.product_id}"

    @property
    def state(self) -> RefundEventState | str:
        """``data.event_state``."""
        return self.data.event_state
