"""store_async: asyncio client for the Microsoft Store services APIs.

Report consumables as fulfilled exactly once, query collections, grant free products, renew
Store ID keys and fetch Store for Business offline licenses::

    from store_async import ConsumeRequest, StoreClient, UserIdentity

    async with StoreClient(credential) as store:
        result = await store.consume(ConsumeRequest.for_item(user, item_id))

Everything importable from here is the public API; it is imported on first use (PEP 562), so
``import store_async`` (and ``store-async --version``) loads neither aiohttp, azure.core nor
cattrs. The emulator (``store_async.emulator``), batch fulfillment (``store_async.fulfillment``),
the codec (``store_async.codec``) and instrumentation (``store_async.instrumentation``) are
public sub-modules.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from store_async._version import __version__

# A library is quiet: without this, Python's last-resort handler would print our WARNING records
# (a raising hook) on stderr when the application configured no logging.
logging.getLogger("store_async").addHandler(logging.NullHandler())

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from store_async._auth import (
        STORE_SCOPE as STORE_SCOPE,
    )
    from store_async._auth import (
        TokenCache as TokenCache,
    )
    from store_async._budget import (
        RetryBudget as RetryBudget,
    )
    from store_async._client import (
        StoreClient as StoreClient,
    )
    from store_async._mock_transport import (
        MockRequest as MockRequest,
    )
    from store_async._mock_transport import (
        MockResponse as MockResponse,
    )
    from store_async._mock_transport import (
        MockTransport as MockTransport,
    )
    from store_async._paging import (
        AsyncPager as AsyncPager,
    )
    from store_async._policy import (
        RetryPolicy as RetryPolicy,
    )
    from store_async._transport import (
        Transport as Transport,
    )
    from store_async.credentials import (
        StaticTokenCredential as StaticTokenCredential,
    )
    from store_async.endpoints import (
        Endpoints as Endpoints,
    )
    from store_async.errors import (
        AuthenticationError as AuthenticationError,
    )
    from store_async.errors import (
        ConflictError as ConflictError,
    )
    from store_async.errors import (
        FailureKind as FailureKind,
    )
    from store_async.errors import (
        InvalidRequestError as InvalidRequestError,
    )
    from store_async.errors import (
        InvalidStoreIdKeyError as InvalidStoreIdKeyError,
    )
    from store_async.errors import (
        NotFoundError as NotFoundError,
    )
    from store_async.errors import (
        OutcomeUnknownError as OutcomeUnknownError,
    )
    from store_async.errors import (
        RequestTimeoutError as RequestTimeoutError,
    )
    from store_async.errors import (
        ResponseFormatError as ResponseFormatError,
    )
    from store_async.errors import (
        ResponseTooLargeError as ResponseTooLargeError,
    )
    from store_async.errors import (
        ServiceUnavailableError as ServiceUnavailableError,
    )
    from store_async.errors import (
        StoreError as StoreError,
    )
    from store_async.errors import (
        ThrottledError as ThrottledError,
    )
    from store_async.errors import (
        TransportError as TransportError,
    )
    from store_async.errors import (
        ValidationError as ValidationError,
    )
    from store_async.instrumentation import (
        AttemptFinished as AttemptFinished,
    )
    from store_async.instrumentation import (
        AttemptStarted as AttemptStarted,
    )
    from store_async.instrumentation import (
        CallFinished as CallFinished,
    )
    from store_async.instrumentation import (
        CallStarted as CallStarted,
    )
    from store_async.instrumentation import (
        ClientHooks as ClientHooks,
    )
    from store_async.instrumentation import (
        combine_hooks as combine_hooks,
    )
    from store_async.models import (
        ClientContext as ClientContext,
    )
    from store_async.models import (
        CollectionItem as CollectionItem,
    )
    from store_async.models import (
        ConsumeRequest as ConsumeRequest,
    )
    from store_async.models import (
        ConsumeResult as ConsumeResult,
    )
    from store_async.models import (
        GrantRequest as GrantRequest,
    )
    from store_async.models import (
        IdentityV6 as IdentityV6,
    )
    from store_async.models import (
        InnerError as InnerError,
    )
    from store_async.models import (
        KeyRenewalRequest as KeyRenewalRequest,
    )
    from store_async.models import (
        KeyRenewalResponse as KeyRenewalResponse,
    )
    from store_async.models import (
        OfflineLicense as OfflineLicense,
    )
    from store_async.models import (
        Order as Order,
    )
    from store_async.models import (
        OrderLineItem as OrderLineItem,
    )
    from store_async.models import (
        ProductKey as ProductKey,
    )
    from store_async.models import (
        ProductSkuId as ProductSkuId,
    )
    from store_async.models import (
        QueryRequest as QueryRequest,
    )
    from store_async.models import (
        QueryResult as QueryResult,
    )
    from store_async.models import (
        ServiceError as ServiceError,
    )
    from store_async.models import (
        UserIdentity as UserIdentity,
    )
    from store_async.store_id_key import (
        StoreIdKey as StoreIdKey,
    )
    from store_async.store_id_key import (
        StoreIdKeyKind as StoreIdKeyKind,
    )

# public name -> the module that defines it
_ORIGINS: dict[str, str] = {
    "STORE_SCOPE": "store_async._auth",
    "TokenCache": "store_async._auth",
    "RetryBudget": "store_async._budget",
    "StoreClient": "store_async._client",
    "MockRequest": "store_async._mock_transport",
    "MockResponse": "store_async._mock_transport",
    "MockTransport": "store_async._mock_transport",
    "AsyncPager": "store_async._paging",
    "RetryPolicy": "store_async._policy",
    "Transport": "store_async._transport",
    "StaticTokenCredential": "store_async.credentials",
    "Endpoints": "store_async.endpoints",
    "AttemptFinished": "store_async.instrumentation",
    "AttemptStarted": "store_async.instrumentation",
    "ClientHooks": "store_async.instrumentation",
    "CallFinished": "store_async.instrumentation",
    "CallStarted": "store_async.instrumentation",
    "combine_hooks": "store_async.instrumentation",
    "StoreIdKey": "store_async.store_id_key",
    "StoreIdKeyKind": "store_async.store_id_key",
}
for _name in [
    "AuthenticationError",
    "ConflictError",
    "FailureKind",
    "InvalidRequestError",
    "InvalidStoreIdKeyError",
    "NotFoundError",
    "OutcomeUnknownError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "ServiceUnavailableError",
    "StoreError",
    "ThrottledError",
    "TransportError",
    "ValidationError",
]:
    _ORIGINS[_name] = "store_async.errors"
for _name in [
    "ClientContext",
    "CollectionItem",
    "ConsumeRequest",
    "ConsumeResult",
    "GrantRequest",
    "IdentityV6",
    "InnerError",
    "KeyRenewalRequest",
    "KeyRenewalResponse",
    "OfflineLicense",
    "Order",
    "OrderLineItem",
    "ProductKey",
    "ProductSkuId",
    "QueryRequest",
    "QueryResult",
    "ServiceError",
    "UserIdentity",
]:
    _ORIGINS[_name] = "store_async.models"

__all__ = [
    "STORE_SCOPE",
    "AsyncPager",
    "AttemptFinished",
    "AttemptStarted",
    "AuthenticationError",
    "CallFinished",
    "CallStarted",
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
    "MockRequest",
    "MockResponse",
    "MockTransport",
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
    "Transport",
    "TransportError",
    "UserIdentity",
    "ValidationError",
    "__version__",
    "combine_hooks",
]


def __getattr__(name: str) -> Any:
    origin = _ORIGINS.get(name)
    if origin is None:
        raise AttributeError(f"module 'store_async' has no attribute {name!r}")
    value = getattr(importlib.import_module(origin), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_ORIGINS])
