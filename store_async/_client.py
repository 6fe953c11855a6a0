"""``StoreClient``: one method per Store operation over one transport, token cache and engine.

    async with StoreClient(credential, endpoints=Endpoints.production()) as store:
        result = await store.consume(ConsumeRequest.for_item(beneficiary, item_id))

Each method validates its request, picks its route (:mod:`store_async._operations`, which also
says what may be repeated after a *maybe applied* failure) and calls the engine. *Not sent*
failures, 408 and 429 are retried for every operation (nothing was applied). A 401 whose token
the service rejected drops that token, refreshes it once and resends once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar

import aiohttp
import attrs

from store_async import _operations as ops
from store_async._auth import Credential, TokenCache
from store_async._budget import RetryBudget
from store_async._connector import PoolGuardConnector
from store_async._cv import check_client_request_id
from store_async._engine import Engine
from store_async._paging import AsyncPager, Page
from store_async._policy import RetryPolicy, deprecated_deadline
from store_async._transport import AiohttpTransport, Transport
from store_async._version import __version__
from store_async.codec import dumps
from store_async.endpoints import Endpoints
from store_async.errors import (
    InvalidRequestError,
    RefundQueueNotOnboardedError,
    StoreError,
    ValidationError,
)
from store_async.instrumentation._hooks import ClientHooks, combine_hooks
from store_async.models import (
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    OfflineLicense,
    Order,
    QueryRequest,
    QueryResult,
    RefundQueueSas,
    _checks,
)
from store_async.models.licenses import (
    EntitlementItem,
    EntitlementPage,
    EntitlementQuery,
    LicenseItem,
    LicensePage,
    LicenseQuery,
)
from store_async.models.orders import OrderPage, OrderQuery, PurchaseOrder
from store_async.models.refunds import redact_sas
from store_async.models.subscriptions import (
    Subscription,
    SubscriptionChange,
    SubscriptionPage,
    SubscriptionQuery,
)
from store_async.pacing import UserPacer, UserRate
from store_async.store_id_key import StoreIdKey, StoreIdKeyKind

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "StoreClient"]

T = TypeVar("T")
PageT = TypeVar("PageT", bound="Page[object]")


class _Continuable(Protocol):
    """A query that names its next page: ``query.with_continuation(token)``."""

    def with_continuation(self, token: str) -> Self: ...


QueryT = TypeVar("QueryT", bound=_Continuable)

DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


def _without_sas(error: StoreError) -> StoreError:
    """``error`` with every SAS signature in its text (and its ServiceError's) redacted."""
    error.message = redact_sas(error.message)
    error.args = (error.message,)
    service = error.service_error
    if service is not None:
        inner = service.inner_error
        if inner is not None and inner.message:
            inner = attrs.evolve(inner, message=redact_sas(inner.message))
        error.service_error = attrs.evolve(
            service,
            message=redact_sas(service.message) if service.message else service.message,
            inner_error=inner,
            data=(),
            details=(),
        )
    return error


class _PageIds:
    """The ``client_request_id`` of each page of a listing: the caller's, extended by the page
    number (``<id>.1``, ``<id>.2``...), so every page is a call with a base of its own."""

    __slots__ = ("_base", "_page")

    def __init__(self, base: str | None) -> None:
        self._base = None if base is None else check_client_request_id(base)
        self._page = 0

    def next(self) -> str | None:
        if self._base is None:
            return None
        self._page += 1
        return f"{self._base}.{self._page}"


def _timeout(timeout: float | None, deadline: float | None, method: str) -> float | None:
    """The per-call timeout, accepting the deprecated ``deadline=`` spelling."""
    if deadline is None:
        return timeout
    deprecated_deadline(f"StoreClient.{method}")
    if timeout is not None:
        raise ValidationError(f"StoreClient.{method}: give timeout or deadline, not both")
    return deadline


class StoreClient:
    """Asyncio client for the Microsoft Store services. Use it as ``async with``.

    :param credential: an azure-identity ``AsyncTokenCredential`` (not closed by the client), or
        a :class:`TokenCache` to share one token between clients or tune its refresh.
    :param endpoints: base URLs; :meth:`Endpoints.production` or :meth:`Endpoints.single`.
    :param retry: attempts, timeouts, backoff and retry budget.
    :param transport: send attempts through this object instead of aiohttp (one async method,
        ``send``; see :class:`~store_async.MockTransport` for tests). The client does not close
        it, and the connection options below do not apply to it.
    :param session: an ``aiohttp.ClientSession`` to use instead of creating one; the client does
        not close it, and the connector options below do not apply to it.
    :param limit: most attempts in flight (and connections in the pool), all hosts (0: no
        limit). Calls beyond it wait, first come first served, within their own timeout.
    :param limit_per_host: most connections per host (0: no per-host limit).
    :param keepalive_timeout: seconds an idle pooled connection is kept. Shorter than the typical
        server idle timeout, so the client does not reuse a connection the server is closing (a
        request lost that way is *maybe applied*).
    :param max_response_bytes: larger bodies raise ``ResponseTooLargeError`` unread.
    :param user_agent: the ``User-Agent`` header.
    :param ssl_context: TLS settings (for example a test CA); default: system trust store.
    :param hooks: call and attempt start/end callables (:class:`ClientHooks`), or a sequence
        of such sets, called in order (:func:`~store_async.combine_hooks`). Unset, a call pays
        nothing for them.
    :param user_rate: pace each user (by the Store ID key's user) to at most ``ops`` sends in
        any ``seconds`` (``"200/300"``: the Store's service-to-service limit), resends included:
        a call waits for its user's turn within its timeout, else ends at once with
        ``ThrottledError`` without sending; a 429 parks its user until ``Retry-After``.
        Default: off.
    :param clock: monotonic clock for timeouts (inject a fake one in tests).
    :param sleep: the wait between attempts (inject a fake one in tests).
    """

    def __init__(
        self,
        credential: Credential | TokenCache,
        *,
        endpoints: Endpoints | None = None,
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
        session: aiohttp.ClientSession | None = None,
        limit: int = 100,
        limit_per_host: int = 0,
        keepalive_timeout: float = 15.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        user_agent: str = f"store-async/{__version__}",
        ssl_context: ssl.SSLContext | None = None,
        hooks: ClientHooks | Iterable[ClientHooks] | None = None,
        user_rate: UserRate | str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        endpoints = Endpoints.production() if endpoints is None else endpoints
        retry = RetryPolicy() if retry is None else retry
        if not isinstance(endpoints, Endpoints):
            raise ValidationError("endpoints must be an Endpoints instance")
        if not isinstance(retry, RetryPolicy):
            raise ValidationError("retry must be a RetryPolicy instance")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ValidationError("session must be an aiohttp.ClientSession")
        if transport is not None and not callable(getattr(transport, "send", None)):
            raise ValidationError("transport must have an async send(...) method")
        if transport is not None and session is not None:
            raise ValidationError("give transport or session, not both")
        if hooks is not None and not isinstance(hooks, ClientHooks):
            if isinstance(hooks, str | bytes) or not isinstance(hooks, Iterable):
                raise ValidationError(
                    "hooks must be a ClientHooks instance or a sequence of them, "
                    f"not {type(hooks).__name__}"
                )
            hooks = combine_hooks(*hooks)
        self._owns_tokens = not isinstance(credential, TokenCache)
        self._tokens = credential if isinstance(credential, TokenCache) else TokenCache(credential)
        self._endpoints = endpoints
        self._policy = retry
        self._limit = _checks.count(limit, "limit")
        self._limit_per_host = _checks.count(limit_per_host, "limit_per_host")
        self._keepalive = _checks.seconds(keepalive_timeout, "keepalive_timeout")
        self._max_bytes = _checks.count(max_response_bytes, "max_response_bytes", minimum=1)
        if not isinstance(user_agent, str) or not user_agent.isprintable():
            raise ValidationError("user_agent must be a printable string")
        self._ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
        self._given_transport = transport
        self._given_session = session
        self._session: aiohttp.ClientSession | None = None
        self._transport: Transport | None = None
        slots = self._limit
        if self._limit_per_host and (not slots or self._limit_per_host < slots):
            slots = self._limit_per_host  # conservative when several hosts share the pool
        if session is not None:
            slots = session.connector.limit if session.connector is not None else 0
        if isinstance(user_rate, str):
            user_rate = UserRate.parse(user_rate)
        elif user_rate is not None and not isinstance(user_rate, UserRate):
            raise ValidationError(
                "user_rate must be a UserRate, a string such as '200/300', or None"
            )
        pacer = None if user_rate is None else UserPacer(user_rate, clock=clock)
        self._engine = Engine(
            self._tokens,
            retry,
            hooks=hooks,
            clock=clock,
            sleep=sleep,
            user_agent=user_agent,
            limit=0 if transport is not None else slots,
            pacer=pacer,
        )
        self._call = self._engine.call
        # Routes bound once: their URLs are parsed here, not per call.
        self._consume_by_item = ops.CONSUME_BY_ITEM.bind(endpoints)
        self._consume_by_transaction = ops.CONSUME_BY_TRANSACTION.bind(endpoints)
        self._consume_v8 = ops.CONSUME_V8.bind(endpoints)
        self._query_licenses = ops.QUERY_LICENSES.bind(endpoints)
        self._query_entitlements = ops.QUERY_ENTITLEMENTS.bind(endpoints)
        self._query_subscriptions = ops.QUERY_SUBSCRIPTIONS.bind(endpoints)
        self._query_orders = ops.QUERY_ORDERS.bind(endpoints)
        self._query_products = ops.QUERY_PRODUCTS.bind(endpoints)
        self._grant_free_product = ops.GRANT_FREE_PRODUCT.bind(endpoints)
        self._grant_free_product_v7 = ops.GRANT_FREE_PRODUCT_V7.bind(endpoints)
        self._renew = {
            StoreIdKeyKind.COLLECTIONS: ops.RENEW_COLLECTIONS_KEY.bind(endpoints),
            StoreIdKeyKind.PURCHASE: ops.RENEW_PURCHASE_KEY.bind(endpoints),
        }
        self._refund_queue_sas = ops.REFUND_QUEUE_SAS.bind(endpoints)

    # -- lifecycle ---------------------------------------------------------------------------

    def _listing(
        self,
        query_one: Callable[..., Awaitable[PageT]],
        query: QueryT,
        timeout: float | None,
        attempts: int | None,
        headers: Mapping[str, str] | None,
        client_request_id: str | None,
    ) -> AsyncPager[Any, PageT]:
        """A pager over ``query_one`` (one of the ``query_*`` methods): the first page is
        ``query``, the next ones ``query.with_continuation(token)``; each page is one call
        with its own ``client_request_id`` (the caller's, extended by the page number)."""
        pages = _PageIds(client_request_id)

        async def fetch(token: str | None) -> PageT:
            return await query_one(
                query if token is None else query.with_continuation(token),
                timeout=timeout,
                attempts=attempts,
                headers=headers,
                client_request_id=pages.next(),
            )

        return AsyncPager(fetch)

    async def __aenter__(self) -> StoreClient:
        if self._engine.transport is not None:
            raise ValidationError("this StoreClient is already open")
        transport = self._given_transport
        if transport is None:
            session = self._given_session
            if session is None:
                # Never reuses a pooled connection that holds unread bytes (design rule 8).
                connector = PoolGuardConnector(
                    limit=self._limit,
                    limit_per_host=self._limit_per_host,
                    keepalive_timeout=self._keepalive,
                    ssl=self._ssl,
                )
                session = aiohttp.ClientSession(
                    connector=connector,
                    cookie_jar=aiohttp.DummyCookieJar(),  # the Store sets no cookies we need
                    trust_env=False,
                )
                self._session = session
            policy = self._policy
            transport = self._transport = AiohttpTransport(
                session,
                max_response_bytes=self._max_bytes,
                attempt_timeout=policy.attempt_timeout,
                connect_timeout=policy.connect_seconds,
            )
        self._engine.open(transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close what the client created (its session, its token cache's refresh task).

        Calls still waiting to be sent end in a *not sent* :class:`~store_async.TransportError`;
        calls in flight end in a typed error too (an unsettled write in
        :class:`~store_async.OutcomeUnknownError`), never in a ``CancelledError`` their caller
        did not ask for.
        """
        self._engine.close()
        transport, self._transport = self._transport, None
        if isinstance(transport, AiohttpTransport):
            transport.closing()
        session, self._session = self._session, None
        if self._owns_tokens:
            await self._tokens.close()
        if session is not None:
            await session.close()

    @property
    def token_cache(self) -> TokenCache:
        """The token cache (share it with another client by passing it as ``credential``)."""
        return self._tokens

    @property
    def retry_budget(self) -> RetryBudget:
        """The client-wide retry budget."""
        return self._engine.budget

    # -- operations --------------------------------------------------------------------------

    async def consume(
        self,
        request: ConsumeRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> ConsumeResult:
        """Report a consumable as fulfilled (``POST /v6.0/collections/consume``, 204), or, for a
        request of :meth:`ConsumeRequest.for_quantity`, consume a quantity
        (``POST /v8.0/collections/consume``, 200 with the balance left).

        Safe to resend with the same request (same tracking id / transaction id) at any time.

        :param timeout: seconds for the whole call, all attempts included (default: the
            policy's); ``deadline=`` is its deprecated name.
        :param attempts: attempts at most (default: the policy's).
        :param headers: extra request headers for this call (every method takes them): sent on
            every attempt; a header the client sets itself (``Authorization``,
            ``Content-Type``, ``MS-CV``, ``User-Agent``...) raises ``ValidationError``.
        :param client_request_id: the base of this call's ``MS-CV`` correlation vector
            (every method takes it): attempt *N* sends ``<client_request_id>.<N>``. A CV base
            (16 or 22 characters of ``A-Z a-z 0-9 + /``), optionally extended (``<base>.3``);
            default: a fresh random base per call. Listings extend it per page.
        :raises OutcomeUnknownError: retries ended after an attempt that may have been applied;
            resend the same request later to settle it.
        :raises StoreError: a definite failure (``InvalidRequestError``,
            ``AuthenticationError``...).
        """
        if type(request) is not ConsumeRequest and not isinstance(request, ConsumeRequest):
            raise ValidationError(f"consume needs a ConsumeRequest, got {type(request).__name__}")
        if deadline is not None:
            timeout = _timeout(timeout, deadline, "consume")
        if request.remove_quantity is not None:
            route = self._consume_v8
        elif request.tracking_id is not None:
            route = self._consume_by_item
        else:
            route = self._consume_by_transaction
        return await self._call(
            route,
            dumps(request),
            request.idempotency_key,
            request,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    async def query_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> QueryResult:
        """One page of a user's products (``POST /v6.0/collections/query``)."""
        if not isinstance(request, QueryRequest):
            raise ValidationError(
                f"query_products needs a QueryRequest, got {type(request).__name__}"
            )
        timeout = _timeout(timeout, deadline, "query_products")
        return await self._call(
            self._query_products,
            dumps(request),
            None,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    def list_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> AsyncPager[CollectionItem, QueryResult]:
        """Every product of every page: ``async for item in store.list_products(query)``;
        ``.by_page(continuation_token=...)`` iterates (or resumes) page by page. The timeout
        and attempts apply per page."""
        if not isinstance(request, QueryRequest):
            raise ValidationError(
                f"list_products needs a QueryRequest, got {type(request).__name__}"
            )

        return self._listing(
            self.query_products, request, timeout, attempts, headers, client_request_id
        )

    async def iter_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[CollectionItem]:
        """Every product of every page (the same as :meth:`list_products`)."""
        timeout = _timeout(timeout, deadline, "iter_products")
        async for item in self.list_products(
            request,
            timeout=timeout,
            attempts=attempts,
            headers=headers,
            client_request_id=client_request_id,
        ):
            yield item

    # -- licenses and entitlements (v8 b2bLicensePreview, v9 publisherQuery) --

    async def query_licenses(
        self,
        query: LicenseQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> LicensePage:
        """One page of licenses and balances (``POST /v8.0/collections/b2bLicensePreview``)."""
        if not isinstance(query, LicenseQuery):
            raise ValidationError(
                f"query_licenses needs a LicenseQuery, got {type(query).__name__}"
            )
        return await self._call(
            self._query_licenses,
            dumps(query),
            None,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    def list_licenses(
        self,
        query: LicenseQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> AsyncPager[LicenseItem, LicensePage]:
        """Every license of every page: ``async for item in store.list_licenses(query)``;
        ``.by_page(continuation_token=...)`` iterates (or resumes) page by page. The timeout
        and attempts apply per page."""
        if not isinstance(query, LicenseQuery):
            raise ValidationError(f"list_licenses needs a LicenseQuery, got {type(query).__name__}")

        return self._listing(
            self.query_licenses, query, timeout, attempts, headers, client_request_id
        )

    async def query_entitlements(
        self,
        query: EntitlementQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> EntitlementPage:
        """One page of entitlements (``POST /v9.0/collections/publisherQuery``)."""
        if not isinstance(query, EntitlementQuery):
            raise ValidationError(
                f"query_entitlements needs an EntitlementQuery, got {type(query).__name__}"
            )
        return await self._call(
            self._query_entitlements,
            dumps(query),
            None,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    def list_entitlements(
        self,
        query: EntitlementQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> AsyncPager[EntitlementItem, EntitlementPage]:
        """Every entitlement of every page (see :meth:`list_licenses`)."""
        if not isinstance(query, EntitlementQuery):
            raise ValidationError(
                f"list_entitlements needs an EntitlementQuery, got {type(query).__name__}"
            )

        return self._listing(
            self.query_entitlements, query, timeout, attempts, headers, client_request_id
        )

    # -- subscriptions (recurrences) --

    async def query_subscriptions(
        self,
        query: SubscriptionQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> SubscriptionPage:
        """One page of a user's subscriptions (``POST /v8.0/b2b/recurrences/query``)."""
        if not isinstance(query, SubscriptionQuery):
            raise ValidationError(
                f"query_subscriptions needs a SubscriptionQuery, got {type(query).__name__}"
            )
        return await self._call(
            self._query_subscriptions,
            dumps(query),
            None,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    def list_subscriptions(
        self,
        b2b_key: str,
        *,
        sandbox_id: str | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> AsyncPager[Subscription, SubscriptionPage]:
        """Every subscription of the user whose **purchase** Store ID key is ``b2b_key``:
        ``async for subscription in store.list_subscriptions(key)``; ``.by_page(...)`` pages.

        :raises ValidationError: an empty key or sandbox id.
        """
        query = SubscriptionQuery(b2b_key=b2b_key, sandbox_id=sandbox_id)

        return self._listing(
            self.query_subscriptions, query, timeout, attempts, headers, client_request_id
        )

    async def change_subscription(
        self,
        subscription_id: str,
        change: SubscriptionChange,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> Subscription:
        """Cancel, extend, refund or stop auto-renewing a subscription
        (``POST /v8.0/b2b/recurrences/{id}/change``); returns it as changed.

        A change has no idempotency key, so it is **never sent again** after an attempt that
        may have been applied.

        :raises OutcomeUnknownError: an attempt may have been applied; query the subscription
            (:meth:`list_subscriptions`) before changing it again.
        :raises ValidationError: ``change`` is not a :class:`SubscriptionChange`, or the id is
            empty.
        """
        if not isinstance(change, SubscriptionChange):
            raise ValidationError(
                f"change_subscription needs a SubscriptionChange, got {type(change).__name__}"
            )
        route = ops.CHANGE_SUBSCRIPTION.bind(self._endpoints, recurrence_id=subscription_id)
        return await self._call(
            route, dumps(change), None, None, timeout, attempts, headers, client_request_id
        )

    # -- orders of the last 90 days (clawback v1) --

    async def query_orders(
        self,
        query: OrderQuery,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> OrderPage:
        """A user's orders of the last 90 days (``POST /v8.0/b2b/orders/query``)."""
        if not isinstance(query, OrderQuery):
            raise ValidationError(f"query_orders needs an OrderQuery, got {type(query).__name__}")
        return await self._call(
            self._query_orders,
            dumps(query),
            None,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    def list_orders(
        self,
        b2b_key: str,
        *,
        line_item_states: Iterable[str] | None = None,
        sandbox_id: str | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> AsyncPager[PurchaseOrder, OrderPage]:
        """Every order of the user whose **purchase** Store ID key is ``b2b_key``, optionally
        only those with a line in one of ``line_item_states`` (``Purchased``, ``Revoked``,
        ``Refunded``): ``async for order in store.list_orders(key)``.

        :raises ValidationError: an empty key, state list, state or sandbox id.
        """
        query = OrderQuery(
            b2b_key=b2b_key, line_item_state_filter=line_item_states, sandbox_id=sandbox_id
        )

        return self._listing(
            self.query_orders, query, timeout, attempts, headers, client_request_id
        )

    async def grant_free_product(
        self,
        request: GrantRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> Order:
        """Grant a free product (``POST /v6.0/purchases/grant``; with a ``sandbox_id``,
        ``POST /v7.0/purchases/grant`` with ``sbx``); keyed by ``order_id``."""
        if not isinstance(request, GrantRequest):
            raise ValidationError(
                f"grant_free_product needs a GrantRequest, got {type(request).__name__}"
            )
        timeout = _timeout(timeout, deadline, "grant_free_product")
        route = (
            self._grant_free_product if request.sandbox_id is None else self._grant_free_product_v7
        )
        return await self._call(
            route,
            dumps(request),
            request.order_id,
            None,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    async def get_offline_license(
        self,
        product_id: str,
        sku_id: str,
        content_id: str,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> OfflineLicense:
        """An offline license (Store for Business ``POST /V1/Products/{p}/{s}/OfflineLicense/{c}``).

        The POST only reads the organisation's license, so it is retried like a read.
        """
        route = ops.OFFLINE_LICENSE.bind(
            self._endpoints, product_id=product_id, sku_id=sku_id, content_id=content_id
        )
        timeout = _timeout(timeout, deadline, "get_offline_license")
        return await self._call(
            route, None, None, None, timeout, attempts, headers, client_request_id
        )

    async def renew_store_id_key(
        self,
        key: StoreIdKey | str,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
        deadline: float | None = None,
    ) -> StoreIdKey:
        """Renew a Store ID key (``POST /v6.0/b2b/keys/renew``); returns the new key.

        The access token travels in the body (no ``Authorization`` header). The key goes to the
        renew URL of its own family (collections or purchase, from its ``aud``), on *our*
        configured endpoints: never to the ``refreshUri`` inside the key, which the key's bearer
        could point anywhere to collect our access token.

        Renewal has no idempotency key, so it is never repeated after a *maybe applied* failure.
        """
        if isinstance(key, str):
            key = StoreIdKey.parse(key)
        elif not isinstance(key, StoreIdKey):
            raise ValidationError(
                f"renew_store_id_key needs a StoreIdKey, got {type(key).__name__}"
            )
        timeout = _timeout(timeout, deadline, "renew_store_id_key")
        return await self._call(
            self._renew[key.kind],
            None,
            None,
            key.value,
            timeout,
            attempts,
            headers,
            client_request_id,
        )

    async def get_refund_queue_sas(
        self,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        client_request_id: str | None = None,
    ) -> RefundQueueSas:
        """The refund queue's SAS URI (``GET /v8.0/b2b/clawback/sastoken``), valid for hours.

        The URI's signature is a secret: the record never shows it, and an error whose text
        echoes it has it redacted.

        :raises RefundQueueNotOnboardedError: the service answered 400: the publisher has not
            onboarded to clawback v2, so there is no queue to read.
        :raises StoreError: any other failure (``AuthenticationError``...).
        """
        try:
            return await self._call(
                self._refund_queue_sas,
                None,
                None,
                None,
                timeout,
                attempts,
                headers,
                client_request_id,
            )
        except InvalidRequestError as error:
            raise _without_sas(
                RefundQueueNotOnboardedError(
                    "the refund queue is not set up for this app: GET "
                    "/v8.0/b2b/clawback/sastoken answered 400 (onboard to clawback v2 in "
                    "Partner Center first)",
                    status=error.status,
                    code=error.code,
                    inner_code=error.inner_code,
                    correlation_id=error.correlation_id,
                    request_id=error.request_id,
                    cv=error.cv,
                    server_cv=error.server_cv,
                    service_error=error.service_error,
                )
            ) from None
        except StoreError as error:
            # A server may echo the SAS URI in its error text: never pass the signature on.
            raise _without_sas(error) from None

    def __repr__(self) -> str:
        state = "open" if self._engine.transport is not None else "closed"
        return f"StoreClient(endpoints={self._endpoints!r}, {state})"
