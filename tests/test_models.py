"""The records: construction, validation of request records, immutability."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

import store_async.errors
import store_async.models as models
from store_async.errors import ValidationError
from store_async.models import (
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    KeyRenewalRequest,
    ProductSkuId,
    QueryRequest,
    QueryResult,
    UserIdentity,
)

USER = UserIdentity(identity_value="eyJ0eXAiOiJKV1Qi.key", local_ticket_reference="ref-1")
TRACKING = "44db79ca-e31d-49e9-8896-fa5c7f892b40"


def test_models_export_every_contract_name() -> None:
    assert set(models.__all__) == {
        "ClientContext",
        "CollectionItem",
        "ConsumeRequest",
        "ConsumeResult",
        "ConsumeV8Response",
        "OrderTransaction",
        "EntitlementItem",
        "EntitlementPage",
        "EntitlementQuery",
        "LicenseItem",
        "LicensePage",
        "LicenseQuery",
        "TrialData",
        "OrderPage",
        "OrderQuery",
        "PurchaseLineItem",
        "PurchaseOrder",
        "Subscription",
        "SubscriptionChange",
        "SubscriptionPage",
        "SubscriptionQuery",
        "GrantRequest",
        "IdentityV6",
        "InnerError",
        "KeyRenewalRequest",
        "KeyRenewalResponse",
        "OfflineLicense",
        "Order",
        "OrderLineItem",
        "ProductKey",
        "ProductSkuId",
        "QueryRequest",
        "QueryResult",
        "RefundEvent",
        "RefundEventData",
        "RefundEventState",
        "RefundQueueSas",
        "RefundRecurrenceData",
        "ServiceError",
        "UserIdentity",
        "redact_sas",
    }
    # The service error body records are re-exported, not duplicated.
    assert models.ServiceError is store_async.errors.ServiceError
    assert models.InnerError is store_async.errors.InnerError


NOT_RECORDS = {"ServiceError", "InnerError", "RefundEventState", "redact_sas"}


@pytest.mark.parametrize("name", sorted(set(models.__all__) - NOT_RECORDS))
def test_records_are_frozen_slotted_keyword_only(name: str) -> None:
    cls = getattr(models, name)
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    assert all(field.kw_only for field in attrs.fields(cls))
    with pytest.raises(TypeError):
        cls("positional")


def test_records_cannot_be_changed() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        USER.local_ticket_reference = "other"  # type: ignore[misc]


def test_user_identity_defaults_to_b2b() -> None:
    assert USER.identity_type == "b2b"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"identity_value": "", "local_ticket_reference": "r"}, "identity_value must not be empty"),
        (
            {"identity_value": " ", "local_ticket_reference": "r"},
            "identity_value must not be empty",
        ),
        (
            {"identity_value": b"key", "local_ticket_reference": "r"},
            "identity_value must be a string, not bytes",
        ),
        ({"identity_value": "k", "local_ticket_reference": ""}, "local_ticket_reference"),
        ({"identity_value": "k", "local_ticket_reference": "r", "identity_type": ""}, "type"),
    ],
)
def test_user_identity_refuses_empty_or_mistyped_fields(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        UserIdentity(**fields)  # type: ignore[arg-type]


def test_product_sku_id_requires_both_ids() -> None:
    with pytest.raises(ValidationError, match=r"ProductSkuId\.sku_id must not be empty"):
        ProductSkuId(product_id="9NBLGGH42CFD", sku_id="")


# -- QueryRequest --


def test_query_request_stores_lists_as_tuples() -> None:
    request = QueryRequest(
        beneficiaries=[USER],
        product_types=["Durable", "UnmanagedConsumable"],
        product_sku_ids=[ProductSkuId(product_id="9NBLGGH42CFD", sku_id="0010")],
    )
    assert request.beneficiaries == (USER,)
    assert request.product_types == ("Durable", "UnmanagedConsumable")
    assert request.product_sku_ids == (ProductSkuId(product_id="9NBLGGH42CFD", sku_id="0010"),)
    assert request.continuation_token is None
    assert request.max_page_size is None


def test_query_request_accepts_any_iterable() -> None:
    request = QueryRequest(beneficiaries=iter([USER]), product_types=(t for t in ["Game"]))
    assert request.beneficiaries == (USER,)
    assert request.product_types == ("Game",)


def test_query_request_refuses_a_bare_string_for_a_list() -> None:
    # tuple("Durable") would silently become ('D', 'u', 'r', ...).
    with pytest.raises(ValidationError, match=r"product_types must be a list, not a single str"):
        QueryRequest(beneficiaries=[USER], product_types="Durable")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"beneficiaries": []}, "beneficiaries needs at least one user"),
        ({"beneficiaries": ["key"]}, r"beneficiaries\[0\] must be a UserIdentity, not str"),
        ({"product_types": []}, "product_types needs at least one product type"),
        ({"product_types": ["Durable", ""]}, r"product_types\[1\] must not be empty"),
        ({"product_types": 5}, "product_types must be a list or another iterable, not int"),
        ({"max_page_size": 0}, "max_page_size must be an integer from 1 to 100"),
        ({"max_page_size": 101}, "max_page_size must be an integer from 1 to 100"),
        ({"max_page_size": True}, "max_page_size must be an integer from 1 to 100"),
        ({"max_page_size": 10.0}, "max_page_size must be an integer from 1 to 100"),
        ({"modified_after": datetime(2024, 1, 1)}, "modified_after must be timezone-aware"),
        ({"modified_after": "2024-01-01"}, "modified_after must be a datetime, not str"),
        ({"continuation_token": ""}, "continuation_token must not be empty"),
        ({"product_sku_ids": [("9NBLGGH42CFD", "0010")]}, r"product_sku_ids\[0\] must be a"),
        ({"validity_type": 1}, "validity_type must be a string, not int"),
    ],
)
def test_query_request_refuses_bad_values(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"beneficiaries": [USER], "product_types": ["Durable"]}
    arguments.update(fields)
    with pytest.raises(ValidationError, match=message):
        QueryRequest(**arguments)  # type: ignore[arg-type]


def test_query_request_page_size_limits_are_inclusive() -> None:
    assert QueryRequest(beneficiaries=[USER], product_types=["Durable"], max_page_size=1)
    assert QueryRequest(beneficiaries=[USER], product_types=["Durable"], max_page_size=100)


def test_with_continuation_changes_only_the_token() -> None:
    first = QueryRequest(
        beneficiaries=[USER],
        product_types=["Durable"],
        max_page_size=10,
        modified_after=datetime(2024, 1, 1, tzinfo=UTC),
    )
    second = first.with_continuation("page-2")
    assert second.continuation_token == "page-2"
    assert attrs.evolve(second, continuation_token=None) == first
    assert first.continuation_token is None


def test_query_result_defaults_to_an_empty_page() -> None:
    assert QueryResult() == QueryResult(items=[], continuation_token=None)
    assert QueryResult().items == ()


# -- ConsumeRequest --


def test_for_item_generates_a_random_version_4_tracking_id() -> None:
    first = ConsumeRequest.for_item(USER, "4b8fbb13127a41f299270ea668681c1d")
    second = ConsumeRequest.for_item(USER, "4b8fbb13127a41f299270ea668681c1d")
    assert first.tracking_id is not None
    parsed = uuid.UUID(first.tracking_id)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == first.tracking_id  # lowercase, hyphenated
    assert first.tracking_id != second.tracking_id
    assert first.item_id == "4b8fbb13127a41f299270ea668681c1d"
    assert first.product_id is None
    assert first.transaction_id is None


def test_for_item_draws_the_tracking_id_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.urandom", lambda n: bytes(range(n)))
    request = ConsumeRequest.for_item(USER, "item")
    assert request.tracking_id == str(uuid.UUID(bytes=bytes(range(16)), version=4))
    assert request.tracking_id == "00010203-0405-4607-8809-0a0b0c0d0e0f"


def test_for_item_keeps_a_given_tracking_id() -> None:
    request = ConsumeRequest.for_item(USER, "item", tracking_id=TRACKING)
    assert request.tracking_id == TRACKING
    assert request.idempotency_key == TRACKING


@pytest.mark.parametrize(
    "spelling",
    [
        uuid.UUID(TRACKING),
        TRACKING.upper(),
        "{" + TRACKING + "}",
        TRACKING.replace("-", ""),
        TRACKING.replace("-", "").upper(),
    ],
)
def test_guids_are_normalised_to_lowercase_hyphenated(spelling: str | uuid.UUID) -> None:
    assert ConsumeRequest.for_item(USER, "item", spelling).tracking_id == TRACKING
    by_transaction = ConsumeRequest.for_transaction(USER, "9NBLGGH5WVP6", spelling)
    assert by_transaction.transaction_id == TRACKING
    assert by_transaction.idempotency_key == TRACKING


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-guid",
        TRACKING[:-1],
        TRACKING + "0",
        "{" + TRACKING,
        TRACKING.replace("-", "_"),
        " " + TRACKING,
        TRACKING + "\n",
        "g" * 32,
    ],
)
def test_malformed_tracking_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="tracking_id must be a GUID such as") as caught:
        ConsumeRequest.for_item(USER, "item", bad)
    assert f"{len(bad)}-character string" in str(caught.value)


def test_a_tracking_id_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"must be a GUID string or a uuid\.UUID, not int"):
        ConsumeRequest.for_item(USER, "item", 1234)  # type: ignore[arg-type]


def test_for_transaction() -> None:
    request = ConsumeRequest.for_transaction(
        USER, "9NBLGGH5WVP6", "08a14c7c-1892-49fc-9135-190ca4f10490"
    )
    assert request.product_id == "9NBLGGH5WVP6"
    assert request.transaction_id == "08a14c7c-1892-49fc-9135-190ca4f10490"
    assert request.item_id is None
    assert request.tracking_id is None
    assert request.idempotency_key == "08a14c7c-1892-49fc-9135-190ca4f10490"


def test_for_transaction_requires_a_transaction_id() -> None:
    with pytest.raises(ValidationError, match="for_transaction needs a transaction_id"):
        ConsumeRequest.for_transaction(USER, "9NBLGGH5WVP6", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, r"give either item_id \+ tracking_id .* or product_id \+ transaction_id"),
        ({"item_id": "item"}, r"item_id needs a tracking_id; use ConsumeRequest.for_item"),
        ({"tracking_id": TRACKING}, r"tracking_id needs an item_id \(the itemId from a query\)"),
        ({"product_id": "9NBLGGH5WVP6"}, "product_id needs a transaction_id"),
        ({"transaction_id": TRACKING}, "transaction_id needs a product_id"),
        ({"item_id": 5, "tracking_id": TRACKING}, "item_id must be a string, not int"),
        ({"item_id": "", "tracking_id": TRACKING}, "item_id must not be empty"),
        ({"product_id": " ", "transaction_id": TRACKING}, "product_id must not be empty"),
        (
            {"item_id": "item", "tracking_id": TRACKING, "product_id": "p"},
            r"or product_id \+ transaction_id .*, not both",
        ),
        ({"item_id": "i", "transaction_id": TRACKING}, "not both"),
        ({"transaction_id": "nope", "product_id": "p"}, "transaction_id must be a GUID"),
    ],
)
def test_consume_forms_are_exclusive_and_complete(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ConsumeRequest(beneficiary=USER, **fields)


def test_consume_beneficiary_must_be_a_user_identity() -> None:
    with pytest.raises(ValidationError, match="beneficiary must be a UserIdentity, not str"):
        ConsumeRequest.for_item("eyJ0eXAi", "item")  # type: ignore[arg-type]


def test_validation_error_is_a_value_error_and_was_not_sent() -> None:
    with pytest.raises(ValueError, match="tracking_id") as caught:
        ConsumeRequest.for_item(USER, "item", "nope")
    assert caught.value.kind is store_async.errors.FailureKind.NOT_SENT


def test_consume_result() -> None:
    result = ConsumeResult(tracking_id=TRACKING, transaction_id=None, attempts=2, cv="x.1")
    assert (result.attempts, result.correlation_id, result.request_id, result.cv) == (
        2,
        None,
        None,
        "x.1",
    )


# -- GrantRequest --

GRANT = {
    "availability_id": "9RT7C09D5J3W",
    "b2b_key": "eyJ0eXAiOiJK.purchase",
    "language": "en-us",
    "market": "us",
    "product_id": "9NBLGGH5WVP6",
    "sku_id": "0010",
}


def test_grant_request_generates_an_order_id() -> None:
    first = GrantRequest(**GRANT)
    second = GrantRequest(**GRANT)
    assert uuid.UUID(first.order_id).version == 4
    assert str(uuid.UUID(first.order_id)) == first.order_id
    assert first.order_id != second.order_id
    assert first.idempotency_key == first.order_id
    assert first.quantity == 1
    assert first.dev_offer_id is None


def test_grant_request_keeps_and_normalises_a_given_order_id() -> None:
    given = uuid.UUID("3eea1529-611e-4aee-915c-345494e4ee76")
    assert GrantRequest(**GRANT, order_id=given).order_id == str(given)
    assert GrantRequest(**GRANT, order_id=str(given).upper()).order_id == str(given)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantity": 2}, "quantity must be 1"),
        ({"quantity": 0}, "quantity must be 1"),
        ({"quantity": True}, "quantity must be 1"),
        ({"order_id": "order-1"}, "order_id must be a GUID"),
        ({"b2b_key": ""}, "b2b_key must not be empty"),
        ({"market": None}, "market must be a string, not NoneType"),
        ({"dev_offer_id": ""}, "dev_offer_id must not be empty"),
    ],
)
def test_grant_request_refuses_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GrantRequest(**{**GRANT, **fields})  # type: ignore[arg-type]


def test_key_renewal_request_requires_both_secrets() -> None:
    with pytest.raises(ValidationError, match=r"KeyRenewalRequest\.key must not be empty"):
        KeyRenewalRequest(service_ticket="eyJ0", key="")
    with pytest.raises(ValidationError, match="service_ticket must be a string, not NoneType"):
        KeyRenewalRequest(service_ticket=None, key="eyJ0")  # type: ignore[arg-type]


def test_response_records_take_what_they_are_given() -> None:
    # Response records are built by the codec, which checks JSON types; construction stays cheap.
    when = datetime(2015, 9, 22, 19, 22, 51, tzinfo=timezone(timedelta(hours=-7)))
    item = CollectionItem(
        item_id="i",
        product_id="p",
        sku_id="s",
        product_type="SomethingNew",
        sku_type="Full",
        status="Suspended",
        ownership_type="OwnedByBeneficiary",
        local_ticket_reference="r",
        transaction_id="t",
        acquired_date=when,
        start_date=when,
        end_date=when,
        modified_date=when,
        tags=["a"],
    )
    assert item.tags == ("a",)
    assert item.fulfillment_data == ()
    assert item.purchaser is None


def test_the_hot_path_consume_result_is_the_same_frozen_record() -> None:
    from store_async.models.consume import consume_result

    fast = consume_result("a" * 8, None, 2, "corr", None, "cv")
    built = ConsumeResult(
        tracking_id="a" * 8, transaction_id=None, attempts=2, correlation_id="corr", cv="cv"
    )
    assert type(fast) is ConsumeResult
    assert fast == built
    assert hash(fast) == hash(built)
    assert repr(fast) == repr(built)
    assert attrs.asdict(fast) == attrs.asdict(built)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.attempts = 3  # type: ignore[misc]
    assert not hasattr(fast, "__dict__")


def test_generated_tracking_ids_are_canonical_random_version_4_guids() -> None:
    from uuid import UUID

    ids = [ConsumeRequest.for_item(USER_FOR_GUIDS, "item").tracking_id for _ in range(2000)]
    assert len(set(ids)) == 2000
    for text in ids:
        assert text is not None
        parsed = UUID(text)
        assert (parsed.version, parsed.variant) == (4, "specified in RFC 4122")
        assert str(parsed) == text  # lowercase, hyphenated 8-4-4-4-12


USER_FOR_GUIDS = UserIdentity(identity_value="key", local_ticket_reference="ref")
