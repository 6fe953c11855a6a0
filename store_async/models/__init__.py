"""The wire records of the Store services APIs: plain ``attrs`` classes, no I/O.

Every record is frozen, slotted and keyword-only, with snake_case attributes; the codec
(:mod:`store_async.codec`) maps them to the camelCase JSON of the services. Sequences are stored
as tuples (any iterable is accepted). Secrets (Store ID keys, the purchase ``b2b_key``, service
tickets) are never shown by ``repr``/``str``.

*Request* records (:class:`QueryRequest`, :class:`ConsumeRequest`, :class:`GrantRequest`,
:class:`KeyRenewalRequest`, and the :class:`UserIdentity`/:class:`ProductSkuId` inside them) check
their values when built and raise :class:`~store_async.errors.ValidationError` with a message
that says what to fix. *Response* records are built by the codec, which checks JSON types.

In responses, a field is required when the documentation marks it required **and** shows it in
its own example; everything else defaults to ``None`` (lists to ``()``), so a service that drops
an optional field does not break parsing. Enumerated values (statuses, product types, order
states...) are plain strings, so a value the service adds later still parses.

The service error body records :class:`ServiceError` and :class:`InnerError` live in
:mod:`store_async.errors` and are re-exported here.
"""

from store_async.errors import InnerError, ServiceError

# Helpers, not records (``__all__`` lists the records): importable from here.
from store_async.models._checks import CALLER_KEY_NAMESPACE as CALLER_KEY_NAMESPACE
from store_async.models._checks import guid_for_caller_key as guid_for_caller_key
from store_async.models.business import OfflineLicense, ProductKey
from store_async.models.consume import (
    ConsumeRequest,
    ConsumeResult,
    ConsumeV8Response,
    OrderTransaction,
)
from store_async.models.identities import IdentityV6, ProductSkuId, UserIdentity
from store_async.models.keys import KeyRenewalRequest, KeyRenewalResponse
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
from store_async.models.purchase import ClientContext, GrantRequest, Order, OrderLineItem
from store_async.models.query import CollectionItem, QueryRequest, QueryResult
from store_async.models.refunds import (
    RefundEvent,
    RefundEventData,
    RefundEventState,
    RefundQueueSas,
    RefundRecurrenceData,
    redact_sas,
)
from store_async.models.subscriptions import (
    Subscription,
    SubscriptionChange,
    SubscriptionPage,
    SubscriptionQuery,
)

__all__ = [
    "ClientContext",
    "CollectionItem",
    "ConsumeRequest",
    "ConsumeResult",
    "ConsumeV8Response",
    "EntitlementItem",
    "EntitlementPage",
    "EntitlementQuery",
    "GrantRequest",
    "IdentityV6",
    "InnerError",
    "KeyRenewalRequest",
    "KeyRenewalResponse",
    "LicenseItem",
    "LicensePage",
    "LicenseQuery",
    "OfflineLicense",
    "Order",
    "OrderLineItem",
    "OrderPage",
    "OrderQuery",
    "OrderTransaction",
    "ProductKey",
    "ProductSkuId",
    "PurchaseLineItem",
    "PurchaseOrder",
    "QueryRequest",
    "QueryResult",
    "RefundEvent",
    "RefundEventData",
    "RefundEventState",
    "RefundQueueSas",
    "RefundRecurrenceData",
    "ServiceError",
    "Subscription",
    "SubscriptionChange",
    "SubscriptionPage",
    "SubscriptionQuery",
    "TrialData",
    "UserIdentity",
    "redact_sas",
]
