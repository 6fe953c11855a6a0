"""The emulator's handlers for the newer Store surface (STORE_API.md sections 9 and 10).

Each handler takes the :class:`~store_async.emulator.service.StoreService` (for its bearer, key
and body checks) and the request; :meth:`StoreService.application` registers them, so they run
through the same fault injection and headers as every other route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import hdrs, web

if TYPE_CHECKING:
    from store_async.emulator.service import StoreService

__all__ = ["consume_v8"]


async def consume_v8(service: StoreService, request: web.Request) -> web.StreamResponse:
    """``POST /v8.0/collections/consume``: 200 with ``{newQuantity, itemId, trackingId,
    productId, orderTransactions?}``."""
    client_id = service.tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
    body = await service.read_body(request)
    user_id, _, _ = service.beneficiary(body.get("beneficiary"), "beneficiary", client_id)
    return service.json(request, 200, service.state.balances.consume(user_id, body))
