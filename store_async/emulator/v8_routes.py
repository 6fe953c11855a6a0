"""The emulator's handlers for the newer Store surface (docs/store-api.md sections 9 and 10).

Each handler takes the :class:`~store_async.emulator.service.StoreService` (for its bearer, key
and body checks) and the request; :meth:`StoreService.application` registers them, so they run
through the same fault injection and headers as every other route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

if TYPE_CHECKING:
    from store_async.emulator.service import StoreService

from store_async.emulator.licenses import license_page
from store_async.emulator.wire import ApiError

__all__ = [
    "change_subscription",
    "consume_v8",
    "license_query",
    "publisher_query",
    "query_orders",
    "query_subscriptions",
]


async def consume_v8(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/collections/consume``: 200 with ``{newQuantity, itemId, trackingId,
    productId, orderTransactions?}``."""
    client_id = service.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
    body = await service.read_body(request)
    user_id, _, _ = service.beneficiary(body.get("beneficiary"), "beneficiary", client_id)
    return service.json(request, 200, service.state.balances.consume(user_id, body))


async def _license_query(
    service: StoreService, request: web.Request, *, v9: bool
) -> web.StreamResponse:
    client_id = service.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
    body = await service.read_body(request)
    raw = body.get("beneficiaries")
    if not isinstance(raw, list) or not raw:
        raise ApiError.invalid("beneficiaries must be a non-empty list.", "beneficiaries")
    users = []
    for entry in raw:
        user_id, _, reference = service.beneficiary(entry, "beneficiaries", client_id)
        users.append((user_id, reference, service.state.items_of(user_id)))
    page = license_page(users, service.state.balances, body, v9=v9)
    return service.json(request, 200, page)


async def license_query(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/collections/b2bLicensePreview``."""
    return await _license_query(service, request, v9=False)


async def publisher_query(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v9.0/collections/publisherQuery``."""
    return await _license_query(service, request, v9=True)


def _purchase_user(service: StoreService, request: web.Request, body: dict[str, Any]) -> str:
    client_id = service.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
    key = body.get("b2bkey")
    if not isinstance(key, str) or not key:
        raise ApiError.invalid("b2bKey is required.", "b2bKey")
    user_id, _ = service.user_for_key(key, "purchase", client_id)
    return user_id


async def query_subscriptions(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/b2b/recurrences/query``: ``{items, continuationToken?}``."""
    body = await service.read_body(request)
    user_id = _purchase_user(service, request, body)
    return service.json(request, 200, service.state.subscriptions.query(user_id, body))


async def change_subscription(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/b2b/recurrences/{id}/change``: ``{items: [item]}``, or the bare item with
    ``wire_variants`` (both are documented)."""
    body = await service.read_body(request)
    user_id = _purchase_user(service, request, body)
    subscription = service.state.subscriptions.change(
        user_id, request.match_info["recurrenceId"], body
    )
    document = subscription.to_wire()
    return service.json(request, 200, document if service.wire_variants else {"items": [document]})


async def query_orders(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/b2b/orders/query`` (clawback v1): ``{items: [order...]}``."""
    body = await service.read_body(request)
    user_id = _purchase_user(service, request, body)
    return service.json(request, 200, service.state.balances.orders(user_id, body))
