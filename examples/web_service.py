"""A web service that fulfills orders through store_async: one client per app, keys from order ids.

Run it against the emulator (two terminals)::

    store-async emulator --port 8080 --fault-rate 0.1          # prints its URL and a token
    STORE_ENDPOINT=http://127.0.0.1:8080 STORE_ASYNC_ACCESS_TOKEN=<token> \\
        python examples/web_service.py --port 8000

    curl -X POST localhost:8000/orders/42/fulfill \\
        -d '{"user": "user-1", "storeIdKey": "user-1", "itemId": "gems-1"}'

Without ``STORE_ENDPOINT`` it talks to Microsoft's hosts; without ``STORE_ASYNC_ACCESS_TOKEN`` it
authenticates with azure-identity's ``DefaultAzureCredential`` (``AZURE_TENANT_ID``,
``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``...).

The three rules it shows (docs/guides/web-service.md explains them):

1. **One StoreClient per application**, opened at startup and closed at shutdown
   (``app.cleanup_ctx``), shared by every request: it holds the connection pool, the token
   cache and the retry budget.
2. **The idempotency key comes from the order id** (``ConsumeRequest.for_item(..., key=...)``):
   when the caller hangs up and sends the same order again, or this process crashes and the
   order is retried, the same tracking id goes to the Store, which settles it once. A random
   tracking id per HTTP request turns each retry into a new fulfillment, refused with 409.
3. **Each error has one answer** (:func:`answer_for`): *outcome unknown*, throttled or
   unavailable -> 503 with ``Retry-After`` ("send the same order again"); the user's Store ID
   key -> 401; a wrong request -> 400/404/409 (final).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from aiohttp import web

from store_async import (
    AuthenticationError,
    ConflictError,
    ConsumeRequest,
    Endpoints,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    StaticTokenCredential,
    StoreClient,
    StoreError,
    ThrottledError,
    UserIdentity,
    ValidationError,
)

STORE: Final = web.AppKey("store", StoreClient)
RETRY_AFTER: Final = 1  # seconds a caller waits before sending the same order again

# A 401 about the user's Store ID key (expired, revoked, made for another client id) is the
# caller's to fix: by then the client has already resent once with a fresh access token of ours.
# PartnerAadTicketRequired (no access token at all) is this service's own problem.
_USER_KEY_CODES: Final = frozenset({"AuthenticationTokenInvalid", "InconsistentClientId"})


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def answer_for(error: StoreError) -> web.Response:
    """The HTTP answer for each kind of Store error (never its secrets: messages carry none)."""
    if isinstance(error, OutcomeUnknownError):
        # Maybe applied: the caller sends the same order again; the same key settles it once.
        return _json(
            503,
            {"error": "outcome unknown: send the same order again", "retry": True},
            **{"Retry-After": str(RETRY_AFTER)},
        )
    if isinstance(error, ThrottledError):
        wait = max(RETRY_AFTER, round(error.retry_after or 0))
        return _json(503, {"error": "the Store is throttling", "retry": True}, **{
            "Retry-After": str(wait)
        })  # fmt: skip
    if isinstance(error, AuthenticationError):
        if error.inner_code in _USER_KEY_CODES:
            return _json(401, {"error": "the user's Store ID key was refused: renew it"})
        return _json(500, {"error": "this service's Store credential was refused"})
    if isinstance(error, ValidationError | InvalidRequestError):
        return _json(400, {"error": error.message})
    if isinstance(error, NotFoundError):
        return _json(404, {"error": "no such item for this user"})
    if isinstance(error, ConflictError):
        return _json(409, {"error": "the item was consumed by another order"})
    # ServiceUnavailableError, TransportError (not sent / maybe applied), anything retryable.
    return _json(503, {"error": "the Store is unavailable", "retry": True}, **{
        "Retry-After": str(RETRY_AFTER)
    })  # fmt: skip


async def fulfill(request: web.Request) -> web.Response:
    """``POST /orders/{order_id}/fulfill`` with ``{"user", "storeIdKey", "itemId"}``."""
    order_id = request.match_info["order_id"]
    try:
        body = orjson.loads(await request.read())
        user = UserIdentity(identity_value=body["storeIdKey"], local_ticket_reference=body["user"])
        # One order = one consumable here; an order of several items keys each one:
        # key=f"order-{order_id}/{line}".
        consume = ConsumeRequest.for_item(user, body["itemId"], key=f"order-{order_id}")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _json(400, {"error": 'send {"user", "storeIdKey", "itemId"} as JSON'})
    except ValidationError as error:
        return _json(400, {"error": error.message})
    try:
        result = await request.app[STORE].consume(consume)
    except StoreError as error:
        return answer_for(error)
    return _json(200, {"order": order_id, "trackingId": result.tracking_id})


def create_app(
    *,
    endpoint: str | None = None,
    credential: Any = None,
    client_options: dict[str, Any] | None = None,
) -> web.Application:
    """The application. ``endpoint`` and ``credential`` default to the environment
    (``STORE_ENDPOINT``, ``STORE_ASYNC_ACCESS_TOKEN``, else ``DefaultAzureCredential``);
    ``client_options`` go to :class:`StoreClient` (hooks, retry policy...)."""
    endpoint = endpoint or os.environ.get("STORE_ENDPOINT")
    app = web.Application()

    async def store_client(app: web.Application) -> AsyncIterator[None]:
        # Startup: one client for the whole app. Shutdown: close it (and our credential).
        owned = None
        chosen = credential
        if chosen is None:
            token = os.environ.get("STORE_ASYNC_ACCESS_TOKEN")
            if token:
                chosen = StaticTokenCredential(token)
            else:
                from azure.identity.aio import DefaultAzureCredential

                chosen = owned = DefaultAzureCredential()
        endpoints = Endpoints.single(endpoint) if endpoint else Endpoints.production()
        async with StoreClient(chosen, endpoints=endpoints, **(client_options or {})) as store:
            app[STORE] = store
            yield
        if owned is not None:
            await owned.close()

    app.cleanup_ctx.append(store_client)
    app.router.add_post("/orders/{order_id}/fulfill", fulfill)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
