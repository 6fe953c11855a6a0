"""Every documented error path answers with the documented status, code and inner code.

docs/store-api.md sections 3.2 (the three 401s), 4.1 (400 InvalidParameter), 5 (renew 401s), 7
(offline license 404/409), plus the emulator's choices where the service is undocumented
(consume of an item consumed under another key: 409 ItemAlreadyConsumed; unknown item: 404).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from store_async.emulator import StoreEmulator

TRACKING = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER_TRACKING = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ORDER = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"  # granted before each case
NEW_ORDER = "9b2c1a8e-5d4f-4c3b-8a7e-6f5d4c3b2a19"
CONSUME, QUERY = "/v6.0/collections/consume", "/v6.0/collections/query"
GRANT, RENEW = "/v6.0/purchases/grant", "/v6.0/b2b/keys/renew"

Headers = dict[str, str]
Prepare = Callable[[StoreEmulator], tuple[Headers, Any]]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def identity(value: str) -> dict[str, str]:
    return {"identityType": "b2b", "identityValue": value, "localTicketReference": "ref"}


def consume_item(value: str, item_id: str = "item-1", tracking: str = TRACKING) -> dict[str, Any]:
    return {"beneficiary": identity(value), "itemId": item_id, "trackingId": tracking}


def grant_body(b2b_key: str, **changes: Any) -> dict[str, Any]:
    body = {"availabilityId": "AV1", "b2bKey": b2b_key, "language": "en-us", "market": "US",
            "orderId": NEW_ORDER, "productId": "FREE1", "skuId": "0010"}  # fmt: skip
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def forged(key: str) -> str:
    """A minted key whose claims were edited: the signature no longer matches."""
    header, payload, signature = key.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 10**6
    edited = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


def old_key(emu: StoreEmulator, kind: str = "collections") -> str:
    return emu.mint_store_id_key("user-1", kind, issued_at=time.time() - 40 * 86400)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    prepare: Prepare
    status: int
    inner_code: str
    details: tuple[str, ...] = field(default=())
    options: dict[str, Any] = field(default_factory=dict)


def dev(emu: StoreEmulator) -> Headers:
    return bearer(emu.dev_token)


CASES = [
    # -- consume: the documented 401s (docs/store-api.md 3.2) --------------------------------------
    Case("consume without a token", CONSUME, lambda e: ({}, consume_item("u")),
         401, "PartnerAadTicketRequired"),
    Case("consume with a Basic header", CONSUME,
         lambda e: ({"Authorization": "Basic abc"}, consume_item("u")),
         401, "PartnerAadTicketRequired"),
    Case("consume with an unknown token", CONSUME,
         lambda e: (bearer("not-a-token"), consume_item("u")), 401, "AuthenticationTokenInvalid"),
    Case("consume with an expired token", CONSUME,
         lambda e: (bearer(e.mint_access_token(lifetime=-1)), consume_item("u")),
         401, "AuthenticationTokenInvalid"),
    Case("consume with a token without appid", CONSUME,
         lambda e: (bearer(e.mint_access_token(appid=False)), consume_item("u")),
         401, "AuthenticationTokenInvalid"),
    Case("consume with a token for another audience", CONSUME,
         lambda e: (bearer(e.mint_access_token(
             audience="https://onestore.microsoft.com/b2b/keys/create/collections")),
             consume_item("u")), 401, "AuthenticationTokenInvalid"),
    Case("consume with a key of another client", CONSUME,
         lambda e: (dev(e), consume_item(e.mint_store_id_key("u", client_id="other-app"))),
         401, "InconsistentClientId"),
    Case("consume with a token of another client", CONSUME,
         lambda e: (bearer(e.mint_access_token(client_id="other-app")),
                    consume_item(e.mint_store_id_key("u"))), 401, "InconsistentClientId"),
    Case("consume with a forged key", CONSUME,
         lambda e: (dev(e), consume_item(forged(e.mint_store_id_key("u")))),
         401, "AuthenticationTokenInvalid"),
    Case("consume with an expired key", CONSUME, lambda e: (dev(e), consume_item(old_key(e))),
         401, "AuthenticationTokenInvalid"),
    Case("consume with a purchase key", CONSUME,
         lambda e: (dev(e), consume_item(e.mint_store_id_key("u", "purchase"))),
         401, "AuthenticationTokenInvalid"),
    Case("consume with an opaque user under strict keys", CONSUME,
         lambda e: (dev(e), consume_item("plain-user")), 401, "AuthenticationTokenInvalid",
         options={"strict_keys": True}),
    # -- consume: the emulator's choices for undocumented answers ----------------------------------
    Case("consume of an unknown item", CONSUME, lambda e: (dev(e), consume_item("u", "nope")),
         404, "ItemNotFound"),
    Case("consume of an item consumed under another tracking id", CONSUME,
         lambda e: (dev(e), consume_item("u", "item-1", OTHER_TRACKING)),
         409, "ItemAlreadyConsumed"),
    Case("consume of a durable", CONSUME, lambda e: (dev(e), consume_item("u", "durable-1")),
         400, "InvalidParameter", ("itemId",)),
    Case("consume with both forms", CONSUME,
         lambda e: (dev(e), {**consume_item("u"), "productId": "P", "transactionId": TRACKING}),
         400, "InvalidParameter", ("itemId", "trackingId", "productId", "transactionId")),
    Case("consume with a tracking id that is no GUID", CONSUME,
         lambda e: (dev(e), consume_item("u", tracking="abc")), 400, "InvalidParameter",
         ("trackingId",)),
    Case("consume without a beneficiary", CONSUME,
         lambda e: (dev(e), {"itemId": "i", "trackingId": TRACKING}), 400, "InvalidParameter",
         ("beneficiary",)),
    Case("consume with a bad beneficiary", CONSUME,
         lambda e: (dev(e), {"beneficiary": {"identityType": "pub", "identityValue": ""},
                             "itemId": "i", "trackingId": TRACKING}),
         400, "InvalidParameter", ("beneficiary.identityType", "beneficiary.identityValue",
                                   "beneficiary.localTicketReference")),
    Case("consume with a body that is not JSON", CONSUME, lambda e: (dev(e), b"{nope"),
         400, "InvalidParameter", ("body",)),
    Case("consume with a JSON array", CONSUME, lambda e: (dev(e), []),
         400, "InvalidParameter", ("body",)),
    # -- query -------------------------------------------------------------------------------------
    Case("query without a token", QUERY,
         lambda e: ({}, {"beneficiaries": [identity("u")], "productTypes": ["Durable"]}),
         401, "PartnerAadTicketRequired"),
    Case("query with a key of another client", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity(e.mint_store_id_key("u", client_id="x"))],
                             "productTypes": ["Durable"]}), 401, "InconsistentClientId"),
    Case("query without product types", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity("u")]}), 400, "InvalidParameter",
         ("productTypes",)),
    Case("query with an unknown product type", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity("u")], "productTypes": ["Consumable"]}),
         400, "InvalidParameter", ("productTypes",)),
    Case("query with maxPageSize 101", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity("u")], "productTypes": ["Durable"],
                             "maxPageSize": 101}), 400, "InvalidParameter", ("maxPageSize",)),
    Case("query with a made-up continuation token", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity("u")], "productTypes": ["Durable"],
                             "continuationToken": "bm9wZQ"}), 400, "InvalidParameter",
         ("continuationToken",)),
    Case("query without beneficiaries", QUERY,
         lambda e: (dev(e), {"beneficiaries": [], "productTypes": ["Durable"]}),
         400, "InvalidParameter", ("beneficiaries",)),
    Case("query with a bad modifiedAfter", QUERY,
         lambda e: (dev(e), {"beneficiaries": [identity("u")], "productTypes": ["Durable"],
                             "modifiedAfter": "yesterday"}), 400, "InvalidParameter",
         ("modifiedAfter",)),
    # -- grant (docs/store-api.md 4.1) -------------------------------------------------------------
    Case("grant without a token", GRANT, lambda e: ({}, grant_body("u")), 401,
         "PartnerAadTicketRequired"),
    Case("grant with a collections key", GRANT,
         lambda e: (dev(e), grant_body(e.mint_store_id_key("u"))),
         401, "AuthenticationTokenInvalid"),
    Case("grant with a purchase key of another client", GRANT,
         lambda e: (dev(e), grant_body(e.mint_store_id_key("u", "purchase", client_id="x"))),
         401, "InconsistentClientId"),
    Case("grant of a product that is not free", GRANT,
         lambda e: (dev(e), grant_body("u", productId="PAID1", availabilityId="AV2")),
         400, "InvalidParameter", ("availabilityId",)),
    Case("grant of an unknown product", GRANT,
         lambda e: (dev(e), grant_body("u", productId="NOPE")), 400, "InvalidParameter",
         ("productId", "skuId")),
    Case("grant with a wrong availability", GRANT,
         lambda e: (dev(e), grant_body("u", availabilityId="AV9")), 400, "InvalidParameter",
         ("availabilityId",)),
    Case("grant without required fields", GRANT,
         lambda e: (dev(e), grant_body("u", language=None, market=None, orderId=None)),
         400, "InvalidParameter", ("language", "market", "orderId")),
    Case("grant with quantity 2", GRANT, lambda e: (dev(e), grant_body("u", quantity=2)),
         400, "InvalidParameter", ("quantity",)),
    Case("grant without b2bKey", GRANT, lambda e: (dev(e), grant_body("", b2bKey=None)),
         400, "InvalidParameter", ("b2bKey",)),
    Case("grant reusing an order id for another product", GRANT,
         lambda e: (dev(e), grant_body("u", productId="FREE2", availabilityId="AV3",
                                       orderId=ORDER)),
         409, "OrderIdConflict"),
    # -- renew (docs/store-api.md 5) ---------------------------------------------------------------
    Case("renew with an unknown ticket", RENEW,
         lambda e: ({}, {"serviceTicket": "nope", "key": e.mint_store_id_key("u")}),
         401, "AuthenticationTokenInvalid"),
    Case("renew an expired key", RENEW,
         lambda e: ({}, {"serviceTicket": e.dev_token, "key": old_key(e)}),
         401, "AuthenticationTokenInvalid"),
    Case("renew a revoked key", RENEW,
         lambda e: ({}, {"serviceTicket": e.dev_token, "key": revoked_key(e)}),
         401, "AuthenticationTokenInvalid"),
    Case("renew a forged key", RENEW,
         lambda e: ({}, {"serviceTicket": e.dev_token, "key": forged(e.mint_store_id_key("u"))}),
         401, "AuthenticationTokenInvalid"),
    Case("renew something that is not a key", RENEW,
         lambda e: ({}, {"serviceTicket": e.dev_token, "key": "plain"}),
         401, "AuthenticationTokenInvalid"),
    Case("renew a key of another client", RENEW,
         lambda e: ({}, {"serviceTicket": e.dev_token,
                         "key": e.mint_store_id_key("u", client_id="x")}),
         401, "InconsistentClientId"),
    Case("renew without a ticket", RENEW, lambda e: ({}, {"key": e.mint_store_id_key("u")}),
         400, "InvalidParameter", ("serviceTicket",)),
    Case("renew without a key", RENEW, lambda e: ({}, {"serviceTicket": e.dev_token}),
         400, "InvalidParameter", ("key",)),
    # -- offline license (docs/store-api.md 7) -----------------------------------------------------
    Case("offline license of an unknown product", "/V1/Products/NOPE/0016/OfflineLicense/c1",
         lambda e: (dev(e), None), 404, "ProductNotFound"),
    Case("offline license of a product not owned", "/V1/Products/NOTOWNED/0016/OfflineLicense/c1",
         lambda e: (dev(e), None), 409, "NotOwned"),
    Case("offline license of an online-only product",
         "/V1/Products/ONLINE/0016/OfflineLicense/c1", lambda e: (dev(e), None), 409, "NotOffline"),
    Case("offline license without a token", "/V1/Products/OFF/0016/OfflineLicense/c1",
         lambda e: ({}, None), 401, "PartnerAadTicketRequired"),
]  # fmt: skip

TOP_LEVEL_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 409: "Conflict"}
SOURCES = {CONSUME: "CollectionsFD", QUERY: "CollectionsFD", RENEW: "CollectionsFD",
           GRANT: "PurchaseFD"}  # fmt: skip


def revoked_key(emu: StoreEmulator) -> str:
    key = emu.mint_store_id_key("u")
    emu.revoke_store_id_key(key)
    return key


def seed(emu: StoreEmulator) -> None:
    """The state the cases assume."""
    emu.add_consumable("u", "P", item_id="item-1")
    emu.add_item("u", "D", item_id="durable-1")
    emu.add_free_product("FREE1", availability_id="AV1")
    emu.add_free_product("FREE2", availability_id="AV3")
    emu.add_product("PAID1", availability_id="AV2", price=1.99)
    emu.add_business_product("NOTOWNED", owned=False)
    emu.add_business_product("ONLINE", offline=False)
    emu.add_business_product("OFF")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def send(
    session: aiohttp.ClientSession, emu: StoreEmulator, path: str, headers: Headers, body: Any
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else (b"" if body is None else orjson.dumps(body))
    headers = {**headers, "Content-Type": "application/json"}
    async with session.post(f"{emu.url}{path}", data=data, headers=headers) as answer:
        return answer.status, dict(answer.headers), await answer.read()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_documented_error_answers(case: Case, session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(**case.options) as emu:
        seed(emu)
        if not case.options.get("strict_keys"):
            # The replay-related cases need item-1 consumed and the order ORDER granted.
            headers = bearer(emu.dev_token)
            assert (await send(session, emu, CONSUME, headers, consume_item("u")))[0] == 204
            granted = await send(session, emu, GRANT, headers, grant_body("u", orderId=ORDER))
            assert granted[0] == 200
        applied_before = emu.ledger.total
        request_headers, body = case.prepare(emu)
        status, answer_headers, payload = await send(session, emu, case.path, request_headers, body)
    error = orjson.loads(payload)
    assert status == case.status
    assert error["code"] == TOP_LEVEL_CODES[case.status]
    assert error["innererror"]["code"] == case.inner_code
    assert [entry["target"] for entry in error["details"]] == list(case.details)
    assert set(error) == {"code", "data", "details", "innererror", "message", "source"}
    assert set(error["innererror"]) == {"code", "data", "details", "message"}
    assert error["source"] == SOURCES.get(case.path, "BusinessStoreFD")
    assert error["message"]
    assert error["data"] == []
    for header in ("MS-CorrelationId", "MS-RequestId", "MS-CV"):
        assert answer_headers[header]
    assert emu.ledger.total == applied_before  # a refused request applies nothing


async def test_error_messages_never_echo_tokens_or_keys(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator() as emu:
        key = forged(emu.mint_store_id_key("u"))
        token = emu.mint_access_token(lifetime=-1)
        _, _, bad_key = await send(session, emu, CONSUME, bearer(emu.dev_token), consume_item(key))
        _, _, bad_token = await send(session, emu, CONSUME, bearer(token), consume_item("u"))
    for payload, secret in ((bad_key, key), (bad_token, token)):
        assert secret.encode() not in payload
        assert secret.split(".")[2].encode() not in payload
