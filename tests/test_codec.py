"""The codec's rules: wire names, strict types, money, date-times, omitted fields, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import orjson
import pytest

from store_async import codec
from store_async.errors import InnerError, ResponseFormatError, ServiceError, ValidationError
from store_async.models import (
    ClientContext,
    CollectionItem,
    ConsumeRequest,
    GrantRequest,
    IdentityV6,
    KeyRenewalResponse,
    Order,
    OrderLineItem,
    ProductKey,
    QueryRequest,
    QueryResult,
    UserIdentity,
    _checks,
)

USER = UserIdentity(identity_value="eyJ0.key", local_ticket_reference="ref")
TRACKING = "44db79ca-e31d-49e9-8896-fa5c7f892b40"
WHEN = "2015-09-22T19:22:51.2068724+00:00"


def item_json(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "itemId": "4b8fbb13127a41f299270ea668681c1d",
        "productId": "9NBLGGH5WVP6",
        "skuId": "0010",
        "productType": "UnmanagedConsumable",
        "skuType": "Full",
        "status": "Active",
        "ownershipType": "OwnedByBeneficiary",
        "localTicketReference": "ref",
        "transactionId": "4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
        "acquiredDate": WHEN,
        "startDate": WHEN,
        "endDate": WHEN,
        "modifiedDate": WHEN,
        "tags": [],
    }
    body.update(changes)
    return body


def line_json(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lineItemId": "l1",
        "productId": "9NBLGGH5WVP6",
        "skuId": "0010",
        "availabilityId": "9RT7C09D5J3W",
        "productType": "Durable",
        "quantity": 1,
        "title": "Sword",
        "description": "A sword",
        "currencyCode": "USD",
        "listPrice": 0.99,
        "retailPrice": 0.99,
        "taxAmount": 0.0,
        "totalAmount": 0.99,
        "taxType": "SalesTax",
        "isPIRequired": False,
        "isTaxIncluded": True,
        "revenueRecognitionState": "None",
    }
    body.update(changes)
    return body


def failure(data: Any, cls: type) -> str:
    """The message of the ResponseFormatError that structuring ``data`` must raise."""
    with pytest.raises(ResponseFormatError) as caught:
        codec.structure(data, cls)
    assert type(caught.value) is ResponseFormatError
    return caught.value.message


# -- wire names --


@pytest.mark.parametrize(
    ("attribute", "wire"),
    [
        ("item_id", "itemId"),
        ("order_line_items", "orderLineItems"),
        ("b2b_key", "b2bKey"),
        ("key", "key"),
        ("is_pi_required", "isPIRequired"),
        ("total_charged_to_csv_top_off_pi", "totalChargedToCsvTopOffPI"),
        ("inner_error", "innererror"),
    ],
)
def test_wire_name(attribute: str, wire: str) -> None:
    assert codec.wire_name(attribute) == wire


def test_the_converter_is_built_once_and_shared() -> None:
    from store_async import codec as again

    assert again.converter is codec.converter
    assert codec.converter.unstructure(USER) == {
        "identityType": "b2b",
        "identityValue": "eyJ0.key",
        "localTicketReference": "ref",
    }


# -- requests: exactly the documented fields, nothing null --


def test_consume_request_body() -> None:
    request = ConsumeRequest.for_item(USER, "item-1", TRACKING)
    assert orjson.loads(codec.dumps(request)) == {
        "beneficiary": {
            "identityType": "b2b",
            "identityValue": "eyJ0.key",
            "localTicketReference": "ref",
        },
        "itemId": "item-1",
        "trackingId": TRACKING,
    }
    # The fast path and the converter agree, and the bytes are stable across calls (retries
    # resend a byte-identical body).
    assert orjson.loads(codec.dumps(request)) == codec.converter.unstructure(request)
    assert codec.dumps(request) == codec.dumps(request)


def test_consume_by_transaction_body() -> None:
    request = ConsumeRequest.for_transaction(USER, "9NBLGGH5WVP6", TRACKING)
    assert orjson.loads(codec.dumps(request)) == {
        "beneficiary": {
            "identityType": "b2b",
            "identityValue": "eyJ0.key",
            "localTicketReference": "ref",
        },
        "productId": "9NBLGGH5WVP6",
        "transactionId": TRACKING,
    }


def test_absent_optional_fields_are_omitted_not_null() -> None:
    request = QueryRequest(beneficiaries=[USER], product_types=["Durable"])
    body = codec.dumps(request)
    assert b"null" not in body
    assert orjson.loads(body) == {
        "beneficiaries": [
            {"identityType": "b2b", "identityValue": "eyJ0.key", "localTicketReference": "ref"}
        ],
        "productTypes": ["Durable"],
    }


def test_query_request_with_every_field() -> None:
    request = QueryRequest(
        beneficiaries=[USER],
        product_types=["Durable", "Game"],
        continuation_token="tok",
        max_page_size=25,
        modified_after=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        parent_product_id="9NBLGGH42CFD",
        product_sku_ids=[],
        validity_type="Valid",
    )
    body = orjson.loads(codec.dumps(request))
    assert body["modifiedAfter"] == "2024-05-01T12:30:00+02:00"
    assert body["continuationToken"] == "tok"
    assert body["maxPageSize"] == 25
    assert body["parentProductId"] == "9NBLGGH42CFD"
    assert body["productSkuIds"] == []  # given (empty) is sent; only None is omitted
    assert body["validityType"] == "Valid"


def test_grant_request_body_omits_quantity_and_absent_offer() -> None:
    request = GrantRequest(
        availability_id="a",
        b2b_key="k",
        language="en-us",
        market="us",
        product_id="p",
        sku_id="s",
        order_id=TRACKING,
    )
    assert orjson.loads(codec.dumps(request)) == {
        "availabilityId": "a",
        "b2bKey": "k",
        "language": "en-us",
        "market": "us",
        "productId": "p",
        "skuId": "s",
        "orderId": TRACKING,
    }
    with_offer = GrantRequest(
        availability_id="a",
        b2b_key="k",
        language="en-us",
        market="us",
        product_id="p",
        sku_id="s",
        order_id=TRACKING,
        dev_offer_id="offer",
    )
    assert orjson.loads(codec.dumps(with_offer))["devOfferId"] == "offer"


def test_dumps_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValidationError, match="surrogates not allowed"):
        codec.dumps(ConsumeRequest.for_item(USER, "item-\ud800", TRACKING))
    with pytest.raises(ValidationError, match="object cannot be sent as JSON"):
        codec.dumps(object())


# -- case-insensitive reading, unknown fields, unknown values --


def test_field_names_are_matched_in_any_case() -> None:
    body = {key.upper(): value for key, value in item_json().items()}
    body["PURCHASER"] = {"IdentityType": "pub", "identityvalue": "u"}
    item = codec.structure(body, CollectionItem)
    assert item == codec.structure(
        item_json(purchaser={"identityType": "pub", "identityValue": "u"}), CollectionItem
    )
    assert item.purchaser == IdentityV6(identity_type="pub", identity_value="u")


def test_unknown_fields_are_ignored_and_unknown_values_kept() -> None:
    body = item_json(status="Suspended", productType="Pass", brandNewField={"x": [1]})
    item = codec.structure(body, CollectionItem)
    assert (item.status, item.product_type) == ("Suspended", "Pass")


def test_service_error_reads_innererror_in_any_casing() -> None:
    for name in ("innererror", "innerError", "InnerError"):
        error = codec.structure({"code": "BadRequest", name: {"code": "X"}}, ServiceError)
        assert error.inner_error == InnerError(code="X")
    assert codec.structure({"data": [1, {"a": None}]}, ServiceError).data == (1, {"a": None})


def test_null_optional_fields_and_lists() -> None:
    item = codec.structure(item_json(campaignId=None, purchaser=None, tags=None), CollectionItem)
    assert (item.campaign_id, item.purchaser, item.tags) == (None, None, ())


def test_non_string_keys_in_python_data_are_skipped() -> None:
    body: dict[Any, Any] = {**item_json(), 7: "seven", None: 1}
    assert codec.structure(body, CollectionItem).item_id == "4b8fbb13127a41f299270ea668681c1d"


# -- strict JSON types --


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"itemId": 5}, "$.itemId: expected a string, got number"),
        ({"itemId": None}, "$.itemId: expected a string, got null"),
        ({"itemId": ["x"]}, "$.itemId: expected a string, got array"),
        ({"quantity": "1"}, "$.quantity: expected an integer, got string"),
        ({"quantity": 1.0}, "$.quantity: expected an integer, got number"),
        ({"quantity": True}, "$.quantity: expected an integer, got boolean"),
        ({"tags": "a,b"}, "$.tags: expected an array, got string"),
        ({"tags": ["a", 2]}, "$.tags[1]: expected a string, got number"),
        ({"purchaser": "pub:u"}, "$.purchaser: expected an object, got string"),
        ({"purchaser": {"identityType": "pub"}}, "$.purchaser.identityValue: required field"),
        ({"acquiredDate": 1442949771}, "$.acquiredDate: expected a date-time string, got number"),
        ({"acquiredDate": "yesterday"}, "$.acquiredDate: expected an ISO-8601 date-time, got"),
        ({"acquiredDate": "/Date(abc)/"}, "$.acquiredDate: expected an ISO-8601 date-time"),
        # Not a string, and not hashable either (a cached date-time is looked up by its text).
        ({"acquiredDate": ["x"]}, "$.acquiredDate: expected a date-time string, got array"),
        ({"endDate": {"x": 1}}, "$.endDate: expected a date-time string, got object"),
        ({"campaignId": 7}, "$.campaignId: expected a string, got number"),
        ({"tags": None, "fulfillmentData": [None]}, "$.fulfillmentData[0]: expected a string"),
    ],
)
def test_wrong_types_are_reported_with_their_path(change: dict[str, Any], message: str) -> None:
    assert message in failure(item_json(**change), CollectionItem)


def test_booleans_are_not_guessed() -> None:
    assert "$.orderLineItems[0].isTaxIncluded: expected true or false, got string" in failure(
        order_json(orderLineItems=[line_json(isTaxIncluded="false")]), Order
    )
    assert "expected true or false, got number" in failure(order_json(isPIRequired=0), Order)


def test_missing_required_fields_are_named() -> None:
    body = item_json()
    del body["transactionId"]
    del body["endDate"]
    message = failure(body, CollectionItem)
    assert message == (
        "CollectionItem: $.transactionId: required field missing; $.endDate: required field missing"
    )


def test_many_problems_are_summarised() -> None:
    message = failure({}, CollectionItem)
    assert message.startswith("CollectionItem: $.itemId: required field missing; ")
    assert message.endswith("(and 8 more)")


def test_nested_paths_use_wire_names_and_indexes() -> None:
    page = {"items": [item_json(), item_json(skuId=10)]}
    assert (
        failure(page, QueryResult) == "QueryResult: $.items[1].skuId: expected a string, got number"
    )


def test_top_level_must_be_an_object() -> None:
    assert (
        failure([item_json()], CollectionItem) == "CollectionItem: $: expected an object, got array"
    )
    assert failure("x" * 10_000_000, QueryResult) == (
        "QueryResult: $: expected an object, got a 10000000-character string"
    )


def test_request_records_are_validated_when_read() -> None:
    body = {
        "beneficiary": {"identityValue": "k", "localTicketReference": "r", "identityType": "b2b"},
        "itemId": "i",
    }
    assert "item_id needs a tracking_id" in failure(body, ConsumeRequest)


# -- money --


@pytest.mark.parametrize(
    ("wire", "amount"),
    [
        (b"0.99", "0.99"),
        (b"0.0", "0.0"),
        (b"1", "1"),
        (b"-12.5", "-12.5"),
        (b"19.99", "19.99"),
        (b"0.1", "0.1"),
        (b"1234567890.12345", "1234567890.12345"),
        (b"1e2", "100.0"),
        (b'"4.20"', "4.20"),
        (b'"12345678901234567890.123456789"', "12345678901234567890.123456789"),
    ],
)
def test_money_is_an_exact_decimal(wire: bytes, amount: str) -> None:
    body = orjson.dumps(line_json()).replace(b'"listPrice":0.99', b'"listPrice":' + wire)
    price = codec.loads(body, OrderLineItem).list_price
    assert type(price) is Decimal
    assert str(price) == amount


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected a number, got boolean"),
        (None, "expected a number, got null"),
        ("NaN", "expected an amount, got 'NaN'"),
        ("Infinity", "expected an amount, got 'Infinity'"),
        ("12 USD", "expected an amount, got '12 USD'"),
        ("9" * 100, "expected an amount, got a 100-character string"),
        (float("nan"), "expected a number, got number"),
        ({"amount": 1}, "expected a number, got object"),
    ],
)
def test_bad_amounts(value: Any, message: str) -> None:
    assert f"$.listPrice: {message}" in failure(line_json(listPrice=value), OrderLineItem)


def test_amounts_are_written_as_json_numbers_when_exact() -> None:
    line = codec.structure(line_json(listPrice=0.99), OrderLineItem)
    assert orjson.loads(codec.dumps(line))["listPrice"] == 0.99
    precise = codec.structure(line_json(listPrice="0.12345678901234567891"), OrderLineItem)
    assert orjson.loads(codec.dumps(precise))["listPrice"] == "0.12345678901234567891"


# -- date-times --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-10-13T21:21:51Z", datetime(2015, 10, 13, 21, 21, 51, tzinfo=UTC)),
        ("2015-10-13T21:21:51.1+05:30", datetime(2015, 10, 13, 15, 51, 51, 100000, UTC)),
        ("2015-10-13T21:21:51", datetime(2015, 10, 13, 21, 21, 51, tzinfo=UTC)),  # naive: UTC
        ("2015-10-13T21:21:51.123456789Z", datetime(2015, 10, 13, 21, 21, 51, 123456, UTC)),
        ("/Date(0)/", datetime(1970, 1, 1, tzinfo=UTC)),
        ("/Date(1444771311186)/", datetime(2015, 10, 13, 21, 21, 51, 186000, UTC)),
        ("/Date(1444771311186+0100)/", datetime(2015, 10, 13, 21, 21, 51, 186000, UTC)),
        ("\\/Date(1444771311186-0730)\\/", datetime(2015, 10, 13, 21, 21, 51, 186000, UTC)),
    ],
)
def test_date_time_forms(text: str, expected: datetime) -> None:
    parsed = codec.structure(item_json(acquiredDate=text), CollectionItem).acquired_date
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_ms_ajax_offsets_are_kept() -> None:
    parsed = codec.parse_datetime("/Date(1444771311186+0100)/")
    assert parsed.utcoffset() == timedelta(hours=1)
    assert parsed.hour == 22
    assert codec.parse_datetime("/Date(1444771311186-0730)/").utcoffset() == -timedelta(
        hours=7, minutes=30
    )


@pytest.mark.parametrize(
    "text",
    [
        "/Date(99999999999999999)/",  # beyond year 9999
        "/Date(-62135596800001)/",  # before year 1
        "/Date(-62135596800000-0100)/",  # year 1 moved west of UTC
        "/Date(1444771311186)",
        "Date(1444771311186)",
        "2015-13-01T00:00:00Z",
        "",
    ],
)
def test_impossible_date_times_are_format_errors(text: str) -> None:
    assert "$.acquiredDate: expected an ISO-8601 date-time" in failure(
        item_json(acquiredDate=text), CollectionItem
    )


def test_date_times_are_written_with_an_offset() -> None:
    item = codec.structure(item_json(acquiredDate="2015-10-13T21:21:51"), CollectionItem)
    assert codec.converter.unstructure(item)["acquiredDate"] == "2015-10-13T21:21:51+00:00"
    naive = attrs.evolve(item, start_date=datetime(2020, 1, 2, 3, 4, 5))
    assert codec.converter.unstructure(naive)["startDate"] == "2020-01-02T03:04:05+00:00"


# -- loads: bodies that are not JSON --


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"key": "eyJ0eXAiOiJKV1QiLCJhbGciOi',  # cut short
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
        b"NaN",
    ],
)
def test_bodies_that_are_not_json(body: bytes) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        codec.loads(body, KeyRenewalResponse)
    message = str(caught.value)
    assert message.startswith("KeyRenewalResponse: the body is not JSON (")
    assert f"of {len(body)})" in message
    # The body is never echoed.
    assert "eyJ0" not in message
    assert "html" not in message


def test_json_that_is_not_the_record() -> None:
    for body in (b"null", b"[]", b"42", b'"key"', b"{}", b'{"key": 42}'):
        with pytest.raises(ResponseFormatError, match=r"^KeyRenewalResponse: \$"):
            codec.loads(body, KeyRenewalResponse)


def test_a_body_of_the_wrong_python_type() -> None:
    with pytest.raises(ResponseFormatError, match="cannot read a body of type int"):
        codec.loads(42, KeyRenewalResponse)  # type: ignore[arg-type]


def test_deep_nesting_in_python_data() -> None:
    nested: Any = "x"
    for _ in range(100_000):
        nested = [nested]
    assert failure({"items": nested}, QueryResult).startswith("QueryResult: $.items[0]: expected")
    assert "expected a string, got array" in failure({"key": nested}, KeyRenewalResponse)


def test_huge_values_are_not_echoed() -> None:
    huge = "9" * 5_000_000
    message = failure(line_json(listPrice=huge, retailPrice=huge), OrderLineItem)
    assert len(message) < 300
    body = orjson.dumps(item_json(acquiredDate=huge))
    with pytest.raises(ResponseFormatError) as caught:
        codec.loads(body, CollectionItem)
    assert len(str(caught.value)) < 300


def order_json(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "orderId": "o1",
        "orderState": "Purchased",
        "createdTime": WHEN,
        "purchaser": {"identityType": "pub", "identityValue": "u"},
        "clientContext": {"client": "c"},
        "language": "en-us",
        "market": "us",
        "currencyCode": "USD",
        "isPIRequired": False,
        "totalAmount": 0.99,
        "totalTaxAmount": 0,
        "orderLineItems": [line_json()],
    }
    body.update(changes)
    return body


def test_a_full_order() -> None:
    order = codec.structure(order_json(), Order)
    assert order.client_context == ClientContext(client="c")
    assert order.total_amount == Decimal("0.99")
    assert order.total_tax_amount == Decimal(0)
    assert order.order_line_items[0].list_price == Decimal("0.99")


def test_product_key_round_trip() -> None:
    key = ProductKey(product_id="p", sku_id="s")
    assert codec.loads(codec.dumps(key), ProductKey) == key


# -- any attrs record, with no registration (records added to models/ need none) --


@attrs.frozen(kw_only=True)
class _Refund:
    """A record the codec has never seen: nested records, money, dates, lists, defaults."""

    refund_id: str
    amount: Decimal
    refunded_at: datetime
    user: IdentityV6
    lines: tuple[ProductKey, ...] = ()
    note: str | None = None
    tags: tuple[str, ...] = attrs.field(factory=tuple)


def test_a_new_attrs_record_needs_no_registration() -> None:
    body = {
        "refundId": "r-1",
        "amount": 0.99,
        "refundedAt": "2024-01-02T03:04:05.1234567Z",
        "user": {"identityType": "pub", "identityValue": "u"},
        "lines": [{"productId": "9NBLGGH4R315", "skuId": "0010"}],
    }
    expected = _Refund(
        refund_id="r-1",
        amount=Decimal("0.99"),
        refunded_at=datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        user=IdentityV6(identity_type="pub", identity_value="u"),
        lines=(ProductKey(product_id="9NBLGGH4R315", sku_id="0010"),),
    )
    assert codec.loads(orjson.dumps(body), _Refund) == expected
    # Any casing, unknown fields, and the same errors as every other record.
    shouted = {key.upper(): value for key, value in body.items()} | {"extra": [1]}
    assert codec.structure(shouted, _Refund) == expected
    assert failure({**body, "lines": [{"productId": 1, "skuId": "0010"}]}, _Refund) == (
        "_Refund: $.lines[0].productId: expected a string, got number"
    )
    assert orjson.loads(codec.dumps(expected)) == {**body, "amount": 0.99, "tags": [],
        "refundedAt": "2024-01-02T03:04:05.123456+00:00"}  # fmt: skip


def test_exact_names_and_any_casing_give_the_same_record() -> None:
    body = item_json()
    exact = codec.structure(body, CollectionItem)
    lowered = codec.structure({key.lower(): value for key, value in body.items()}, CollectionItem)
    mixed = codec.structure({**body, "ItemId": body["itemId"]}, CollectionItem)  # a duplicate
    assert exact == lowered == mixed
    # A date-time string seen before gives an equal value (parsed once, then remembered).
    assert codec.structure(body, CollectionItem).acquired_date == exact.acquired_date


# -- records built slot by slot: exactly what their attrs __init__ would do --


@attrs.frozen(kw_only=True)
class _Converted:
    name: str = attrs.field(converter=str.strip)
    labels: tuple[str, ...] = attrs.field(factory=list, converter=tuple)


@attrs.frozen(kw_only=True)
class _Validated:
    name: str
    count: int = attrs.field(default=1, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class _ValidatedWithFactory:
    name: str = attrs.field(validator=attrs.validators.min_len(1))
    labels: tuple[str, ...] = attrs.field(factory=lambda: ("default",))
    note: str | None = None


@attrs.frozen(kw_only=True)
class _Checked:
    name: str

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")


def test_converters_apply_to_given_and_default_values_alike() -> None:
    assert codec._settable(_Converted) is not None  # built slot by slot, not by a call
    record = codec.structure({"name": "  a  "}, _Converted)
    assert record == _Converted(name="a")
    assert record.labels == ()
    assert type(record.labels) is tuple  # the factory's list, converted as attrs converts it
    assert codec.structure({"name": "b", "labels": ["x"]}, _Converted).labels == ("x",)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.name = "c"  # type: ignore[misc]


def test_validators_and_post_init_hooks_still_run() -> None:
    assert codec._settable(_Validated) is None
    assert codec._settable(_Checked) is None
    assert codec._settable(_ValidatedWithFactory) is None  # built by a call to the class
    for body, expected in [
        ({"name": "a"}, _ValidatedWithFactory(name="a")),  # absent: attrs calls the factory
        ({"Name": "a", "labels": ["x"]}, _ValidatedWithFactory(name="a", labels=("x",))),
        ({"name": "a", "note": "n", "x": 1}, _ValidatedWithFactory(name="a", note="n")),
    ]:
        assert codec.structure(body, _ValidatedWithFactory) == expected
    assert codec.structure({"name": "a"}, _ValidatedWithFactory).labels == ("default",)
    assert "Length of 'name' must be >= 1" in failure({"name": ""}, _ValidatedWithFactory)
    assert codec.structure({"name": "a", "count": 2}, _Validated).count == 2
    assert "must be > 0" in failure({"name": "a", "count": 0}, _Validated)
    assert failure({"name": ""}, _Checked) == "_Checked: $: name must not be empty"


def test_only_another_spelling_of_a_name_takes_the_any_casing_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lowered: list[int] = []
    real = codec._lower

    def counting(value: dict[Any, Any]) -> dict[str, Any]:
        lowered.append(len(value))
        return real(value)

    monkeypatch.setattr(codec, "_lower", counting)
    body = item_json()
    unknown = codec.structure({**body, "brandNewField": 1, "isTrial": False}, CollectionItem)
    assert (unknown, lowered) == (codec.structure(body, CollectionItem), [])
    respelled = {**body, "ItemID": "other"}  # a later spelling wins, as in JSON
    assert codec.structure(respelled, CollectionItem).item_id == "other"
    assert lowered == [len(respelled)]


# -- the generated functions' shortcuts change nothing --


def test_a_record_filled_on_its_scaffold_is_exactly_its_class() -> None:
    # CollectionItem is filled by plain assignment on a slot-less subclass, then switched to its
    # class: the result is indistinguishable from what the attrs __init__ builds.
    assert codec._scaffold(CollectionItem) is not None
    body = item_json(purchaser={"identityType": "pub", "identityValue": "u"}, tags=["a"])
    page = codec.structure({"items": [body, body]}, QueryResult)
    built = CollectionItem(
        item_id=body["itemId"],
        product_id=body["productId"],
        sku_id=body["skuId"],
        product_type=body["productType"],
        sku_type=body["skuType"],
        status=body["status"],
        ownership_type=body["ownershipType"],
        local_ticket_reference="ref",
        transaction_id=body["transactionId"],
        acquired_date=codec.parse_datetime(WHEN),
        start_date=codec.parse_datetime(WHEN),
        end_date=codec.parse_datetime(WHEN),
        modified_date=codec.parse_datetime(WHEN),
        tags=("a",),
        purchaser=IdentityV6(identity_type="pub", identity_value="u"),
    )
    assert (type(page), type(page.items)) == (QueryResult, tuple)
    for item in page.items:
        assert (type(item), type(item.purchaser)) == (CollectionItem, IdentityV6)
        assert (item, hash(item), repr(item)) == (built, hash(built), repr(built))
        assert attrs.asdict(item) == attrs.asdict(built)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            item.status = "Revoked"  # type: ignore[misc]
    # No scaffold instance is ever handed out, even when a converter fails halfway.
    assert failure({"name": 5}, _Converted) == "_Converted: $.name: expected a string, got number"


class _Registry(type):
    """A metaclass: a class that is not a plain ``type`` gets no scaffold."""


@attrs.frozen(kw_only=True)
class _Registered(metaclass=_Registry):
    name: str
    labels: tuple[str, ...] = ()


class _Base:
    subclassed: ClassVar[list[type]] = []

    def __init_subclass__(cls) -> None:
        _Base.subclassed.append(cls)


@attrs.frozen(kw_only=True)
class _Watched(_Base):
    name: str


def test_records_without_a_scaffold_are_set_slot_by_slot() -> None:
    # The codec must not subclass a class whose metaclass or base might notice.
    assert (codec._scaffold(_Registered), codec._scaffold(_Watched)) == (None, None)
    assert codec._settable(_Registered) is not None
    assert codec._settable(_Watched) is not None
    record = codec.structure({"NAME": "a", "labels": ["x"]}, _Registered)
    assert (type(record), record) == (_Registered, _Registered(name="a", labels=("x",)))
    assert codec.structure({"name": "b"}, _Watched) == _Watched(name="b")
    # attrs subclassed it once (the slotted class replaces the one in the source); we never did.
    assert {cls.__name__ for cls in _Base.subclassed} == {"_Watched"}


def _counted(value: Any) -> tuple[Any, ...]:
    _counted.calls += 1  # type: ignore[attr-defined]
    return tuple(value)


_counted.calls = 0  # type: ignore[attr-defined]


def _uncounted(value: Any) -> tuple[Any, ...]:
    _uncounted.calls += 1  # type: ignore[attr-defined]
    return tuple(value)


_uncounted.calls = 0  # type: ignore[attr-defined]
_checks.keeps_tuples(_counted)


@attrs.frozen(kw_only=True)
class _Lists:
    kept: tuple[str, ...] = attrs.field(default=(), converter=_counted)
    called: tuple[str, ...] = attrs.field(default=(), converter=_uncounted)
    made: tuple[str, ...] = attrs.field(factory=tuple, converter=_counted)


def test_a_converter_that_keeps_tuples_is_not_called_on_the_codecs_tuple() -> None:
    expected = _Lists(kept=("a",), called=("b",), made=("c",))
    _counted.calls = _uncounted.calls = 0  # type: ignore[attr-defined]
    record = codec.structure({"kept": ["a"], "called": ["b"], "made": ["c"]}, _Lists)
    # _counted is marked: skipped where the codec built the tuple, still called on a field
    # whose default comes from a factory (its value is unknown to the codec); _uncounted is not
    # marked: called.
    assert (_counted.calls, _uncounted.calls) == (1, 1)  # type: ignore[attr-defined]
    assert record == expected
    assert type(record.kept) is tuple
    empty = _Lists()
    _counted.calls = _uncounted.calls = 0  # type: ignore[attr-defined]
    assert codec.structure({}, _Lists) == empty
    # Absent: the tuple default needs no call, the factory's value does, as does _uncounted.
    assert (_counted.calls, _uncounted.calls) == (1, 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("converter", sorted(_checks.TUPLE_KEEPERS, key=repr), ids=repr)
def test_every_marked_converter_hands_back_its_tuple(converter: Any) -> None:
    for value in ((), ("a", "b"), (USER, None, 1)):
        assert converter(value) is value


def test_only_the_projects_tuple_converters_are_marked() -> None:
    from store_async.models import consume, licenses, orders, purchase, query, subscriptions

    marked = {query._strings, query._items, licenses._tuple, orders._tuple}
    marked |= {purchase._line_items, subscriptions._items, consume._order_transactions}
    assert marked <= _checks.TUPLE_KEEPERS
    # Converters that may hand back something else are not.
    assert licenses._optional_tuple not in _checks.TUPLE_KEEPERS


def test_a_cached_date_time_is_the_value_parsing_gives() -> None:
    texts = [
        "2015-09-22T19:22:51.2068724+00:00",
        "9999-12-31T23:59:59.9999999+00:00",
        "2015-10-13T21:21:51Z",
        "2015-10-13T21:21:51.1+05:30",
        "2015-10-13T21:21:51",
        "/Date(1444771311186-0730)/",
    ]
    codec._DATES.clear()
    for text in texts:
        first = codec.structure(item_json(endDate=text), CollectionItem).end_date  # parsed
        assert codec._DATES[text] is first
        again = codec.structure(item_json(endDate=text), CollectionItem).end_date  # remembered
        parsed = codec.parse_datetime(text)
        assert again is first
        assert (again, again.utcoffset(), again.tzinfo) == (
            parsed,
            parsed.utcoffset(),
            parsed.tzinfo,
        )
    # A bad date-time is never remembered: the same text fails the same way every time.
    for _ in range(2):
        assert failure(item_json(endDate="2015-13-01"), CollectionItem) == (
            "CollectionItem: $.endDate: expected an ISO-8601 date-time, got '2015-13-01'"
        )
    assert "2015-13-01" not in codec._DATES


def test_the_date_time_cache_is_bounded() -> None:
    codec._DATES.clear()
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for second in range(codec._DATE_CACHE_SIZE + 10):
        when = base + timedelta(seconds=second)
        text = when.isoformat()
        assert codec.structure(item_json(startDate=text), CollectionItem).start_date == when
        assert len(codec._DATES) <= codec._DATE_CACHE_SIZE


def test_a_bad_value_under_a_name_spelled_twice_is_read_in_any_casing() -> None:
    # The exact-name pass converts values before it looks for other spellings; a value it
    # refuses is then read again in any casing, where the later spelling wins, as before.
    body = item_json(campaignId=5, CampaignID="c", tags=[1], TAGS=["t"], Purchaser={"x": 1})
    body["purchaser"] = {"identityType": "pub", "identityValue": "u"}  # the later spelling
    record = codec.structure(body, CollectionItem)
    assert (record.campaign_id, record.tags) == ("c", ("t",))
    assert record.purchaser == IdentityV6(identity_type="pub", identity_value="u")
    assert failure(item_json(campaignId="c", CAMPAIGNID=5), CollectionItem) == (
        "CollectionItem: $.campaignId: expected a string, got number"
    )


@pytest.mark.parametrize(
    "purchaser",
    [
        {"identityType": "pub", "identityValue": "u"},  # built inside CollectionItem's function
        {"identityValue": "u", "identityType": "pub"},
        {"IDENTITYTYPE": "pub", "identityValue": "u"},  # another spelling: its own function
        {"identityType": "pub", "identityValue": "u", "since": 2015},  # an unknown name too
        {"identityType": "x", "identityValue": "u", "IdentityType": "pub"},  # the later wins
    ],
)
def test_a_small_nested_record_reads_like_any_record(purchaser: dict[str, Any]) -> None:
    item = codec.structure(item_json(purchaser=purchaser), CollectionItem)
    assert type(item.purchaser) is IdentityV6
    assert item.purchaser == IdentityV6(identity_type="pub", identity_value="u")


@pytest.mark.parametrize(
    ("purchaser", "message"),
    [
        ({"identityType": 1, "identityValue": "u"}, ".identityType: expected a string, got number"),
        (
            {"identityType": "p", "identityValue": None},
            ".identityValue: expected a string, got null",
        ),
        (
            {"identityType": "p", "IdentityValue": 2},
            ".identityValue: expected a string, got number",
        ),
        ({"identityType": "p", "x": "u"}, ".identityValue: required field missing"),
        (["pub", "u"], ": expected an object, got array"),
    ],
)
def test_a_small_nested_record_fails_like_any_record(purchaser: Any, message: str) -> None:
    assert failure(item_json(purchaser=purchaser), CollectionItem) == (
        f"CollectionItem: $.purchaser{message}"
    )


def test_loads_takes_its_arguments_by_the_names_issue_14_gives_them() -> None:
    """The contract is ``store_async.codec.loads(data: bytes, cls)``: by keyword as well."""
    renewed = codec.loads(data=b'{"key": "eyJ-renewed"}', cls=KeyRenewalResponse)
    assert renewed == KeyRenewalResponse(key="eyJ-renewed")
