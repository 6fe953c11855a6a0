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
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Final, TypeVar

import aiohttp

from store_async import _operations as ops
from store_async._auth import Credential, TokenCache
from store_async._budget import RetryBudget
from store_async._engine import Engine
from store_async._paging import AsyncPager
from store_async._policy import RetryPolicy, deprecated_deadline
from store_async._transport import AiohttpTransport, Transport
from store_async._version import __version__
from store_async.codec import dumps
from store_async.endpoints import Endpoints
from store_async.errors import ValidationError
from store_async.instrumentation._hooks import ClientHooks
from store_async.models import (
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    OfflineLicense,
    Order,
    QueryRequest,
    QueryResult,
    _checks,
)
from store_async.store_id_key import StoreIdKey, StoreIdKeyKind

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "StoreClient"]

T = TypeVar("T")

DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


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
    :param hooks: attempt start/end callables (:class:`ClientHooks`).
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
        hooks: ClientHooks | None = None,
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
            raise ValidationError("hooks must be a ClientHooks instance")
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
        self._engine = Engine(
            self._tokens,
            retry,
            hooks=hooks,
            clock=clock,
            sleep=sleep,
            user_agent=user_agent,
            limit=0 if transport is not None else slots,
        )
        self._call = self._engine.call
        # Routes bound once: their URLs are parsed here, not per call.
        self._consume_by_item = ops.CONSUME_BY_ITEM.bind(endpoints)
        self._consume_by_transaction = ops.CONSUME_BY_TRANSACTION.bind(endpoints)
        self._query_products = ops.QUERY_PRODUCTS.bind(endpoints)
        self._grant_free_product = ops.GRANT_FREE_PRODUCT.bind(endpoints)
        self._renew = {
            StoreIdKeyKind.COLLECTIONS: ops.RENEW_COLLECTIONS_KEY.bind(endpoints),
            StoreIdKeyKind.PURCHASE: ops.RENEW_PURCHASE_KEY.bind(endpoints),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> StoreClient:
        if self._engine.transport is not None:
            raise ValidationError("this StoreClient is already open")
        transport = self._given_transport
        if transport is None:
            session = self._given_session
            if session is None:
                connector = aiohttp.TCPConnector(
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
        deadline: float | None = None,
    ) -> ConsumeResult:
        """Report a consumable as fulfilled (``POST /v6.0/collections/consume``, 204).

        Safe to resend with the same request (same tracking id / transaction id) at any time.

        :param timeout: seconds for the whole call, all attempts included (default: the
            policy's); ``deadline=`` is its deprecated name.
        :param attempts: attempts at most (default: the policy's).
        :raises OutcomeUnknownError: retries ended after an attempt that may have been applied;
            resend the same request later to settle it.
        :raises StoreError: a definite failure (``InvalidRequestError``,
            ``AuthenticationError``...).
        """
        if type(request) is not ConsumeRequest and not isinstance(request, ConsumeRequest):
            raise ValidationError(f"consume needs a ConsumeRequest, got {type(request).__name__}")
        if deadline is not None:
            timeout = _timeout(timeout, deadline, "consume")
        route = (
            self._consume_by_item
            if request.tracking_id is not None
            else self._consume_by_transaction
        )
        return await self._call(
            route, dumps(request), request.idempotency_key, request, timeout, attempts
        )

    async def query_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
    ) -> QueryResult:
        """One page of a user's products (``POST /v6.0/collections/query``)."""
        if not isinstance(request, QueryRequest):
            raise ValidationError(
                f"query_products needs a QueryRequest, got {type(request).__name__}"
            )
        timeout = _timeout(timeout, deadline, "query_products")
        return await self._call(self._query_products, dumps(request), None, None, timeout, attempts)

    def list_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> AsyncPager[CollectionItem, QueryResult]:
        """Every product of every page: ``async for item in store.list_products(query)``;
        ``.by_page(continuation_token=...)`` iterates (or resumes) page by page. The timeout
        and attempts apply per page."""
        if not isinstance(request, QueryRequest):
            raise ValidationError(
                f"list_products needs a QueryRequest, got {type(request).__name__}"
            )

        async def fetch(token: str | None) -> QueryResult:
            page = request if token is None else request.with_continuation(token)
            return await self.query_products(page, timeout=timeout, attempts=attempts)

        return AsyncPager(fetch)

    async def iter_products(
        self,
        request: QueryRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[CollectionItem]:
        """Every product of every page (the same as :meth:`list_products`)."""
        timeout = _timeout(timeout, deadline, "iter_products")
        async for item in self.list_products(request, timeout=timeout, attempts=attempts):
            yield item

    async def grant_free_product(
        self,
        request: GrantRequest,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
    ) -> Order:
        """Grant a free product (``POST /v6.0/purchases/grant``); keyed by ``order_id``."""
        if not isinstance(request, GrantRequest):
            raise ValidationError(
                f"grant_free_product needs a GrantRequest, got {type(request).__name__}"
            )
        timeout = _timeout(timeout, deadline, "grant_free_product")
        return await self._call(
            self._grant_free_product, dumps(request), request.order_id, None, timeout, attempts
        )

    async def get_offline_license(
        self,
        product_id: str,
        sku_id: str,
        content_id: str,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
    ) -> OfflineLicense:
        """An offline license (Store for Business ``POST /V1/Products/{p}/{s}/OfflineLicense/{c}``).

        The POST only reads the organisation's license, so it is retried like a read.
        """
        route = ops.OFFLINE_LICENSE.bind(
            self._endpoints, product_id=product_id, sku_id=sku_id, content_id=content_id
        )
        timeout = _timeout(timeout, deadline, "get_offline_license")
        return await self._call(route, None, None, None, timeout, attempts)

    async def renew_store_id_key(
        self,
        key: StoreIdKey | str,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
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
        return await self._call(self._renew[key.kind], None, None, key.value, timeout, attempts)

    def __repr__(self) -> str:
        state = "open" if self._engine.transport is not None else "closed"
        return f"StoreClient(endpoints={self._endpoints!r}, {state})"
