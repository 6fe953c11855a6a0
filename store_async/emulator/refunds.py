"""Refund events (clawback v2) in the emulator: the SAS token route, and events put on a real queue.

Given the URL of a real Azure Storage queue (Azurite in tests) with a SAS that may add, read and
process messages, the emulator:

- answers ``GET /v8.0/b2b/clawback/sastoken`` with ``{"expiresOn", "uri"}`` (``expiresOn`` at
  minute precision, as the service writes it: the SAS's own ``se=`` expiry when it has one);
  without a queue it answers 400, as the service does for a publisher not onboarded;
- issues refund events into the queue, from Python (:meth:`RefundIssuer.issue`) or from another
  process (``POST /_emulator/refunds``): given events, or generated ones with duplicates,
  bundles, a base64url share and poison messages, all seeded.

Plain JSON only (never this library's models or codec): the emulator is the other side of the
wire. Putting messages uses azure-storage-queue (``store-async[refunds]``), imported when needed.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import hdrs, web

from store_async.emulator.tokens import AccessTokens
from store_async.emulator.wire import ApiError, error_body

__all__ = ["SAS_TOKEN_PATH", "RefundIssuer", "encode_message", "refund_event"]

SAS_TOKEN_PATH: Final = "/v8.0/b2b/clawback/sastoken"
CONTROL_PATH: Final = "/_emulator/refunds"
STATES: Final = ("Revoked", "Returned", "Refunded", "ChargebackReversal")
_PRODUCT_TYPES: Final = ("Consumable", "UnmanagedConsumable", "Durable", "Pass", "Game")
_POISON: Final = (
    "this is not base64 at all!",  # not base64
    base64.b64encode(b"<refund>not JSON</refund>").decode(),  # base64, not JSON
    base64.b64encode(b'{"source": "/Purchase/Refund", "data": {}}').decode(),  # JSON, no id
)
_ENCODINGS: Final = ("base64", "base64url", "base64url-unpadded", "base64-unpadded")
_JSON: Final = "application/json"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def refund_event(
    *,
    order_id: str,
    line_item_id: str,
    product_id: str,
    state: str = "Revoked",
    event_id: str | None = None,
    product_type: str = "Consumable",
    sku_id: str = "0010",
    sandbox_id: str = "RETAIL",
    recurrence: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One event as the Store writes it (STORE_API.md section 10), as a plain dict."""
    moment = now or datetime.now(UTC)
    data: dict[str, Any] = {
        "lineItemId": line_item_id,
        "orderId": order_id,
        "productId": product_id,
        "productType": product_type,
        "purchasedDate": _when(moment - timedelta(days=3)),
        "eventDate": _when(moment),
        "sandboxId": sandbox_id,
        "eventState": state,
        "skuId": sku_id,
    }
    if recurrence is not None:
        data["recurrenceData"] = dict(recurrence)
    chargeback = state == "ChargebackReversal"
    return {
        "id": event_id or str(uuid.uuid4()),
        "source": "/Purchase/Chargeback" if chargeback else "/Purchase/Refund",
        "type": "ClawbackEventContractV2",
        "time": _when(moment),
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "subject": f"/orders/{order_id}",
        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        "data": data,
    }


def encode_message(event: Mapping[str, Any], encoding: str = "base64") -> str:
    """The queue message text for ``event``: base64 (the Store's) or base64url, with or without
    padding (what Microsoft's own library reads)."""
    raw = orjson.dumps(dict(event))
    if encoding.startswith("base64url"):
        text = base64.urlsafe_b64encode(raw).decode()
    elif encoding.startswith("base64"):
        text = base64.b64encode(raw).decode()
    else:
        raise ValueError(f"encoding must be one of {_ENCODINGS}, got {encoding!r}")
    return text.rstrip("=") if encoding.endswith("-unpadded") else text


class RefundIssuer:
    """The emulator's refund queue: serves its SAS URI and puts events on it.

    :param queue_url: a SAS URI of a real queue that allows add, read and process (``raup``);
        ``None``: no queue (the SAS route answers 400, "not onboarded").
    :param sas_lifetime: seconds until ``expiresOn`` when the URI carries no ``se=`` expiry.
    """

    def __init__(self, queue_url: str | None, *, sas_lifetime: float = 4 * 3600.0) -> None:
        if queue_url is not None and not queue_url.lower().startswith(("http://", "https://")):
            raise ValueError("refund_queue must be an http(s) queue URL with a SAS")
        self.queue_url = queue_url
        self.sas_lifetime = sas_lifetime
        self.sas_requests = 0
        self.issued_messages = 0

    # -- the Store's side ----------------------------------------------------------------------

    def sas_document(self) -> dict[str, str]:
        """``{"expiresOn": "2022-12-09T02:13Z", "uri": ...}`` for the configured queue."""
        if self.queue_url is None:
            raise ApiError(
                400,
                "ClawbackNotOnboarded",
                "No clawback event queue is provisioned for this publisher.",
            )
        expiry = parse_qs(urlsplit(self.queue_url).query).get("se")
        if expiry:
            moment = datetime.fromisoformat(expiry[0].replace("Z", "+00:00"))
        else:
            moment = datetime.now(UTC) + timedelta(seconds=self.sas_lifetime)
        return {
            "expiresOn": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "uri": self.queue_url,
        }

    # -- issuing -------------------------------------------------------------------------------

    async def put(self, texts: Sequence[str]) -> int:
        """Put message texts on the queue as they are; returns how many."""
        if self.queue_url is None:
            raise RuntimeError("the emulator has no refund queue: StoreEmulator(refund_queue=URL)")
        from azure.storage.queue.aio import QueueClient

        async with QueueClient.from_queue_url(self.queue_url) as queue:
            for text in texts:
                await queue.send_message(text)
        self.issued_messages += len(texts)
        return len(texts)

    async def issue(
        self,
        events: Sequence[Mapping[str, Any]] = (),
        *,
        count: int = 0,
        duplicates: int = 0,
        bundles: int = 0,
        base64url_share: float = 0.0,
        poison: int = 0,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Put refund events on the queue and say what was put.

        :param events: events to send as given (plain dicts, base64-encoded).
        :param count: events to generate on top (``bundles`` of them are bundles of three:
            one bundle event and two included consumables sharing order and line item).
        :param duplicates: extra copies of randomly chosen events (same id, same JSON).
        :param base64url_share: share of messages written as base64url (half of them unpadded).
        :param poison: unreadable messages (not base64, not JSON, no id), in turn.
        :param seed: makes the generated events and the message order reproducible.
        :returns: ``{"messages", "eventIds", "duplicates", "poison", "bundleKeys"}``.
        """
        if bundles * 3 > count:
            raise ValueError("bundles take three generated events each: raise count")
        chooser = random.Random(seed)
        made = [dict(event) for event in events]
        made += _generate(chooser, count, bundles)
        copies = [chooser.choice(made) for _ in range(duplicates)] if made else []
        texts = []
        for event in made + copies:
            encoding = "base64"
            if chooser.random() < base64url_share:
                encoding = chooser.choice(("base64url", "base64url-unpadded"))
            texts.append(encode_message(event, encoding))
        texts += [_POISON[number % len(_POISON)] for number in range(poison)]
        chooser.shuffle(texts)
        await self.put(texts)
        bundle_keys = sorted(
            {
                f"{e['data']['orderId']}:{e['data']['lineItemId']}:{e['data']['productId']}"
                for e in made
                if isinstance(e.get("data"), dict)
            }
        )
        return {
            "messages": len(texts),
            "eventIds": [event.get("id") for event in made],
            "duplicates": len(copies),
            "poison": poison,
            "bundleKeys": bundle_keys,
        }

    # -- HTTP ----------------------------------------------------------------------------------

    def register(self, app: web.Application, tokens: AccessTokens) -> None:
        """Add the SAS token route and the control route to the emulator's application."""

        async def sas_token(request: web.Request) -> web.StreamResponse:
            self.sas_requests += 1
            try:
                tokens.check_header(request.headers.get(hdrs.AUTHORIZATION))
                document = self.sas_document()
            except ApiError as error:
                body = error_body(
                    error.status, error.inner_code, error.message, source="PurchaseFD"
                )
                return web.Response(status=error.status, body=body, content_type=_JSON)
            return web.Response(body=orjson.dumps(document), content_type=_JSON)

        async def control(request: web.Request) -> web.StreamResponse:
            try:
                try:
                    body = orjson.loads(await request.read())
                except orjson.JSONDecodeError as error:
                    raise ValueError(f"the body is not JSON: {error}") from None
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                result = await self.issue(
                    body.get("events") or (),
                    count=int(body.get("count", 0)),
                    duplicates=int(body.get("duplicates", 0)),
                    bundles=int(body.get("bundles", 0)),
                    base64url_share=float(body.get("base64urlShare", 0.0)),
                    poison=int(body.get("poison", 0)),
                    seed=body.get("seed"),
                )
            except (ValueError, TypeError, RuntimeError) as error:
                return web.json_response({"error": str(error)}, status=400)
            return web.Response(body=orjson.dumps(result), content_type=_JSON)

        app.router.add_get(SAS_TOKEN_PATH, sas_token)
        app.router.add_post(CONTROL_PATH, control)


def _generate(chooser: random.Random, count: int, bundles: int) -> list[dict[str, Any]]:
    """``count`` events: ``bundles`` bundles of three, the rest single order lines; the four
    documented states in turn, with the tables' ``Refund``/``Return`` spellings now and then."""
    made: list[dict[str, Any]] = []

    def guid() -> str:
        return str(uuid.UUID(int=chooser.getrandbits(128), version=4))

    for _ in range(bundles):
        order, line = guid(), guid()
        state = chooser.choice(STATES)
        for position, product_type in enumerate(("Durable", "Consumable", "Consumable")):
            made.append(
                refund_event(
                    order_id=order,
                    line_item_id=line,
                    product_id=f"9NBUNDLE{position:04d}",
                    state=state,
                    product_type=product_type,
                    event_id=guid(),
                )
            )
    for number in range(count - 3 * bundles):
        state = STATES[number % len(STATES)]
        if number % 17 == 5:
            state = {"Refunded": "Refund", "Returned": "Return"}.get(state, state)
        product_type = chooser.choice(_PRODUCT_TYPES)
        recurrence = None
        if product_type == "Pass":
            recurrence = {
                "recurrenceId": guid(),
                "durationIntervalStart": _when(datetime.now(UTC) - timedelta(days=10)),
                "durationInDays": 30,
                "consumedDurationInDays": 10,
                "refundType": chooser.choice(("Full", "Partial")),
            }
        made.append(
            refund_event(
                order_id=guid(),
                line_item_id=guid(),
                product_id=f"9N{chooser.getrandbits(40):010X}",
                state=state,
                product_type=product_type,
                event_id=guid(),
                recurrence=recurrence,
            )
        )
    return made
