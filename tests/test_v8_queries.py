"""v8 ``b2bLicensePreview`` and v9 ``publisherQuery``: records, the documented examples and
their quirks (TimeSpan strings, casing drift, a trailing comma, JSON-looking tokens, unknown
enum values), the documented limits, and pagers that resume without loss or repeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
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
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.errors import ResponseFormatError, ServiceUnavailableError, ValidationError
from store_async.models import ProductSkuId, UserIdentity
from store_async.models.licenses import (
    EntitlementItem,
    EntitlementPage,
    EntitlementQuery,
    LicenseItem,
    LicensePage,
    LicenseQuery,
    TrialData,
)

USER = UserIdentity(identity_value="eyJ0eXAi\u2026", local_ticket_reference="ref-1")
SKU = ProductSkuId(product_id="9NBLGGH42CFD", sku_id="0010")

# -- the documented request shapes ----------------------------------------------------------
# Built from docs/store-api.md sections 9 and 10 (every field and quirk it records for these
# pages; the GDK pages' literal example bodies are not in this repository).

LICENSE_REQUEST = b"""{
  "beneficiaries": [{"identityType": "b2b", "identityValue": "eyJ0eXAi\xe2\x80\xa6",
                     "localTicketReference": "ref-1"}],
  "productSkuIds": [{"productId": "9NBLGGH42CFD", "skuId": "0010"}],
  "maxPageSize": 100,
  "entitlementFilters": ["*:Game", "*:Consumable", "*:UnmanagedConsumable", "*:Durable",
                         "*:Pass"],
  "market": "neutral",
  "expandSatisfyingItems": true,
  "excludeDuplicates": true,
  "validityType": "All",
  "sbx": "XDKS.1"
}"""

# The v9 example is printed with a trailing comma (section 10): not JSON.
ENTITLEMENT_REQUEST_AS_PRINTED = b"""{
  "beneficiaries": [{"identityType": "b2b", "identityValue": "eyJ0eXAi\xe2\x80\xa6",
                     "localTicketReference": "ref-1"}],
  "productSkuIds": [{"productId": "9NBLGGH42CFD"}],
  "maxPageSize": 200,
  "excludeDuplicates": false,
  "validityType": "Valid",
}"""


FILTERS = ("*:Game", "*:Consumable", "*:UnmanagedConsumable", "*:Durable", "*:Pass")


def test_the_license_request_example() -> None:
    ours = LicenseQuery(
        beneficiaries=[USER],
        product_sku_ids=[SKU],
        max_page_size=100,
        entitlement_filters=FILTERS,
        market="neutral",
        expand_satisfying_items=True,
        exclude_duplicates=True,
        validity_type="All",
        sandbox_id="XDKS.1",
    )
    assert orjson.loads(codec.dumps(ours)) == orjson.loads(LICENSE_REQUEST)
    assert codec.loads(LICENSE_REQUEST, LicenseQuery) == ours


def test_the_entitlement_request_example() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(ENTITLEMENT_REQUEST_AS_PRINTED)
    documented = orjson.loads(ENTITLEMENT_REQUEST_AS_PRINTED.replace(b'"Valid",\n}', b'"Valid"}'))
    ours = EntitlementQuery(
        beneficiaries=[USER],
        product_sku_ids=[ProductSkuId(product_id="9NBLGGH42CFD")],  # skuId optional in v9
        max_page_size=200,
        exclude_duplicates=False,
        validity_type="Valid",
    )
    assert orjson.loads(codec.dumps(ours)) == documented
    assert codec.structure(documented, EntitlementQuery) == ours


# -- the documented answer shapes -----------------------------------------------------------

# The continuation token looks like JSON: it is kept verbatim, never parsed.
TOKEN = '{"lastModified":"2021-05-17T23:01:48.3620000+00:00","skip":100}'
LICENSE_PAGE = orjson.dumps(
    {
        "continuationToken": TOKEN,
        "items": [
            {
                "acquiredDate": "2021-05-17T23:01:48.3620000+00:00",
                "acquisitionType": "Recurring",
                "beneficiary": "pub:12345",
                "devOfferId": "",
                "endDate": "9999-12-31T23:59:59.9999999+00:00",
                "id": "0e9e1f0f7f3f4a2bb0c6e4a0c1d2e3f4",
                "inAppOfferToken": "",
                "legacyOfferInstanceId": "",
                "legacyProductId": "",
                "localTicketReference": "ref-1",
                "modifiedDate": "2021-05-17T23:01:48.3620000+00:00",
                "productFamily": "Games",
                "productId": "9NBLGGH42CFD",
                "productKind": "Pass",
                "purchasedCountry": "US",
                "quantity": 1,
                "recurrenceData": {"recurrenceId": "mdr:0:abc:def", "autoRenew": True},
                "satisfiedByProductIds": ["9NSATISFIER1"],
                "sharingSource": "None",
                "skuId": "0010",
                "startDate": "2021-05-17T23:01:48.3620000+00:00",
                "status": "Active",
                "tags": [],
                "transactionId": "4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
                "trialData": {
                    "isInTrialPeriod": True,
                    "isTrial": True,
                    "trialTimeRemaining": "09:43:52.8580690",
                },
            },
            {
                # Casing drift, a "d." TimeSpan, an enum value added later, and a balance.
                "ProductId": "9NCOINS00001",
                "ProductKind": "SomethingNew",
                "Quantity": 250,
                "TrialData": {"TrialTimeRemaining": "2.09:43:52"},
            },
        ],
    }
)
ENTITLEMENT_PAGE = b"""{"items": [{"productId": "9NBLGGH42CFD", "skuId": "0010",
  "productKind": "Durable", "status": "Suspended", "quantity": 1,
  "recurrenceData": "mdr:0:abc:def",
  "trialData": {"isInTrialPeriod": false, "isTrial": false, "trialTimeRemaining": "-00:00:01"}}]}"""


def test_the_license_page_example() -> None:
    page = codec.loads(LICENSE_PAGE, LicensePage)
    assert page.continuation_token == TOKEN
    first, second = page.items
    assert first.trial_data == TrialData(
        is_in_trial_period=True, is_trial=True, trial_time_remaining="09:43:52.8580690"
    )
    assert first.trial_data.time_remaining == timedelta(
        hours=9, minutes=43, seconds=52, microseconds=858069
    )
    assert first.acquired_date == datetime(2021, 5, 17, 23, 1, 48, 362000, tzinfo=UTC)
    assert first.recurrence_data == {"recurrenceId": "mdr:0:abc:def", "autoRenew": True}
    assert (first.beneficiary, first.satisfied_by_product_ids) == ("pub:12345", ("9NSATISFIER1",))
    assert (first.legacy_product_id, first.sharing_source) == ("", "None")
    assert second == LicenseItem(
        product_id="9NCOINS00001",
        product_kind="SomethingNew",
        quantity=250,
        trial_data=TrialData(trial_time_remaining="2.09:43:52"),
    )
    assert second.trial_data is not None
    assert second.trial_data.time_remaining == timedelta(days=2, hours=9, minutes=43, seconds=52)
    # Round trip: our JSON parses back to the same page.
    assert codec.loads(codec.dumps(page), LicensePage) == page


def test_the_entitlement_page_example() -> None:
    page = codec.loads(ENTITLEMENT_PAGE, EntitlementPage)
    assert page.continuation_token is None
    (item,) = page.items
    assert isinstance(item, EntitlementItem)
    assert (item.status, item.recurrence_data) == ("Suspended", "mdr:0:abc:def")
    assert item.trial_data is not None
    assert item.trial_data.time_remaining == timedelta(seconds=-1)
    assert TrialData(trial_time_remaining="not a span").time_remaining is None
    assert codec.loads(codec.dumps(page), EntitlementPage) == page


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LicenseQuery(beneficiaries=[USER], product_sku_ids=[]), "can time out"),
        (lambda: EntitlementQuery(beneficiaries=[USER], product_sku_ids=[]), "is refused"),
        (
            lambda: LicenseQuery(
                beneficiaries=[USER],
                product_sku_ids=[ProductSkuId(product_id=f"P{n}", sku_id="1") for n in range(101)],
            ),
            r"at most 100 products \(got 101\): split the query",
        ),
        (
            lambda: LicenseQuery(
                beneficiaries=[USER], product_sku_ids=[ProductSkuId(product_id="P")]
            ),
            r"product_sku_ids\[0\].sku_id is required",
        ),
        (
            lambda: LicenseQuery(beneficiaries=[USER], product_sku_ids=[SKU], max_page_size=101),
            "max_page_size must be an integer from 1 to 100",
        ),
        (
            lambda: EntitlementQuery(
                beneficiaries=[USER], product_sku_ids=[SKU], max_page_size=201
            ),
            "max_page_size must be an integer from 1 to 200",
        ),
        (lambda: LicenseQuery(beneficiaries=[], product_sku_ids=[SKU]), "at least one user"),
        (
            lambda: LicenseQuery(beneficiaries=[USER], product_sku_ids=[SKU], market=""),
            "market must not be empty",
        ),
        (
            lambda: EntitlementQuery(
                beneficiaries=[USER], product_sku_ids=[SKU], exclude_duplicates=1
            ),
            "exclude_duplicates must be True, False or None",
        ),
    ],
)
def test_documented_limits_are_validated(build: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()  # type: ignore[operator]


def test_200_entitlements_per_page_are_allowed() -> None:
    query = EntitlementQuery(beneficiaries=[USER], product_sku_ids=[SKU], max_page_size=200)
    assert query.max_page_size == 200


# -- pagers against the emulator ----------------------------------------------------------------

PRODUCTS = [ProductSkuId(product_id=f"9NDURABLE{n:03}", sku_id="0010") for n in range(10)]


async def seeded(emu: StoreEmulator, count: int) -> list[str]:
    """``count`` durables of ``user-1`` over 10 products; their ids in query order."""
    return [
        emu.add_item("user-1", PRODUCTS[n % 10].product_id, item_id=f"{n:032x}").item_id
        for n in range(count)
    ]


async def test_1000_entitlements_over_5_pages_with_a_fault_on_page_3() -> None:
    # Page 3's first attempt gets a 503: retried under the same (opaque) token.
    plan = FaultPlan(script={"query": [None, None, FaultKind.HTTP_503]}, retry_after=0.0)
    async with StoreEmulator(faults=plan) as emu:
        expected = await seeded(emu, 1000)
        user = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
        query = EntitlementQuery(beneficiaries=[user], product_sku_ids=PRODUCTS, max_page_size=200)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            pages = [page async for page in store.list_entitlements(query).by_page()]
            assert [len(page.items) for page in pages] == [200] * 5
            assert [item.id for page in pages for item in page.items] == expected
            assert all(page.continuation_token for page in pages[:4])
            assert pages[4].continuation_token is None
            # Plain iteration gives the same items.
            assert [item.id async for item in store.list_entitlements(query)] == expected
        assert emu.stats.faults[("query", FaultKind.HTTP_503)] == 1


async def test_a_pager_resumes_from_the_last_token_after_a_failed_page() -> None:
    # Page 3 fails for good (one attempt only); the caller resumes from page 2's token.
    plan = FaultPlan(script={"query": [None, None, FaultKind.HTTP_503]}, retry_after=0.0)
    async with StoreEmulator(faults=plan) as emu:
        expected = await seeded(emu, 1000)
        user = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
        query = LicenseQuery(beneficiaries=[user], product_sku_ids=PRODUCTS, max_page_size=100)
        seen: list[str | None] = []
        token: str | None = None
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:

            async def read_until_it_fails() -> None:
                nonlocal token
                async for page in store.list_licenses(query, attempts=1).by_page():
                    seen.extend(item.id for item in page.items)
                    token = page.continuation_token

            with pytest.raises(ServiceUnavailableError):
                await read_until_it_fails()
            assert len(seen) == 200
            assert token is not None
            async for page in store.list_licenses(query).by_page(continuation_token=token):
                seen += [item.id for item in page.items]
        assert seen == expected  # nothing lost, nothing repeated


async def test_a_listing_starts_from_the_token_its_query_carries() -> None:
    async with StoreEmulator() as emu:
        expected = await seeded(emu, 300)
        user = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
        query = LicenseQuery(beneficiaries=[user], product_sku_ids=PRODUCTS, max_page_size=100)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            first = await store.query_licenses(query)
            assert first.continuation_token is not None
            resumed = query.with_continuation(first.continuation_token)
            rest = [item.id async for item in store.list_licenses(resumed)]
        assert [item.id for item in first.items] + rest == expected


async def test_balances_and_sandboxes_in_the_license_query() -> None:
    async with StoreEmulator() as emu:
        emu.add_balance("user-1", "9NCOINS", 40)
        emu.add_balance("user-1", "9NCOINS", 7, sandbox_id="XDKS.1")
        emu.add_item("user-1", "9NGAME", product_type="Game")
        user = UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
        skus = [ProductSkuId(product_id=p, sku_id="0010") for p in ("9NCOINS", "9NGAME")]
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            retail = await store.query_licenses(
                LicenseQuery(beneficiaries=[user], product_sku_ids=skus)
            )
            assert sorted((i.product_id, i.product_kind, i.quantity) for i in retail.items) == [
                ("9NCOINS", "Consumable", 40),
                ("9NGAME", "Game", 1),
            ]
            consumables = await store.query_licenses(
                LicenseQuery(
                    beneficiaries=[user], product_sku_ids=skus, entitlement_filters=["*:Consumable"]
                )
            )
            assert [item.product_id for item in consumables.items] == ["9NCOINS"]
            sandboxed = await store.query_entitlements(
                EntitlementQuery(beneficiaries=[user], product_sku_ids=skus, sandbox_id="XDKS.1")
            )
            assert [(i.product_id, i.quantity) for i in sandboxed.items] == [("9NCOINS", 7)]
            assert all(item.local_ticket_reference == "ref-1" for item in retail.items)


async def test_a_repeated_token_ends_the_pager() -> None:
    def answer(_request: MockRequest) -> MockResponse:
        return MockResponse(200, json={"items": [{"productId": "p"}], "continuationToken": "{}"})

    query = EntitlementQuery(beneficiaries=[USER], product_sku_ids=[SKU])
    async with StoreClient(StaticTokenCredential("t"), transport=MockTransport(answer)) as store:
        seen: list[str] = []

        async def read_all() -> None:
            async for item in store.list_entitlements(query):
                seen.append(item.product_id)

        with pytest.raises(ResponseFormatError, match="repeated a continuation token"):
            await read_all()
    assert seen == ["p", "p"]  # the first page, and the one that repeated its token


async def test_the_emulator_enforces_the_documented_limits() -> None:
    user = {"identityType": "b2b", "identityValue": "user-1", "localTicketReference": "r"}
    skus = [{"productId": f"P{n}", "skuId": "0010"} for n in range(101)]
    async with StoreEmulator() as emu, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {emu.dev_token}"}

        async def status(path: str, body: dict[str, object]) -> tuple[int, list[str]]:
            async with session.post(emu.url + path, json=body, headers=headers) as response:
                document = await response.json()
            return response.status, [d["target"] for d in document.get("details", [])]

        v8, v9 = "/v8.0/collections/b2bLicensePreview", "/v9.0/collections/publisherQuery"
        one = skus[:1]
        assert await status(v9, {"beneficiaries": [user], "productSkuIds": skus}) == (
            400,
            ["productSkuIds"],
        )
        assert await status(v8, {"beneficiaries": [user]}) == (400, ["productSkuIds"])
        assert await status(
            v8, {"beneficiaries": [user], "productSkuIds": one, "maxPageSize": 101}
        ) == (400, ["maxPageSize"])
        assert await status(
            v9, {"beneficiaries": [user], "productSkuIds": one, "maxPageSize": 200}
        ) == (200, [])
        assert await status(
            v9, {"beneficiaries": [user], "productSkuIds": one, "continuationToken": "nope"}
        ) == (400, ["continuationToken"])
