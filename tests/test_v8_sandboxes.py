"""Grant v7 with a sandbox (``sbx``), v6 without one; ``sandbox_id`` reaches the wire as ``sbx``
on every operation that takes it; the exact URL and body of each new operation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from store_async import (
    MockRequest,
    MockResponse,
    MockTransport,
    StaticTokenCredential,
    StoreClient,
    codec,
)
from store_async.emulator import StoreEmulator
from store_async.errors import ValidationError
from store_async.models import ConsumeRequest, GrantRequest, ProductSkuId, UserIdentity
from store_async.models.licenses import EntitlementQuery, LicenseQuery
from store_async.models.subscriptions import SubscriptionChange
from tests.test_codec_examples import GRANT_RESPONSE

USER = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
ORDER = "3eea1529-611e-4aee-915c-345494e4ee76"
SKU = ProductSkuId(product_id="9NBLGGH4R315", sku_id="0010")


def grant(**changes: Any) -> GrantRequest:
    return GrantRequest(
        availability_id="9RT7C09D5J3W",
        b2b_key="eyJ-purchase-key",
        language="en-us",
        market="us",
        product_id="9NBLGGH5WVP6",
        sku_id="0010",
        order_id=ORDER,
        **changes,
    )


async def test_each_operation_goes_to_its_url_with_sbx() -> None:
    seen: list[MockRequest] = []

    def answer(request: MockRequest) -> MockResponse:
        seen.append(request)
        path = request.url.path
        if path.endswith("/purchases/grant"):
            return MockResponse(200, body=GRANT_RESPONSE)
        if path.endswith("/collections/consume"):
            return MockResponse(200, json={"newQuantity": 1, "trackingId": ORDER})
        if path.endswith("/change"):
            return MockResponse(200, json={"id": "mdr:0:x"})
        return MockResponse(200, json={"items": []})

    transport = MockTransport(answer)
    async with StoreClient(StaticTokenCredential("t"), transport=transport) as store:
        await store.grant_free_product(grant())
        await store.grant_free_product(grant(sandbox_id="XDKS.1"))
        await store.consume(
            ConsumeRequest.for_quantity(USER, "9NCOINS", 2, tracking_id=ORDER, sandbox_id="XDKS.1")
        )
        await store.query_licenses(
            LicenseQuery(beneficiaries=[USER], product_sku_ids=[SKU], sandbox_id="XDKS.1")
        )
        await store.query_entitlements(
            EntitlementQuery(beneficiaries=[USER], product_sku_ids=[SKU], sandbox_id="XDKS.1")
        )
        async for _ in store.list_subscriptions("eyJ-purchase-key", sandbox_id="XDKS.1"):
            pass
        await store.change_subscription(
            "mdr:0:x",
            SubscriptionChange(
                b2b_key="eyJ-purchase-key", change_type="Cancel", sandbox_id="XDKS.1"
            ),
        )
        async for _ in store.list_orders("eyJ-purchase-key", sandbox_id="XDKS.1"):
            pass
    paths = [(request.url.host, request.url.raw_path) for request in seen]
    assert paths == [
        ("purchase.mp.microsoft.com", "/v6.0/purchases/grant"),
        ("purchase.mp.microsoft.com", "/v7.0/purchases/grant"),
        ("collections.mp.microsoft.com", "/v8.0/collections/consume"),
        ("collections.mp.microsoft.com", "/v8.0/collections/b2bLicensePreview"),
        ("collections.mp.microsoft.com", "/v9.0/collections/publisherQuery"),
        ("purchase.mp.microsoft.com", "/v8.0/b2b/recurrences/query"),
        ("purchase.mp.microsoft.com", "/v8.0/b2b/recurrences/mdr:0:x/change"),
        ("purchase.mp.microsoft.com", "/v8.0/b2b/orders/query"),
    ]
    bodies = [request.json() for request in seen]
    assert "sbx" not in bodies[0]
    assert all(body["sbx"] == "XDKS.1" for body in bodies[1:])
    assert bodies[1] == {**bodies[0], "sbx": "XDKS.1"}  # v7: the v6 body plus sbx


async def test_grant_v7_against_the_emulator() -> None:
    async with StoreEmulator() as emu:
        emu.add_free_product("9NBLGGH5WVP6", availability_id="9RT7C09D5J3W")
        key = emu.mint_store_id_key("user-1", "purchase")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            order = await store.grant_free_product(
                GrantRequest(
                    availability_id="9RT7C09D5J3W",
                    b2b_key=key,
                    language="en-us",
                    market="us",
                    product_id="9NBLGGH5WVP6",
                    sku_id="0010",
                    order_id=ORDER,
                    sandbox_id="XDKS.1",
                )
            )
        assert order.order_id == ORDER
        assert emu.ledger.applied(ORDER) == 1


def test_grant_sandbox_is_validated() -> None:
    with pytest.raises(ValidationError, match="sandbox_id must not be empty"):
        grant(sandbox_id="")
    assert "sbx" not in orjson.loads(codec.dumps(grant()))
