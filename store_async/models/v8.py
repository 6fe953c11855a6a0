"""The records of the newer Store surface (GDK pages; docs/store-api.md 9, 10), in one list.

:data:`V8_RECORDS` is what the codec registers for them, innermost first, until the codec finds
every record of :mod:`store_async.models` by itself.
"""

from __future__ import annotations

from typing import Final

from store_async.models.consume import ConsumeV8Response
from store_async.models.licenses import (
    EntitlementItem,
    EntitlementPage,
    EntitlementQuery,
    LicenseItem,
    LicensePage,
    LicenseQuery,
    TrialData,
)
from store_async.models.orders import OrderPage, OrderQuery, PurchaseLineItem, PurchaseOrder
from store_async.models.subscriptions import (
    Subscription,
    SubscriptionChange,
    SubscriptionPage,
    SubscriptionQuery,
)

__all__ = ["V8_RECORDS"]

# OrderTransaction is registered with ConsumeResult, which holds it.
V8_RECORDS: Final[tuple[type, ...]] = (
    ConsumeV8Response,
    TrialData,
    EntitlementItem,
    LicenseItem,
    EntitlementPage,
    LicensePage,
    LicenseQuery,
    EntitlementQuery,
    Subscription,
    SubscriptionPage,
    SubscriptionQuery,
    SubscriptionChange,
    PurchaseLineItem,
    PurchaseOrder,
    OrderPage,
    OrderQuery,
)
