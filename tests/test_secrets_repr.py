"""No secret (Store ID key, service ticket, b2b key) ever shows in a record's repr/str, in an
error message about it, or in a codec error about a body that carries it."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from store_async import codec
from store_async.errors import ResponseFormatError, ValidationError
from store_async.models import (
    ConsumeRequest,
    EntitlementQuery,
    GrantRequest,
    KeyRenewalRequest,
    KeyRenewalResponse,
    LicenseQuery,
    OfflineLicense,
    OrderQuery,
    ProductKey,
    ProductSkuId,
    QueryRequest,
    RefundQueueSas,
    SubscriptionChange,
    SubscriptionQuery,
    UserIdentity,
)

# Realistic-looking secrets: a collections key, a purchase key, an access token.
COLLECTIONS_KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.COLLECTIONS-KEY-PAYLOAD.c2ln"
PURCHASE_KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.PURCHASE-KEY-PAYLOAD.c2ln"
SERVICE_TICKET = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFDQ0VTUy1UT0tFTiJ9.TICKET-PAYLOAD.c2ln"
RENEWED_KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.RENEWED-KEY-PAYLOAD.c2ln"
SECRETS = (COLLECTIONS_KEY, PURCHASE_KEY, SERVICE_TICKET, RENEWED_KEY)

# Every secret attribute of every record. The test below also catches a new secret-looking
# field that someone forgets to add here.
SECRET_FIELDS = {
    UserIdentity: {"identity_value"},
    GrantRequest: {"b2b_key"},
    KeyRenewalRequest: {"service_ticket", "key"},
    KeyRenewalResponse: {"key"},
    SubscriptionQuery: {"b2b_key"},
    SubscriptionChange: {"b2b_key"},
    OrderQuery: {"b2b_key"},
    RefundQueueSas: {"uri"},  # its sig= parameter
}

USER = UserIdentity(identity_value=COLLECTIONS_KEY, local_ticket_reference="user-42")
RECORDS_WITH_SECRETS: list[Any] = [
    USER,
    ConsumeRequest.for_item(USER, "4b8fbb13127a41f299270ea668681c1d"),
    ConsumeRequest.for_transaction(USER, "9NBLGGH5WVP6", "08a14c7c-1892-49fc-9135-190ca4f10490"),
    QueryRequest(beneficiaries=[USER, USER], product_types=["Durable"]),
    GrantRequest(
        availability_id="9RT7C09D5J3W",
        b2b_key=PURCHASE_KEY,
        language="en-us",
        market="us",
        product_id="9NBLGGH5WVP6",
        sku_id="0010",
    ),
    KeyRenewalRequest(service_ticket=SERVICE_TICKET, key=COLLECTIONS_KEY),
    KeyRenewalResponse(key=RENEWED_KEY),
    ConsumeRequest.for_quantity(USER, "9NCOINS00001", 3, sandbox_id="XDKS.1"),
    SubscriptionQuery(b2b_key=PURCHASE_KEY),
    SubscriptionChange(b2b_key=PURCHASE_KEY, change_type="Extend", extension_time_in_days=5),
    OrderQuery(b2b_key=PURCHASE_KEY, line_item_state_filter=["Refunded"]),
    LicenseQuery(beneficiaries=[USER], product_sku_ids=[ProductSkuId(product_id="p", sku_id="s")]),
    EntitlementQuery(beneficiaries=[USER], product_sku_ids=[ProductSkuId(product_id="p")]),
]


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret[-24:] not in text  # not even a tail of it


@pytest.mark.parametrize("record", RECORDS_WITH_SECRETS, ids=lambda r: type(r).__name__)
def test_repr_and_str_never_show_a_secret(record: Any) -> None:
    _assert_no_secret(repr(record))
    _assert_no_secret(str(record))
    _assert_no_secret(f"{record!r} {record!s} {record}")
    assert "<redacted>" in repr(record)


@pytest.mark.parametrize("record", RECORDS_WITH_SECRETS, ids=lambda r: type(r).__name__)
def test_the_secret_is_still_there_for_the_wire(record: Any) -> None:
    # Redaction is display-only: the body carries the key.
    body = codec.dumps(record)
    assert any(secret.encode() in body for secret in SECRETS)


def test_every_secret_looking_field_is_listed_and_redacted() -> None:
    import store_async.models as models

    for name in models.__all__:
        cls = getattr(models, name)
        if name in {"RefundEventState", "redact_sas"}:  # an enum and a function
            continue
        for field in attrs.fields(cls):
            looks_secret = field.name in {"key", "b2b_key", "service_ticket", "token"} or (
                (cls is UserIdentity and field.name == "identity_value")
                or (cls is RefundQueueSas and field.name == "uri")
            )
            listed = field.name in SECRET_FIELDS.get(cls, set())
            assert looks_secret == listed, f"{name}.{field.name}"
            if listed:
                assert field.repr is not True, f"{name}.{field.name} is shown by repr"


def test_a_license_blob_shows_only_its_length() -> None:
    blob = "PD94bWwgdmVyc2lvbj0iMS4wIj8+" * 100
    license_ = OfflineLicense(
        product_key=ProductKey(product_id="p", sku_id="s"),
        license_blob=blob,
        license_instance_id="1",
        requestor_id="org",
        content_id="c",
    )
    assert blob[:28] not in repr(license_)
    assert f"license_blob=<{len(blob)} characters>" in repr(license_)


@pytest.mark.parametrize(
    "build",
    [
        lambda: GrantRequest(
            availability_id="a",
            b2b_key=PURCHASE_KEY,
            language="en-us",
            market="us",
            product_id="p",
            sku_id="s",
            order_id=PURCHASE_KEY,  # a key pasted in the wrong field
        ),
        lambda: ConsumeRequest.for_item(USER, "item", tracking_id=COLLECTIONS_KEY),
        lambda: ConsumeRequest.for_transaction(USER, "p", SERVICE_TICKET),
        lambda: QueryRequest(beneficiaries=[COLLECTIONS_KEY], product_types=["Durable"]),
        lambda: QueryRequest(beneficiaries=[USER], product_types=[SERVICE_TICKET, ""]),
        lambda: UserIdentity(identity_value=COLLECTIONS_KEY, local_ticket_reference=""),
        lambda: KeyRenewalRequest(service_ticket=SERVICE_TICKET, key=" "),
    ],
)
def test_validation_errors_never_quote_a_secret(build: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        build()
    _assert_no_secret(str(caught.value))
    _assert_no_secret(repr(caught.value))


@pytest.mark.parametrize(
    "body",
    [
        b'{"key": "' + RENEWED_KEY.encode(),  # truncated
        b'{"key": ["' + RENEWED_KEY.encode() + b'"]}',  # wrong type
        b'{"Key": {"value": "' + RENEWED_KEY.encode() + b'"}}',
        b'["' + RENEWED_KEY.encode() + b'"]',
        b'"' + RENEWED_KEY.encode() + b'"',
    ],
)
def test_codec_errors_never_quote_a_secret(body: bytes) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        codec.loads(body, KeyRenewalResponse)
    _assert_no_secret(str(caught.value))
    _assert_no_secret(repr(caught.value))
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
