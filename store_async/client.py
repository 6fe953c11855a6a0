"""``StoreClient``: one method per Store operation over one session, token cache and retry engine.

    async with StoreClient(credential, endpoints=Endpoints.production()) as store:
        result = await store.consume(ConsumeRequest.for_item(beneficiary, item_id))

Every call runs its first attempt directly (no tenacity object, no closure, the body encoded
once, headers and URLs prebuilt); only a retryable failure enters
:func:`store_async.retry.retry_call`. What may be repeated after a *maybe applied* failure
is decided per operation (DESIGN rule 2):

=====================  =================  =====================  ===============================
operation              idempotency key    repeat after *maybe    when it ends unsettled
                                          applied*
=====================  =================  =====================  ===============================
consume (by item)      ``trackingId``     yes (same body)        ``OutcomeUnknownError``
                                                                 (``tracking_id`` = tracking id)
consume (transaction)  ``transactionId``  yes (same body)        ``OutcomeUnknownError``
                                                                 (``tracking_id`` = transaction id)
grant_free_product     ``orderId``        yes (same body)        ``OutcomeUnknownError``
                                                                 (``tracking_id`` = order id)
query_products         none: a read       yes                    the last error
get_offline_license    none: a POST that  yes                    the last error
                       only reads
renew_store_id_key     none               **never**              ``OutcomeUnknownError``
                                                                 (``tracking_id`` = ``None``)
=====================  =================  =====================  ===============================

*Not sent* failures, 408 and 429 are retried for every operation (nothing was applied). A 401
whose token the service rejected drops that token, refreshes it once and resends once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Final, TypeVar
from urllib.parse import quote

import aiohttp
import attrs
from yarl import URL

from store_async import __version__
from store_async.auth import Credential, TokenCache
from store_async.codec import dumps, loads
from store_async.endpoints import Endpoints
from store_async.engine import CallEngine, check_seconds
from store_async.errors import (
    InvalidRequestError,
    InvalidStoreIdKeyError,
    RefundQueueNotOnboardedError,
    ResponseFormatError,
    StoreError,
    ValidationError,
)
from store_async.hooks import ClientHooks
from store_async.models import (
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    KeyRenewalResponse,
    OfflineLicense,
    Order,
    QueryRequest,
    QueryResult,
    RefundQueueSas,
)
from store_async.models.consume import consume_result
from store_async.models.refunds import redact_sas
from store_async.retry import Operation, RetryBudget, RetryPolicy
from store_async.store_id_key import StoreIdKey, StoreIdKeyKind
from store_async.transport import Answer, Transport

__all__ = ["OPERATIONS", "StoreClient"]

T = TypeVar("T")

CONSUME: Final = Operation("consume", "trackingId", repeatable=True, writes=True)
CONSUME_BY_TRANSACTION: Final = Operation("consume", "transactionId", repeatable=True, writes=True)
GRANT: Final = Operation("grant_free_product", "orderId", repeatable=True, writes=True)
QUERY: Final = Operation("query_products", None, repeatable=True, writes=False)
OFFLINE_LICENSE: Final = Operation("get_offline_license", None, repeatable=True, writes=False)
RENEW: Final = Operation("renew_store_id_key", None, repeatable=False, writes=True)
REFUND_QUEUE_SAS: Final = Operation("get_refund_queue_sas", None, True, False, "GET")
OPERATIONS: Final = (
    CONSUME,
    CONSUME_BY_TRANSACTION,
    GRANT,
    QUERY,
    OFFLINE_LICENSE,
    RENEW,
    REFUND_QUEUE_SAS,
)
"""The idempotency table above, as data."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


def _consume_result(answer: Answer, attempts: int, request: ConsumeRequest) -> ConsumeResult:
    headers = answer[1]
    return consume_result(
        request.tracking_id,
        request.transaction_id,
        attempts,
        headers.get("MS-CorrelationId"),
        headers.get("MS-RequestId"),
        headers.get("MS-CV"),
    )


def _parse_as(answer: Answer, _attempts: int, cls: type[T]) -> T:
    return loads(answer[2], cls)


def _parse_renewed(answer: Answer, _attempts: int, _context: object) -> StoreIdKey:
    renewed = loads(answer[2], KeyRenewalResponse)
    try:
        return StoreIdKey.parse(renewed.key)
    except InvalidStoreIdKeyError:
        raise ResponseFormatError("the service returned a malformed Store ID key") from None


def _count(name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _path_part(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


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


class StoreClient:
    """Asyncio client for the Microsoft Store services. Use it as ``async with``.

    :param credential: an azure-identity ``AsyncTokenCredential`` (not closed by the client), or
        a :class:`TokenCache` to share one token between clients or tune its refresh.
    :param endpoints: base URLs; :meth:`Endpoints.production` or :meth:`Endpoints.single`.
    :param retry: attempts, deadline, timeouts, backoff and retry budget.
    :param session: an ``aiohttp.ClientSession`` to use instead of creating one; the client does
        not close it, and the connector options below do not apply to it.
    :param limit: most connections in the pool, all hosts (0: no limit). Calls beyond it wait for
        a free connection; that wait counts towards :attr:`RetryPolicy.connect_seconds`.
    :param limit_per_host: most connections per host (0: no per-host limit).
    :param keepalive_timeout: seconds an idle pooled connection is kept. Shorter than the typical
        server idle timeout, so the client does not reuse a connection the server is closing (a
        request lost that way is *maybe applied*).
    :param max_response_bytes: larger bodies raise ``ResponseTooLargeError`` unread.
    :param user_agent: the ``User-Agent`` header.
    :param ssl_context: TLS settings (for example a test CA); default: system trust store.
    :param hooks: attempt start/end callables (:class:`ClientHooks`).
    :param clock: monotonic clock for deadlines (inject a fake one in tests).
    :param sleep: the wait between attempts (inject a fake one in tests).
    """

    def __init__(
        self,
        credential: Credential | TokenCache,
        *,
        endpoints: Endpoints | None = None,
        retry: RetryPolicy | None = None,
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
        if hooks is not None and not isinstance(hooks, ClientHooks):
            raise ValidationError("hooks must be a ClientHooks instance")
        self._owns_tokens = not isinstance(credential, TokenCache)
        self._tokens = credential if isinstance(credential, TokenCache) else TokenCache(credential)
        self._endpoints = endpoints
        self._policy = retry
        self._limit = _count("limit", limit)
        self._limit_per_host = _count("limit_per_host", limit_per_host)
        self._keepalive = check_seconds("keepalive_timeout", keepalive_timeout)
        self._max_bytes = _count("max_response_bytes", max_response_bytes, minimum=1)
        if not isinstance(user_agent, str) or not user_agent.isprintable():
            raise ValidationError("user_agent must be a printable string")
        self._ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
        self._given_session = session
        self._session: aiohttp.ClientSession | None = None
        self._engine = CallEngine(
            self._tokens, retry, hooks=hooks, clock=clock, sleep=sleep, user_agent=user_agent
        )
        self._call = self._engine.call
        # Built once: yarl would parse a str URL again on every request.
        self._consume_url = URL(f"{endpoints.collections}/v6.0/collections/consume")
        self._query_url = URL(f"{endpoints.collections}/v6.0/collections/query")
        self._grant_url = URL(f"{endpoints.purchase}/v6.0/purchases/grant")
        self._renew_urls = {
            StoreIdKeyKind.COLLECTIONS: URL(f"{endpoints.collections}/v6.0/b2b/keys/renew"),
            StoreIdKeyKind.PURCHASE: URL(f"{endpoints.purchase}/v6.0/b2b/keys/renew"),
        }
        self._refund_sas_url = URL(f"{endpoints.purchase}/v8.0/b2b/clawback/sastoken")

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> StoreClient:
        if self._engine.transport is not None:
            raise ValidationError("this StoreClient is already open")
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
        self._engine.transport = Transport(session, max_response_bytes=self._max_bytes)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close what the client created (its session, its token cache's refresh task)."""
        self._engine.transport = None
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
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> ConsumeResult:
        """Report a consumable as fulfilled (``POST /v6.0/collections/consume``, 204).

        Safe to resend with the same request (same tracking id / transaction id) at any time.

        :raises OutcomeUnknownError: retries ended after an attempt that may have been applied;
            resend the same request later to settle it.
        :raises StoreError: a definite failure (``InvalidRequestError``,
            ``AuthenticationError``...).
        """
        if not isinstance(request, ConsumeRequest):
            raise ValidationError(f"consume needs a ConsumeRequest, got {type(request).__name__}")
        operation = CONSUME if request.tracking_id is not None else CONSUME_BY_TRANSACTION
        return await self._call(
            operation,
            self._consume_url,
            dumps(request),
            request.idempotency_key,
            _consume_result,
            request,
            deadline,
            attempts,
        )

    async def query_products(
        self,
        request: QueryRequest,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> QueryResult:
        """One page of a user's products (``POST /v6.0/collections/query``)."""
        if not isinstance(request, QueryRequest):
            raise ValidationError(
                f"query_products needs a QueryRequest, got {type(request).__name__}"
            )
        return await self._call(
            QUERY, self._query_url, dumps(request), None, _parse_as, QueryResult, deadline, attempts
        )

    async def iter_products(
        self,
        request: QueryRequest,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> AsyncIterator[CollectionItem]:
        """Every product of every page, following ``continuationToken`` (deadline per page)."""
        seen: set[str] = set()
        while True:
            page = await self.query_products(request, deadline=deadline, attempts=attempts)
            for item in page.items:
                yield item
            token = page.continuation_token
            if not token:
                return
            if token in seen:  # a service bug must not become an endless loop
                raise ResponseFormatError("the service repeated a continuation token")
            seen.add(token)
            request = request.with_continuation(token)

    async def grant_free_product(
        self,
        request: GrantRequest,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> Order:
        """Grant a free product (``POST /v6.0/purchases/grant``); keyed by ``order_id``."""
        if not isinstance(request, GrantRequest):
            raise ValidationError(
                f"grant_free_product needs a GrantRequest, got {type(request).__name__}"
            )
        return await self._call(
            GRANT,
            self._grant_url,
            dumps(request),
            request.order_id,
            _parse_as,
            Order,
            deadline,
            attempts,
        )

    async def get_offline_license(
        self,
        product_id: str,
        sku_id: str,
        content_id: str,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> OfflineLicense:
        """An offline license (Store for Business ``POST /V1/Products/{p}/{s}/OfflineLicense/{c}``).

        The POST only reads the organisation's license, so it is retried like a read.
        """
        path = "/".join(
            (
                _path_part("product_id", product_id),
                _path_part("sku_id", sku_id),
                "OfflineLicense",
                _path_part("content_id", content_id),
            )
        )
        url = URL(f"{self._endpoints.business}/V1/Products/{path}", encoded=True)
        return await self._call(
            OFFLINE_LICENSE, url, None, None, _parse_as, OfflineLicense, deadline, attempts
        )

    async def renew_store_id_key(
        self,
        key: StoreIdKey | str,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
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
        return await self._call(
            RENEW,
            self._renew_urls[key.kind],
            None,
            None,
            _parse_renewed,
            None,
            deadline,
            attempts,
            renew_key=key.value,
        )

    # -- refund events (clawback v2) ------------------------------------------------------------
    # Kept in its own block until the route table lands: it becomes a GET row there.

    async def get_refund_queue_sas(
        self,
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> RefundQueueSas:
        """The refund queue's SAS URI (``GET /v8.0/b2b/clawback/sastoken``), valid for hours.

        The URI's signature is a secret: the record never shows it.

        :raises RefundQueueNotOnboardedError: the service answered 400: the publisher has not
            onboarded to clawback v2, so there is no queue to read.
        :raises StoreError: any other failure (``AuthenticationError``...).
        """
        try:
            return await self._refund_queue_sas(deadline, attempts)
        except StoreError as error:
            # A server may echo the SAS URI in its error text: never pass the signature on.
            raise _without_sas(error) from None

    async def _refund_queue_sas(
        self, deadline: float | None, attempts: int | None
    ) -> RefundQueueSas:
        try:
            return await self._call(
                REFUND_QUEUE_SAS,
                self._refund_sas_url,
                None,
                None,
                _parse_as,
                RefundQueueSas,
                deadline,
                attempts,
            )
        except InvalidRequestError as error:
            raise RefundQueueNotOnboardedError(
                "the refund queue is not set up for this app: GET /v8.0/b2b/clawback/sastoken "
                "answered 400 (onboard to clawback v2 in Partner Center first)",
                status=error.status,
                code=error.code,
                inner_code=error.inner_code,
                correlation_id=error.correlation_id,
                request_id=error.request_id,
                cv=error.cv,
                service_error=error.service_error,
            ) from None

    def __repr__(self) -> str:
        state = "open" if self._engine.transport is not None else "closed"
        return f"StoreClient(endpoints={self._endpoints!r}, {state})"
