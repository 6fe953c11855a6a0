"""Every request and response example of the documentation, through the codec.

Bodies are copied from the Microsoft pages (MicrosoftDocs/windows-dev-docs ``uwp/monetize/``:
query-for-products, report-consumable-products-as-fulfilled, grant-free-products,
renew-a-windows-store-id-key). Responses must structure into records with exact values; our
requests must serialize to JSON equal to the documented bodies, except where the docs contradict
themselves (docs/store-api.md section 8), which is said at each place.

The Store for Business offline-license page documents no example, only the OfflineLicense
structure, so its body is built from the documented field names.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from store_async import codec
from store_async.errors import InnerError, ServiceError
from store_async.models import (
    ClientContext,
    CollectionItem,
    ConsumeRequest,
    GrantRequest,
    IdentityV6,
    KeyRenewalRequest,
    KeyRenewalResponse,
    OfflineLicense,
    Order,
    OrderLineItem,
    ProductKey,
    ProductSkuId,
    QueryRequest,
    QueryResult,
    UserIdentity,
)

# -- query-for-products.md --

QUERY_REQUEST = rb"""{
  "maxPageSize": 100,
  "beneficiaries": [
    {
      "localTicketReference": "1055521810674918",
      "identityValue": "eyJ0eXAiOiJ\u2026\u2026",
      "identityType": "b2b"
    }
  ],
  "modifiedAfter": "\/Date(-62135568000000)\/",
  "productSkuIds": [
    {
      "productId": "9NBLGGH5WVP6",
      "skuId": "0010"
    }
  ],
  "productTypes": [
    "UnmanagedConsumable"
  ],
  "validityType": "All"
}"""

QUERY_RESPONSE = b"""{
  "items" : [
    {
      "acquiredDate" : "2015-09-22T19:22:51.2068724+00:00",
      "devOfferId" : "f9587c53-540a-498b-a281-8a349491ed47",
      "endDate" : "9999-12-31T23:59:59.9999999+00:00",
      "fulfillmentData" : [],
      "inAppOfferToken" : "consumable2",
      "itemId" : "4b8fbb13127a41f299270ea668681c1d",
      "localTicketReference" : "1055521810674918",
      "modifiedDate" : "2015-09-22T19:22:51.2513155+00:00",
      "orderId" : "4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
      "ownershipType" : "OwnedByBeneficiary",
      "productId" : "9NBLGGH5WVP6",
      "productType" : "UnmanagedConsumable",
      "purchaser" : {
        "identityType" : "pub",
        "identityValue" : "user123"
      },
      "skuId" : "0010",
      "skuType" : "Full",
      "startDate" : "2015-09-22T19:22:51.2068724+00:00",
      "status" : "Active",
      "tags" : [],
      "transactionId" : "4ba5960d-4ec6-4a81-ac20-aafce02ddf31"
    }
  ]
}"""

# The MS-AJAX value of the example: 0001-01-01T00:00 in UTC-8, i.e. .NET's DateTime.MinValue
# written from a Pacific-time machine.
AJAX_MIN = datetime(1, 1, 1, 8, 0, tzinfo=UTC)

QUERY_USER = UserIdentity(
    identity_value="eyJ0eXAiOiJ\u2026\u2026", local_ticket_reference="1055521810674918"
)


def test_query_request_example() -> None:
    ours = QueryRequest(
        max_page_size=100,
        beneficiaries=[QUERY_USER],
        modified_after=AJAX_MIN,
        product_sku_ids=[ProductSkuId(product_id="9NBLGGH5WVP6", sku_id="0010")],
        product_types=["UnmanagedConsumable"],
        validity_type="All",
    )
    documented = orjson.loads(QUERY_REQUEST)
    assert documented["modifiedAfter"] == "/Date(-62135568000000)/"  # JSON's \/ is a plain /
    # The table types modifiedAfter as a datetime; we send ISO-8601 with an offset rather than
    # the MS-AJAX form of the example (section 8), and read both.
    assert orjson.loads(codec.dumps(ours)) == {
        **documented,
        "modifiedAfter": "0001-01-01T08:00:00+00:00",
    }
    assert codec.loads(QUERY_REQUEST, QueryRequest) == ours


def test_query_response_example() -> None:
    page = codec.loads(QUERY_RESPONSE, QueryResult)
    assert page.continuation_token is None
    [item] = page.items
    assert item == CollectionItem(
        acquired_date=datetime(2015, 9, 22, 19, 22, 51, 206872, tzinfo=UTC),
        dev_offer_id="f9587c53-540a-498b-a281-8a349491ed47",
        end_date=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        fulfillment_data=(),
        in_app_offer_token="consumable2",
        item_id="4b8fbb13127a41f299270ea668681c1d",
        local_ticket_reference="1055521810674918",
        modified_date=datetime(2015, 9, 22, 19, 22, 51, 251315, tzinfo=UTC),
        order_id="4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
        ownership_type="OwnedByBeneficiary",
        product_id="9NBLGGH5WVP6",
        product_type="UnmanagedConsumable",
        purchaser=IdentityV6(identity_type="pub", identity_value="user123"),
        sku_id="0010",
        sku_type="Full",
        start_date=datetime(2015, 9, 22, 19, 22, 51, 206872, tzinfo=UTC),
        status="Active",
        tags=(),
        transaction_id="4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
    )
    assert item.acquired_date.utcoffset() == timedelta(0)
    # Absent optional fields are None, not guessed.
    assert (item.campaign_id, item.order_line_item_id, item.purchased_country, item.quantity) == (
        None,
        None,
        None,
        None,
    )


def test_query_response_with_a_continuation_token() -> None:
    body = orjson.loads(QUERY_RESPONSE)
    body["continuationToken"] = "next-page"
    assert codec.structure(body, QueryResult).continuation_token == "next-page"


# -- report-consumable-products-as-fulfilled.md --

CONSUME_BY_ITEM = b"""{
    "beneficiary": {
        "localTicketReference": "testreference",
        "identityValue": "eyJ0eXAiOi\xe2\x80\xa6..",
        "identityType": "b2b"
    },
    "itemId": "44c26106-4979-457b-af34-609ae97a084f",
    "trackingId": "44db79ca-e31d-49e9-8896-fa5c7f892b40"
}"""

CONSUME_BY_TRANSACTION = b"""{
    "beneficiary" : {
        "localTicketReference" : "testReference",
        "identityValue" : "eyJ0eXAiOiJ\xe2\x80\xa6..",
        "identitytype" : "b2b"
    },
    "productId" : "9NBLGGH5WVP6",
    "transactionId" : "08a14c7c-1892-49fc-9135-190ca4f10490"
}"""


def test_consume_by_item_example() -> None:
    ours = ConsumeRequest.for_item(
        UserIdentity(identity_value="eyJ0eXAiOi\u2026..", local_ticket_reference="testreference"),
        "44c26106-4979-457b-af34-609ae97a084f",
        tracking_id="44db79ca-e31d-49e9-8896-fa5c7f892b40",
    )
    assert orjson.loads(codec.dumps(ours)) == orjson.loads(CONSUME_BY_ITEM)
    assert codec.loads(CONSUME_BY_ITEM, ConsumeRequest) == ours


def test_consume_by_transaction_example() -> None:
    ours = ConsumeRequest.for_transaction(
        UserIdentity(identity_value="eyJ0eXAiOiJ\u2026..", local_ticket_reference="testReference"),
        "9NBLGGH5WVP6",
        "08a14c7c-1892-49fc-9135-190ca4f10490",
    )
    documented = orjson.loads(CONSUME_BY_TRANSACTION)
    # The example writes "identitytype"; the table (and every other example) "identityType".
    documented["beneficiary"]["identityType"] = documented["beneficiary"].pop("identitytype")
    assert orjson.loads(codec.dumps(ours)) == documented
    # ...and the example as printed still reads, case-insensitively.
    assert codec.loads(CONSUME_BY_TRANSACTION, ConsumeRequest) == ours


# -- grant-free-products.md --

# Printed with a trailing comma after orderId (section 8): not JSON.
GRANT_REQUEST_AS_PRINTED = b"""{
    "b2bKey" : "eyJ0eXAiOiJK\xe2\x80\xa6\xe2\x80\xa6",
    "availabilityId" : "9RT7C09D5J3W",
    "productId" : "9NBLGGH5WVP6",
    "skuId" : "0010",
    "language" : "en-us",
    "market" : "us",
    "orderId" : "3eea1529-611e-4aee-915c-345494e4ee76",
}"""

GRANT_RESPONSE = b"""{
    "clientContext": {
        "client": "86b78998-d05a-487b-b380-6c738f6553ea"
    },
    "createdTime": "2015-10-13T21:21:51.1863494+00:00",
    "currencyCode": "USD",
    "isPIRequired": false,
    "language": "en-us",
    "market": "us",
    "orderId": "3eea1529-611e-4aee-915c-345494e4ee76",
    "orderLineItems": [{
        "availabilityId": "9RT7C09D5J3W",
        "beneficiary": {
            "identityType": "pub",
            "identityValue": "user1"
        },
        "billingState": "Charged",
        "currencyCode": "USD",
        "description": "Jewels, Jewels, Jewels - Consumable 2",
        "fulfillmentDate": "2015-10-13T21:21:51.639478+00:00",
        "fulfillmentState": "Fulfilled",
        "isPIRequired": false,
        "isTaxIncluded": true,
        "lineItemId": "2814d758-3ee3-46b3-9671-4fb3bdae9ffe",
        "listPrice": 0.0,
        "payments": [],
        "productId": "9NBLGGH5WVP6",
        "productType": "UnmanagedConsumable",
        "quantity": 1,
        "retailPrice": 0.0,
        "revenueRecognitionState": "None",
        "skuId": "0010",
        "taxAmount": 0.0,
        "taxType": "NoApplicableTaxes",
        "title": "Jewels, Jewels, Jewels - Consumable 2",
        "totalAmount": 0.0
    }],
    "orderState": "Purchased",
    "orderValidityEndTime": "2015-10-14T21:21:51.1863494+00:00",
    "orderValidityStartTime": "2015-10-13T21:21:51.1863494+00:00",
    "purchaser": {
        "identityType": "pub",
        "identityValue": "user1"
    },
    "testScenarios": "None",
    "totalAmount": 0.0,
    "totalTaxAmount": 0.0
}"""

GRANT_ORDER = Order(
    client_context=ClientContext(client="86b78998-d05a-487b-b380-6c738f6553ea"),
    created_time=datetime(2015, 10, 13, 21, 21, 51, 186349, tzinfo=UTC),
    currency_code="USD",
    is_pi_required=False,
    language="en-us",
    market="us",
    order_id="3eea1529-611e-4aee-915c-345494e4ee76",
    order_line_items=[
        OrderLineItem(
            availability_id="9RT7C09D5J3W",
            beneficiary=IdentityV6(identity_type="pub", identity_value="user1"),
            billing_state="Charged",
            currency_code="USD",
            description="Jewels, Jewels, Jewels - Consumable 2",
            fulfillment_date=datetime(2015, 10, 13, 21, 21, 51, 639478, tzinfo=UTC),
            fulfillment_state="Fulfilled",
            is_pi_required=False,
            is_tax_included=True,
            line_item_id="2814d758-3ee3-46b3-9671-4fb3bdae9ffe",
            list_price=Decimal("0.0"),
            product_id="9NBLGGH5WVP6",
            product_type="UnmanagedConsumable",
            quantity=1,
            retail_price=Decimal("0.0"),
            revenue_recognition_state="None",
            sku_id="0010",
            tax_amount=Decimal("0.0"),
            tax_type="NoApplicableTaxes",
            title="Jewels, Jewels, Jewels - Consumable 2",
            total_amount=Decimal("0.0"),
        )
    ],
    order_state="Purchased",
    order_validity_end_time=datetime(2015, 10, 14, 21, 21, 51, 186349, tzinfo=UTC),
    order_validity_start_time=datetime(2015, 10, 13, 21, 21, 51, 186349, tzinfo=UTC),
    purchaser=IdentityV6(identity_type="pub", identity_value="user1"),
    total_amount=Decimal("0.0"),
    total_tax_amount=Decimal("0.0"),
)


def test_grant_request_example() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(GRANT_REQUEST_AS_PRINTED)  # the documented typo
    documented = orjson.loads(GRANT_REQUEST_AS_PRINTED.replace(b'ee76",\n}', b'ee76"\n}'))
    ours = GrantRequest(
        b2b_key="eyJ0eXAiOiJK\u2026\u2026",
        availability_id="9RT7C09D5J3W",
        product_id="9NBLGGH5WVP6",
        sku_id="0010",
        language="en-us",
        market="us",
        order_id="3eea1529-611e-4aee-915c-345494e4ee76",
    )
    # quantity (only 1 is supported, 1 by default) is absent from the example, and from ours.
    assert orjson.loads(codec.dumps(ours)) == documented
    assert codec.structure(documented, GrantRequest) == ours


def test_grant_response_example() -> None:
    order = codec.loads(GRANT_RESPONSE, Order)
    assert order == GRANT_ORDER
    [line] = order.order_line_items
    # Amounts are exact Decimals, times keep microseconds of both the 7- and 6-digit forms.
    assert type(order.total_amount) is Decimal
    assert str(line.list_price) == "0.0"
    assert line.fulfillment_date == datetime(2015, 10, 13, 21, 21, 51, 639478, tzinfo=UTC)
    # Fields absent from the example (but in the table) are None.
    assert order.friendly_name is None
    assert order.total_amount_before_tax is None
    assert order.total_charged_to_csv_top_off_pi is None


def test_grant_response_in_the_casing_of_the_tables() -> None:
    """The tables write ``createdtime``, ``devofferId`` and ``Title``; the example does not."""
    body = orjson.loads(GRANT_RESPONSE)
    body["createdtime"] = body.pop("createdTime")
    line = body["orderLineItems"][0]
    line["Title"] = line.pop("title")
    line["devofferId"] = "offer-7"
    body.update(friendlyName="", totalAmountBeforeTax=0.99, totalChargedToCsvTopOffPI=0)
    order = codec.structure(body, Order)
    assert order.created_time == GRANT_ORDER.created_time
    assert order.order_line_items[0].title == "Jewels, Jewels, Jewels - Consumable 2"
    assert order.order_line_items[0].dev_offer_id == "offer-7"
    assert order.friendly_name == ""
    assert order.total_amount_before_tax == Decimal("0.99")
    assert str(order.total_amount_before_tax) == "0.99"
    assert order.total_charged_to_csv_top_off_pi == Decimal(0)


def test_grant_response_with_an_order_state_the_docs_do_not_list() -> None:
    body = orjson.loads(GRANT_RESPONSE)
    body["orderState"] = "PartiallyRefunded"
    body["orderLineItems"][0]["productType"] = "StoreManagedConsumable"
    order = codec.structure(body, Order)
    assert order.order_state == "PartiallyRefunded"
    assert order.order_line_items[0].product_type == "StoreManagedConsumable"


# -- renew-a-windows-store-id-key.md --

RENEW_REQUEST = b"""{
    "serviceTicket": "eyJ0eXAiOiJKV1QiLCJhb\xe2\x80\xa6.",
    "Key": "eyJ0eXAiOiJKV1QiLCJhbG\xe2\x80\xa6."
}"""
RENEW_RESPONSE = b"""{
    "key":"eyJ0eXAi\xe2\x80\xa6.."
}"""


def test_renew_request_example() -> None:
    ours = KeyRenewalRequest(
        service_ticket="eyJ0eXAiOiJKV1QiLCJhb\u2026.", key="eyJ0eXAiOiJKV1QiLCJhbG\u2026."
    )
    documented = orjson.loads(RENEW_REQUEST)
    # The example sends "Key"; the table and Microsoft's library say "key".
    documented["key"] = documented.pop("Key")
    assert orjson.loads(codec.dumps(ours)) == documented
    assert codec.loads(RENEW_REQUEST, KeyRenewalRequest) == ours


def test_renew_response_example() -> None:
    assert codec.loads(RENEW_RESPONSE, KeyRenewalResponse) == KeyRenewalResponse(
        key="eyJ0eXAi\u2026.."
    )


# -- Store for Business: get-offline-license.md / data-structures (no example printed) --

OFFLINE_LICENSE = b"""{
    "productKey": {"productId": "9WZDNCRFJ3Q2", "skuId": "0016"},
    "licenseBlob": "PD94bWwgdmVyc2lvbj0iMS4wIiBlbmNvZGluZz0idXRmLTgiPz4=",
    "licenseInstanceId": "b3f1a0c4-5e2d-4d8c-9a8b-7a6c5d4e3f21",
    "requestorId": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "contentId": "c0ffee00-1234-4bcd-8ef0-123456789abc"
}"""


def test_offline_license() -> None:
    expected = OfflineLicense(
        product_key=ProductKey(product_id="9WZDNCRFJ3Q2", sku_id="0016"),
        license_blob="PD94bWwgdmVyc2lvbj0iMS4wIiBlbmNvZGluZz0idXRmLTgiPz4=",
        license_instance_id="b3f1a0c4-5e2d-4d8c-9a8b-7a6c5d4e3f21",
        requestor_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        content_id="c0ffee00-1234-4bcd-8ef0-123456789abc",
    )
    assert codec.loads(OFFLINE_LICENSE, OfflineLicense) == expected
    assert orjson.loads(codec.dumps(expected)) == orjson.loads(OFFLINE_LICENSE)


def test_offline_license_in_store_for_business_capitals() -> None:
    """Store for Business pages mix capitalised names (``Location``, ``State``...) in."""
    shouted: dict[str, Any] = {
        "ProductKey": {"ProductId": "9WZDNCRFJ3Q2", "SKUID": "0016"},
        "LicenseBlob": "blob",
        "LICENSEINSTANCEID": "1",
        "RequestorId": "org",
        "ContentId": "content",
    }
    assert codec.structure(shouted, OfflineLicense) == OfflineLicense(
        product_key=ProductKey(product_id="9WZDNCRFJ3Q2", sku_id="0016"),
        license_blob="blob",
        license_instance_id="1",
        requestor_id="org",
        content_id="content",
    )


# -- the error body (section 6, third-party observation) --


def test_service_error_body() -> None:
    body = b"""{"code": "Unauthorized", "data": [], "details": [],
        "innererror": {"code": "AuthenticationTokenInvalid", "data": [], "details": [],
                       "message": "Access token validation failure."},
        "message": "Access is denied.", "source": "PurchaseFD"}"""
    assert codec.loads(body, ServiceError) == ServiceError(
        code="Unauthorized",
        message="Access is denied.",
        source="PurchaseFD",
        inner_error=InnerError(
            code="AuthenticationTokenInvalid", message="Access token validation failure."
        ),
    )


# -- section 8: date-time spellings the docs use --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-09-22T19:22:51.2068724+00:00", datetime(2015, 9, 22, 19, 22, 51, 206872, UTC)),
        ("2015-10-13T21:21:51.639478+00:00", datetime(2015, 10, 13, 21, 21, 51, 639478, UTC)),
        ("9999-12-31T23:59:59.9999999+00:00", datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
        ("/Date(-62135568000000)/", AJAX_MIN),
        ("\\/Date(-62135568000000)\\/", AJAX_MIN),
        (
            "2015-09-22T12:22:51.2068724-07:00",
            datetime(2015, 9, 22, 12, 22, 51, 206872, timezone(timedelta(hours=-7))),
        ),
    ],
)
def test_documented_date_time_spellings(text: str, expected: datetime) -> None:
    body = orjson.loads(GRANT_RESPONSE)
    body["createdTime"] = text
    created = codec.structure(body, Order).created_time
    assert created == expected
    assert created.utcoffset() == expected.utcoffset()
