"""store_async: asyncio client for the Microsoft Store services APIs.

Report consumables as fulfilled exactly once, query collections, grant free products, renew
Store ID keys and fetch Store for Business offline licenses::

    from store_async import ConsumeRequest, StoreClient, UserIdentity

    async with StoreClient(credential) as store:
        result = await store.consume(ConsumeRequest.for_item(user, item_id))

Everything importable from here is the public API. The emulator (``store_async.emulator``),
batch fulfillment (``store_async.fulfillment``) and the codec (``store_async.codec``) are
public sub-modules, imported on demand.
"""

from store_async._version import __version__
from store_async.auth import STORE_SCOPE, TokenCache
from store_async.client import StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.errors import (
    AuthenticationError,
    ConflictError,
    FailureKind,
    InvalidRequestError,
    InvalidStoreIdKeyError,
    NotFoundError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResponseFormatError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from store_async.hooks import AttemptFinished, AttemptStarted, ClientHooks
from store_async.models import (
    ClientContext,
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    IdentityV6,
    InnerError,
    KeyRenewalRequest,
    KeyRenewalResponse,
    OfflineLicense,
    Order,
    OrderLineItem,
    ProductKey,
    ProductSkuId,
    QueryRequest,
    QueryResult,
    ServiceError,
    UserIdentity,
)
from store_async.retry import RetryBudget, RetryPolicy
from store_async.store_id_key import StoreIdKey, StoreIdKeyKind

__all__ = [
    "STORE_SCOPE",
    "AttemptFinished",
    "AttemptStarted",
    "AuthenticationError",
    "ClientContext",
    "ClientHooks",
    "CollectionItem",
    "ConflictError",
    "ConsumeRequest",
    "ConsumeResult",
    "Endpoints",
    "FailureKind",
    "GrantRequest",
    "IdentityV6",
    "InnerError",
    "InvalidRequestError",
    "InvalidStoreIdKeyError",
    "KeyRenewalRequest",
    "KeyRenewalResponse",
    "NotFoundError",
    "OfflineLicense",
    "Order",
    "OrderLineItem",
    "OutcomeUnknownError",
    "ProductKey",
    "ProductSkuId",
    "QueryRequest",
    "QueryResult",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "RetryBudget",
    "RetryPolicy",
    "ServiceError",
    "ServiceUnavailableError",
    "StaticTokenCredential",
    "StoreClient",
    "StoreError",
    "StoreIdKey",
    "StoreIdKeyKind",
    "ThrottledError",
    "TokenCache",
    "TransportError",
    "UserIdentity",
    "ValidationError",
    "__version__",
]
