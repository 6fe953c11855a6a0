"""The route table: every Store operation as data.

A :class:`Route` says what the engine must know to send an operation and to retry it safely
(docs/design.md, rule 2): its method and URL (host family + path), the wire name of its
idempotency key, whether it may be sent again after a *maybe applied* failure, whether the
access token travels in the body instead of the ``Authorization`` header, and how a 2xx answer
becomes a result.

=======================  ======  ==================  =====================  =================
operation                method  idempotency key     repeat after *maybe    ends unsettled as
                                                     applied*
=======================  ======  ==================  =====================  =================
consume (by item)        POST    ``trackingId``      yes (same body)        OutcomeUnknownError
consume (transaction)    POST    ``transactionId``   yes (same body)        OutcomeUnknownError
grant_free_product       POST    ``orderId``         yes (same body)        OutcomeUnknownError
query_products           POST    none: a read        yes                    the last error
get_offline_license      POST    none: only reads    yes                    the last error
renew_store_id_key       POST    none                **never**              OutcomeUnknownError
consume (v8, quantity)   POST    ``trackingId``      yes (same body)        OutcomeUnknownError
query_licenses (v8)      POST    none: a read        yes                    the last error
query_entitlements (v9)  POST    none: a read        yes                    the last error
query_subscriptions      POST    none: a read        yes                    the last error
change_subscription      POST    none                **never**              OutcomeUnknownError
query_orders             POST    none: a read        yes                    the last error
grant (v7, sandbox)      POST    ``orderId``         yes (same body)        OutcomeUnknownError
get_refund_queue_sas     GET     none: a read        yes                    the last error
=======================  ======  ==================  =====================  =================

A v8 consume is deduplicated on its trackingId **and** user, product and quantity: the engine
resends the same bytes, and the request record is immutable, so a key never travels with other
values.

Adding an operation is a row here, its records in :mod:`store_async.models`, and a thin
:class:`~store_async.StoreClient` method that validates the request and calls the engine: no new
path through the engine. A route is *bound* once per client (:meth:`Route.bind`), which builds
its URL; routes with path parameters are bound per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import quote

import attrs
import orjson
from yarl import URL

from store_async.codec import dumps, loads, structure
from store_async.endpoints import Endpoints
from store_async.errors import InvalidStoreIdKeyError, ResponseFormatError, ValidationError
from store_async.models import (
    ConsumeRequest,
    ConsumeResult,
    KeyRenewalRequest,
    KeyRenewalResponse,
    OfflineLicense,
    Order,
    QueryResult,
    RefundQueueSas,
)
from store_async.models.consume import ConsumeV8Response, consume_result, consume_v8_result
from store_async.models.licenses import EntitlementPage, LicensePage
from store_async.models.orders import OrderPage
from store_async.models.subscriptions import Subscription, SubscriptionPage, subscriptions_in
from store_async.store_id_key import StoreIdKey

__all__ = [
    "CHANGE_SUBSCRIPTION",
    "CONSUME_BY_ITEM",
    "CONSUME_BY_TRANSACTION",
    "CONSUME_V8",
    "GRANT_FREE_PRODUCT",
    "GRANT_FREE_PRODUCT_V7",
    "OFFLINE_LICENSE",
    "QUERY_ENTITLEMENTS",
    "QUERY_LICENSES",
    "QUERY_ORDERS",
    "QUERY_PRODUCTS",
    "QUERY_SUBSCRIPTIONS",
    "REFUND_QUEUE_SAS",
    "RENEW_COLLECTIONS_KEY",
    "RENEW_PURCHASE_KEY",
    "ROUTES",
    "Answer",
    "BoundRoute",
    "Parse",
    "Route",
]

T = TypeVar("T")

Answer = tuple[int, Any, bytes]
"""A 2xx answer: status, headers (a case-insensitive mapping), body (``b""`` for 204)."""

Parse = Callable[[Answer, int, Any], T]
"""``parse(answer, attempts, context) -> result``: a plain function, so no closure per call."""

TokenBody = Callable[[str, Any], bytes]
"""``token_body(access_token, context) -> body`` for operations that carry the token in their
body (key renewal): built per attempt, since the token may change between attempts."""

Host = Literal["collections", "purchase", "business"]

STORE_ID_KEY_FIELDS: Final = frozenset(("identityValue", "b2bKey"))
"""Where a request body carries a user's Store ID key (``beneficiary.identityValue``,
``b2bKey``)."""


@attrs.frozen(kw_only=True)
class Route(Generic[T]):
    """One operation of the Store services, as data (see the module docstring)."""

    name: str
    """The operation's name in hooks, logs and errors (``consume``, ``query_products``...)."""
    method: Literal["GET", "POST"]
    host: Host
    """Which :class:`~store_async.Endpoints` base URL it lives on."""
    path: str
    """The path; ``{name}`` placeholders are filled (percent-encoded) by :meth:`bind`."""
    key_name: str | None
    """Wire name of the idempotency key fixed before the first send, if any."""
    repeatable: bool
    """May be sent again after a *maybe applied* failure (keyed, or a read)."""
    writes: bool
    """Changes state: ends in ``OutcomeUnknownError`` when a maybe-applied attempt is unsettled."""
    parse: Parse[T]
    token_body: TokenBody | None = None
    """Set when the access token travels in the body (no ``Authorization`` header)."""
    unsettled_hint: str | None = None
    """For an operation without an idempotency key: how to learn whether a call that ended
    unsettled was applied (in the ``OutcomeUnknownError`` message)."""
    secret_fields: frozenset[str] = STORE_ID_KEY_FIELDS
    """Wire names of the body fields that carry secrets (Store ID keys, a service ticket):
    their values are scrubbed from any server text of a failed attempt (``_secrets``)."""

    def bind(self, endpoints: Endpoints, **path_parameters: str) -> BoundRoute[T]:
        """This route on ``endpoints``, with its path parameters filled in."""
        path = self.path
        if path_parameters:
            path = path.format_map(
                {name: _path_part(name, value) for name, value in path_parameters.items()}
            )
        base: str = getattr(endpoints, self.host)
        # Built once: yarl would parse a str URL again on every request.
        return BoundRoute(self, URL(base + path, encoded=True))


class BoundRoute(Generic[T]):
    """A :class:`Route` with its URL built: what the engine's fast path reads per call."""

    __slots__ = (
        "http_identity",
        "key_name",
        "method",
        "name",
        "parse",
        "repeatable",
        "route",
        "secret_fields",
        "token_body",
        "url",
        "writes",
    )

    def __init__(self, route: Route[T], url: URL) -> None:
        self.route = route
        self.url = url
        # For hook events (the HTTP semantic conventions' url.full, server.address and
        # server.port), rendered once per bound route rather than twice per attempt.
        self.http_identity = (str(url), url.host or "", url.port or 0)
        # Copied flat: one attribute read each on the hot path.
        self.name = route.name
        self.method = route.method
        self.key_name = route.key_name
        self.repeatable = route.repeatable
        self.writes = route.writes
        self.parse: Parse[T] = route.parse
        self.token_body = route.token_body
        self.secret_fields = route.secret_fields

    def __repr__(self) -> str:
        return f"BoundRoute({self.name!r}, {self.method} {self.url})"


def _path_part(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    # ":" is a plain path character (RFC 3986 pchar): subscription ids (mdr:0:...) go as the
    # documented example sends them; "/", "?", "#" and the rest are percent-encoded.
    return quote(value, safe=":")


# -- parsers -------------------------------------------------------------------------------


def _consume_v6(answer: Answer, attempts: int, request: ConsumeRequest) -> ConsumeResult:
    """204: the result is the request's keys plus the service's correlation headers."""
    headers = answer[1]
    return consume_result(
        request.tracking_id,
        request.transaction_id,
        attempts,
        headers.get("MS-CorrelationId"),
        headers.get("MS-RequestId"),
        headers.get("MS-CV"),
    )


def _consume_v8(answer: Answer, attempts: int, request: ConsumeRequest) -> ConsumeResult:
    """200 with the balance: built like the v6 result (slot descriptors), plus the body."""
    body = loads(answer[2], ConsumeV8Response)
    tracking_id: str = request.tracking_id  # type: ignore[assignment]  # v8 always has one
    echoed = body.tracking_id
    if echoed is not None and echoed != tracking_id and echoed.lower() != tracking_id:
        # An answer to another request must not settle ours (retried: maybe applied).
        raise ResponseFormatError("the v8 consume answer is for another trackingId")
    headers = answer[1]
    return consume_v8_result(
        tracking_id,
        attempts,
        headers.get("MS-CorrelationId"),
        headers.get("MS-RequestId"),
        headers.get("MS-CV"),
        body,
    )


def _changed_subscription(answer: Answer, _attempts: int, _context: Any) -> Subscription:
    """A bare item or ``{items: [...]}`` (both documented): the changed subscription."""
    try:
        document = orjson.loads(answer[2])
    except orjson.JSONDecodeError as error:
        raise ResponseFormatError(
            f"Subscription: the body is not JSON ({error.msg} at position {error.pos})"
        ) from None
    items = subscriptions_in(document)
    if not items:
        raise ResponseFormatError("Subscription: the change answer lists no subscription")
    return structure(items[0], Subscription)


def parse_as(cls: type[T]) -> Parse[T]:
    """A parser that decodes the body as ``cls`` (one per route, built at import)."""

    def parse(answer: Answer, _attempts: int, _context: Any) -> T:
        return loads(answer[2], cls)

    parse.__qualname__ = f"parse_as({cls.__name__})"
    return parse


def _renewed_key(answer: Answer, _attempts: int, _context: Any) -> StoreIdKey:
    renewed = loads(answer[2], KeyRenewalResponse)
    try:
        return StoreIdKey.parse(renewed.key)
    except InvalidStoreIdKeyError:
        raise ResponseFormatError("the service returned a malformed Store ID key") from None


def _renewal_body(token: str, key: Any) -> bytes:
    return dumps(KeyRenewalRequest(service_ticket=token, key=key))


def read(
    cls: type[T], name: str, host: Host, path: str, *, method: Literal["GET", "POST"] = "POST"
) -> Route[T]:
    """A route that only reads: no idempotency key needed, repeatable after any failure, its
    answer decoded as ``cls``."""
    return Route(
        name=name,
        method=method,
        host=host,
        path=path,
        key_name=None,
        repeatable=True,
        writes=False,
        parse=parse_as(cls),
    )


# -- the table -----------------------------------------------------------------------------

CONSUME_BY_ITEM: Final = Route[ConsumeResult](
    name="consume",
    method="POST",
    host="collections",
    path="/v6.0/collections/consume",
    key_name="trackingId",
    repeatable=True,
    writes=True,
    parse=_consume_v6,
)
CONSUME_BY_TRANSACTION: Final = attrs.evolve(CONSUME_BY_ITEM, key_name="transactionId")
QUERY_PRODUCTS: Final = read(
    QueryResult, "query_products", "collections", "/v6.0/collections/query"
)
GRANT_FREE_PRODUCT: Final = Route[Order](
    name="grant_free_product",
    method="POST",
    host="purchase",
    path="/v6.0/purchases/grant",
    key_name="orderId",
    repeatable=True,
    writes=True,
    parse=parse_as(Order),
)
# a POST that only reads the organisation's license: retried like a read
OFFLINE_LICENSE: Final = read(
    OfflineLicense,
    "get_offline_license",
    "business",
    "/V1/Products/{product_id}/{sku_id}/OfflineLicense/{content_id}",
)
RENEW_COLLECTIONS_KEY: Final = Route[StoreIdKey](
    name="renew_store_id_key",
    method="POST",
    host="collections",
    path="/v6.0/b2b/keys/renew",
    key_name=None,
    repeatable=False,  # no idempotency key: never repeated after a maybe-applied failure
    writes=True,
    parse=_renewed_key,
    token_body=_renewal_body,
    secret_fields=frozenset(("key", "serviceTicket")),  # the key and our access token
)
RENEW_PURCHASE_KEY: Final = attrs.evolve(RENEW_COLLECTIONS_KEY, host="purchase")
REFUND_QUEUE_SAS: Final = read(
    RefundQueueSas, "get_refund_queue_sas", "purchase", "/v8.0/b2b/clawback/sastoken", method="GET"
)

# -- the newer surface (GDK pages; docs/store-api.md sections 9, 10) --

QUERY_SUBSCRIPTIONS: Final = read(
    SubscriptionPage, "query_subscriptions", "purchase", "/v8.0/b2b/recurrences/query"
)
GRANT_FREE_PRODUCT_V7: Final = attrs.evolve(GRANT_FREE_PRODUCT, path="/v7.0/purchases/grant")
"""The grant with a sandbox (``sbx``); the v6 grant stays the default without one."""
QUERY_ORDERS: Final = read(OrderPage, "query_orders", "purchase", "/v8.0/b2b/orders/query")
CHANGE_SUBSCRIPTION: Final = Route[Subscription](
    name="change_subscription",
    method="POST",
    host="purchase",
    path="/v8.0/b2b/recurrences/{recurrence_id}/change",
    key_name=None,
    repeatable=False,  # no idempotency key: never repeated after a maybe-applied failure
    writes=True,
    parse=_changed_subscription,
    unsettled_hint=(
        "a subscription change has no idempotency key: query the subscription "
        "(list_subscriptions) to see whether it was applied before changing it again"
    ),
)

CONSUME_V8: Final = Route[ConsumeResult](
    name="consume_v8",
    method="POST",
    host="collections",
    path="/v8.0/collections/consume",
    key_name="trackingId",
    repeatable=True,
    writes=True,
    parse=_consume_v8,
)
QUERY_LICENSES: Final = read(
    LicensePage, "query_licenses", "collections", "/v8.0/collections/b2bLicensePreview"
)
QUERY_ENTITLEMENTS: Final = read(
    EntitlementPage, "query_entitlements", "collections", "/v9.0/collections/publisherQuery"
)

ROUTES: Final[tuple[Route[Any], ...]] = (
    CONSUME_BY_ITEM,
    CONSUME_BY_TRANSACTION,
    QUERY_PRODUCTS,
    GRANT_FREE_PRODUCT,
    OFFLINE_LICENSE,
    RENEW_COLLECTIONS_KEY,
    RENEW_PURCHASE_KEY,
    CONSUME_V8,
    QUERY_LICENSES,
    QUERY_ENTITLEMENTS,
    QUERY_SUBSCRIPTIONS,
    CHANGE_SUBSCRIPTION,
    QUERY_ORDERS,
    GRANT_FREE_PRODUCT_V7,
    REFUND_QUEUE_SAS,
)
"""Every route, for documentation and tests (the idempotency table above, as data)."""
