"""The emulator's success paths on the wire: consume, query, grant, renew, offline license."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from store_async.emulator import StoreEmulator

T1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
T2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ORDER = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def emu() -> AsyncIterator[StoreEmulator]:
    async with StoreEmulator() as emulator:
        yield emulator


def identity(value: str, reference: str = "ref") -> dict[str, str]:
    return {"identityType": "b2b", "identityValue": value, "localTicketReference": reference}


async def post(
    session: aiohttp.ClientSession,
    emu: StoreEmulator,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Mapping[str, str], Any]:
    sent = {"Authorization": f"Bearer {emu.dev_token}", "Content-Type": "application/json"}
    async with session.post(
        f"{emu.url}{path}", data=orjson.dumps(body), headers={**sent, **(headers or {})}
    ) as answer:
        raw = await answer.read()
        return answer.status, answer.headers, orjson.loads(raw) if raw else None


async def consume(session: aiohttp.ClientSession, emu: StoreEmulator, **fields: Any) -> int:
    body = {"beneficiary": identity(fields.pop("user", "u")), **fields}
    return (await post(session, emu, "/v6.0/collections/consume", body))[0]


# -- consume ---------------------------------------------------------------------------------


async def test_consume_answers_204_with_content_length_zero_and_correlation_headers(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    item = emu.add_consumable("u", "P")
    status, headers, body = await post(
        session,
        emu,
        "/v6.0/collections/consume",
        {"beneficiary": identity("u"), "itemId": item.item_id, "trackingId": T1},
        headers={"MS-CorrelationId": "corr-1", "MS-CV": "base.1"},
    )
    assert (status, body) == (204, None)
    assert headers["Content-Length"] == "0"
    assert headers["MS-CorrelationId"] == "corr-1"  # echoed
    assert headers["MS-CV"] == "base.1.0"
    assert len(headers["MS-RequestId"]) == 36
    assert (item.consumed, item.consumed_by) == (True, T1)
    assert emu.ledger.applied(T1) == 1


async def test_content_length_on_204_can_be_left_out_as_aiohttp_does(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(content_length_on_204=False) as emu:
        item = emu.add_consumable("u", "P")
        status, headers, _ = await post(
            session,
            emu,
            "/v6.0/collections/consume",
            {"beneficiary": identity("u"), "itemId": item.item_id, "trackingId": T1},
        )
    assert status == 204
    assert "Content-Length" not in headers


async def test_consume_replay_answers_the_same_and_applies_once(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    item = emu.add_consumable("u", "P")
    # The same tracking id in another spelling (upper case, hyphenated item id) is the same key.
    hyphenated = str(uuid.UUID(item.item_id))
    assert await consume(session, emu, itemId=item.item_id, trackingId=T1) == 204
    assert await consume(session, emu, itemId=hyphenated, trackingId=T1.upper()) == 204
    assert await consume(session, emu, itemId=item.item_id, trackingId=T2) == 409
    assert emu.ledger.applied(T1) == 1
    assert emu.ledger.applied(T2) == 0
    assert emu.ledger.duplicates() == {}


async def test_consume_by_transaction_id(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    item = emu.add_consumable("u", "P")
    tx = item.transaction_id
    assert await consume(session, emu, productId="P", transactionId=tx) == 204
    assert await consume(session, emu, productId="P", transactionId=tx.upper()) == 204
    assert await consume(session, emu, itemId=item.item_id, trackingId=T1) == 409
    assert await consume(session, emu, productId="OTHER", transactionId=tx) == 404
    assert emu.ledger.applied(tx) == 1
    assert [entry.subject for entry in emu.ledger] == [item.item_id]


async def test_items_belong_to_their_user(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    item = emu.add_consumable("alice", "P")
    assert await consume(session, emu, user="bob", itemId=item.item_id, trackingId=T1) == 404
    assert not item.consumed


async def test_auto_create_makes_consumables_on_first_sight(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(auto_create=True) as emu:
        assert await consume(session, emu, itemId="any-item", trackingId=T1) == 204
        assert await consume(session, emu, itemId="any-item", trackingId=T1) == 204
        assert await consume(session, emu, productId="P9", transactionId=T2) == 204
        assert [item.consumed_by for item in emu.items_of("u")] == [T1, T2]
        assert emu.ledger.total == 2


async def test_consume_with_a_minted_key_and_the_docs_lowercase_identitytype(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    key = emu.mint_store_id_key("user-7", publisher_user_id="pub-7")
    item = emu.add_consumable("user-7", "P")
    body = {
        "beneficiary": {"identitytype": "b2b", "identityValue": key, "localTicketReference": "x"},
        "itemId": item.item_id,
        "trackingId": T1,
    }
    assert (await post(session, emu, "/v6.0/collections/consume", body))[0] == 204
    assert emu.ledger.applied(T1) == 1


async def test_strict_keys_accept_minted_keys(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(strict_keys=True) as emu:
        item = emu.add_consumable("user-7", "P")
        key = emu.mint_store_id_key("user-7")
        assert await consume(session, emu, user=key, itemId=item.item_id, trackingId=T1) == 204


# -- query -----------------------------------------------------------------------------------


async def query(
    session: aiohttp.ClientSession, emu: StoreEmulator, **fields: Any
) -> tuple[int, Any]:
    body = {"beneficiaries": [identity("u", "ticket-9")], "productTypes": ["Durable"], **fields}
    status, _, document = await post(session, emu, "/v6.0/collections/query", body)
    return status, document


async def test_query_pages_with_continuation_tokens(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    ids = [emu.add_item("u", f"P{n}").item_id for n in range(250)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        extra = {"continuationToken": token} if token else {}
        status, page = await query(session, emu, **extra)
        assert status == 200
        assert len(page["items"]) <= 100
        seen += [item["itemId"] for item in page["items"]]
        pages += 1
        token = page.get("continuationToken")
        if token is None:
            break
    assert (pages, seen) == (3, ids)
    status, page = await query(session, emu, maxPageSize=7)
    assert (len(page["items"]), "continuationToken" in page) == (7, True)


async def test_query_items_have_the_documented_fields(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    item = emu.add_item("u", "9NBLGGH42CFD", sku_id="0011")
    _, page = await query(session, emu)
    (wire,) = page["items"]
    assert set(wire) >= {
        "acquiredDate",
        "endDate",
        "itemId",
        "localTicketReference",
        "modifiedDate",
        "ownershipType",
        "productId",
        "productType",
        "purchaser",
        "quantity",
        "skuId",
        "skuType",
        "startDate",
        "status",
        "tags",
        "transactionId",
    }
    assert wire["itemId"] == item.item_id
    assert len(item.item_id) == 32
    assert (wire["productId"], wire["skuId"], wire["productType"]) == (
        "9NBLGGH42CFD",
        "0011",
        "Durable",
    )
    assert wire["localTicketReference"] == "ticket-9"
    assert wire["endDate"] == "9999-12-31T23:59:59.9999999+00:00"
    assert len(wire["acquiredDate"].split(".")[1]) == len("1234567+00:00")
    assert datetime.fromisoformat(wire["acquiredDate"]) == item.acquired_date
    assert wire["purchaser"] == {"identityType": "pub", "identityValue": "u"}
    assert (wire["ownershipType"], wire["quantity"], wire["tags"]) == ("OwnedByBeneficiary", 1, [])


async def test_query_filters(session: aiohttp.ClientSession, emu: StoreEmulator) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    durable = emu.add_item("u", "D1", acquired=past)
    expired = emu.add_item("u", "D2", acquired=past, end_date=past + timedelta(days=1))
    addon = emu.add_item("u", "D3", parent_product_id="APP", sku_id="0020")
    game = emu.add_item("u", "G1", product_type="Game")
    consumable = emu.add_consumable("u", "C1")
    used = emu.add_consumable("u", "C2")
    assert await consume(session, emu, itemId=used.item_id, trackingId=T1) == 204

    async def ids(**fields: Any) -> list[str]:
        status, page = await query(session, emu, **fields)
        assert status == 200
        return [item["itemId"] for item in page["items"]]

    assert await ids() == [durable.item_id, expired.item_id, addon.item_id]
    assert await ids(validityType="Valid") == [durable.item_id, addon.item_id]
    assert await ids(parentProductId="APP") == [addon.item_id]
    assert await ids(productSkuIds=[{"productId": "D3", "skuId": "0020"}]) == [addon.item_id]
    assert await ids(productTypes=["game", "UnmanagedConsumable"]) == [
        game.item_id,
        consumable.item_id,
    ]  # consumed items leave the collection
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert await ids(modifiedAfter=since) == [addon.item_id]
    ms_ajax = f"/Date({int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000)})/"
    assert await ids(modifiedAfter=ms_ajax) == [addon.item_id]


async def test_query_merges_beneficiaries_with_their_ticket_references(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    emu.add_item("a", "P1")
    emu.add_item("b", "P2")
    body = {
        "beneficiaries": [identity("a", "ra"), identity("b", "rb")],
        "productTypes": ["Durable"],
    }
    _, _, page = await post(session, emu, "/v6.0/collections/query", body)
    refs = [(item["productId"], item["localTicketReference"]) for item in page["items"]]
    assert refs == [("P1", "ra"), ("P2", "rb")]


# -- grant -----------------------------------------------------------------------------------


def grant_body(b2b_key: str, order_id: str = ORDER, **extra: Any) -> dict[str, Any]:
    return {
        "availabilityId": "AV1",
        "b2bKey": b2b_key,
        "language": "en-us",
        "market": "US",
        "orderId": order_id,
        "productId": "FREE1",
        "skuId": "0010",
        **extra,
    }


async def test_grant_a_free_product_and_replay_the_order(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    emu.add_free_product("FREE1", availability_id="AV1", title="Gem pack")
    key = emu.mint_store_id_key("user-1", "purchase", publisher_user_id="pub-1")
    status, _, order = await post(
        session, emu, "/v6.0/purchases/grant", grant_body(key, devOfferId="offer-1")
    )
    assert status == 200
    assert order["orderId"] == ORDER
    assert order["orderState"] == "Purchased"
    assert order["purchaser"] == {"identityType": "pub", "identityValue": "pub-1"}
    assert order["clientContext"] == {"client": emu.client_id}
    assert "createdTime" in order
    (line,) = order["orderLineItems"]
    assert (line["productId"], line["skuId"], line["title"]) == ("FREE1", "0010", "Gem pack")
    assert (line["devOfferId"], line["quantity"], line["totalAmount"]) == ("offer-1", 1, 0.0)
    replay = await post(session, emu, "/v6.0/purchases/grant", grant_body(key, ORDER.upper()))
    assert replay[0] == 200
    assert replay[2] == order
    assert emu.ledger.applied(ORDER) == 1
    assert emu.ledger.order_ids() == {ORDER}
    assert [item.product_id for item in emu.items_of("user-1")] == ["FREE1"]


async def test_order_ids_are_unique_per_user_not_globally(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    emu.add_free_product("FREE1", availability_id="AV1")
    for user in ("a", "b"):
        assert (await post(session, emu, "/v6.0/purchases/grant", grant_body(user)))[0] == 200
    assert emu.ledger.applied(ORDER) == 2  # two users, two orders with the same id
    assert {entry.user_id for entry in emu.ledger} == {"a", "b"}


async def test_wire_variants_use_the_table_spellings(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(wire_variants=True, auto_create=True) as emu:
        _, _, order = await post(
            session, emu, "/v6.0/purchases/grant", grant_body("u", devOfferId="o")
        )
    (line,) = order["orderLineItems"]
    assert "createdtime" in order
    assert "createdTime" not in order
    assert "Title" in line
    assert "devofferId" in line
    assert len(line["fulfillmentDate"].split(".")[1]) == len("123456+00:00")


# -- renew and keys --------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["key", "Key"])
async def test_renew_a_key_with_the_token_in_the_body(
    session: aiohttp.ClientSession, emu: StoreEmulator, field: str
) -> None:
    old = emu.mint_store_id_key("user-1", "purchase", publisher_user_id="pub-1")
    status, _, document = await post(
        session,
        emu,
        "/v6.0/b2b/keys/renew",
        {"serviceTicket": emu.dev_token, field: old},
        headers={"Authorization": ""},
    )
    assert status == 200
    new = document["key"]
    claims = jwt.decode(new, options={"verify_signature": False})
    prefix = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
    assert claims["aud"] == claims["iss"] == "https://purchase.mp.microsoft.com/v6.0/keys"
    assert claims[prefix + "userId"] == "pub-1"
    assert claims[prefix + "clientId"] == emu.client_id
    assert claims[prefix + "refreshUri"] == f"{emu.url}/v6.0/b2b/keys/renew"
    assert claims["exp"] - claims["iat"] == 30 * 86400
    assert jwt.get_unverified_header(new)["alg"] == "RS256"
    # The renewed key opens the same user's collection.
    emu.add_free_product("FREE1", availability_id="AV1")
    _, _, order = await post(session, emu, "/v6.0/purchases/grant", grant_body(new))
    assert order["purchaser"]["identityValue"] == "pub-1"
    assert emu.ledger.keys("grant") == {ORDER}


async def test_a_key_payload_is_not_the_raw_user_and_opaque_dotted_ids_stay_opaque(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    key = emu.mint_store_id_key("user-1")
    payload = jwt.decode(key, options={"verify_signature": False})[
        "http://schemas.microsoft.com/marketplace/2015/08/claims/key/payload"
    ]
    assert base64.urlsafe_b64decode(payload)  # opaque base64
    item = emu.add_consumable("john.doe.smith", "P")
    assert (
        await consume(session, emu, user="john.doe.smith", itemId=item.item_id, trackingId=T1)
        == 204
    )


# -- offline license -------------------------------------------------------------------------


async def test_offline_license(session: aiohttp.ClientSession, emu: StoreEmulator) -> None:
    product = emu.add_business_product("9WZDNCRFJ3PZ", "0016")
    status, _, document = await post(
        session, emu, "/V1/Products/9WZDNCRFJ3PZ/0016/OfflineLicense/content-1", None
    )
    assert status == 200
    assert document["productKey"] == {"productId": "9WZDNCRFJ3PZ", "skuId": "0016"}
    assert document["licenseInstanceId"] == product.license_instance_id
    assert document["requestorId"] == emu.tenant_id
    assert document["contentId"] == "content-1"
    assert orjson.loads(base64.b64decode(document["licenseBlob"]))["contentId"] == "content-1"


async def test_query_purchaser_is_the_publisher_user_id_of_the_key(
    session: aiohttp.ClientSession, emu: StoreEmulator
) -> None:
    emu.add_item("user-3", "D1")
    key = emu.mint_store_id_key("user-3", publisher_user_id="my-app-user-3")
    body = {"beneficiaries": [identity(key)], "productTypes": ["Durable"]}
    _, _, page = await post(session, emu, "/v6.0/collections/query", body)
    (item,) = page["items"]
    assert item["purchaser"] == {"identityType": "pub", "identityValue": "my-app-user-3"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "port must be within"),
        ({"token_lifetime": 0}, "must be > 0"),
        ({"client_secret": ""}, "client_secret must be a non-empty string"),
    ],
)
def test_invalid_emulator_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StoreEmulator(**options)


def test_properties_need_a_started_emulator() -> None:
    emu = StoreEmulator()
    with pytest.raises(RuntimeError, match="not started"):
        _ = emu.url
    assert "not started" in repr(emu)
    assert emu.dev_token not in repr(emu)
