"""Refund records and message decoding: SAS redaction, event states, base64 variants, rejections."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from store_async.codec import loads, structure
from store_async.errors import ResponseFormatError, ValidationError
from store_async.models import (
    RefundEvent,
    RefundEventState,
    RefundQueueSas,
    RefundRecurrenceData,
    redact_sas,
)
from store_async.refunds import DecodedEvent, Rejection, decode_message
from store_async.refunds.message import decode_text

SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
URI = f"https://acct.queue.core.windows.net:443/refunds?sv=2021-08-06&sp=rp&se=x&sig={SIGNATURE}"

EVENT = {
    "id": "5f0c3e8a-1c1b-4f7e-9d5b-0a9e8f7d6c5b",
    "source": "/Purchase/Refund",
    "type": "ClawbackEventContractV2",
    "time": "2024-12-03T10:11:12.1234567+00:00",
    "specversion": "1.0",
    "datacontenttype": "application/json",
    "subject": "/orders/1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "data": {
        "lineItemId": "line-1",
        "orderId": "order-1",
        "productId": "9NBLGGH4R315",
        "skuId": "0010",
        "productType": "Consumable",
        "purchasedDate": "2024-11-30T08:00:00Z",
        "eventDate": "2024-12-03T10:11:12Z",
        "sandboxId": "RETAIL",
        "eventState": "Revoked",
    },
}


def with_state(state: object) -> dict[str, object]:
    return {**EVENT, "data": {**EVENT["data"], "eventState": state}}  # type: ignore[dict-item]


def test_the_sas_answer_parses_with_minute_precision_and_hides_its_signature() -> None:
    sas = loads(orjson.dumps({"expiresOn": "2022-12-09T02:13Z", "uri": URI}), RefundQueueSas)
    assert sas.expires_on == datetime(2022, 12, 9, 2, 13, tzinfo=UTC)
    assert sas.uri == URI
    for shown in (repr(sas), str(sas), sas.redacted_uri, f"{sas}"):
        assert SIGNATURE not in shown
        assert "sig=<redacted>" in shown
    assert "acct.queue.core.windows.net" in repr(sas)


def test_redact_sas_covers_every_spelling_of_the_signature() -> None:
    text = f"a {URI} b SIG=abc&x=1 c sig%3Ddef d 'sig=ghi' <sig=jkl>"
    assert redact_sas(text) == (
        "a https://acct.queue.core.windows.net:443/refunds?sv=2021-08-06&sp=rp&se=x&sig=<redacted>"
        " b SIG=<redacted>&x=1 c sig%3D<redacted> d 'sig=<redacted>' <sig=<redacted>>"
    )


def test_a_sas_answer_without_a_usable_uri_is_a_format_error() -> None:
    with pytest.raises(ResponseFormatError, match=r"\$\.uri"):
        loads(b'{"expiresOn": "2022-12-09T02:13Z", "uri": 5}', RefundQueueSas)
    with pytest.raises(ResponseFormatError, match="http"):
        loads(b'{"expiresOn": "2022-12-09T02:13Z", "uri": "ftp://x/q?sig=s"}', RefundQueueSas)
    with pytest.raises(ValidationError):
        RefundQueueSas(uri="not a url", expires_on=datetime.now(UTC))


@pytest.mark.parametrize(
    ("written", "state"),
    [
        ("Revoked", RefundEventState.REVOKED),
        ("Returned", RefundEventState.RETURNED),
        ("Refunded", RefundEventState.REFUNDED),
        ("ChargebackReversal", RefundEventState.CHARGEBACK_REVERSAL),
        ("Refund", RefundEventState.REFUNDED),  # the tables' spelling
        ("Return", RefundEventState.RETURNED),
        ("revoked", RefundEventState.REVOKED),
        ("PartiallyRevoked", "PartiallyRevoked"),  # unknown: kept as the service's text
    ],
)
def test_event_states_are_the_documented_four_and_unknown_ones_stay_strings(
    written: str, state: RefundEventState | str
) -> None:
    event = structure(with_state(written), RefundEvent)
    assert event.state == state
    assert type(event.state) is type(state)


def test_an_event_keeps_every_documented_field_and_its_bundle_key() -> None:
    recurrence = {
        "recurrenceId": "rec-1",
        "durationIntervalStart": "2024-11-01T00:00:00Z",
        "durationInDays": 30,
        "consumedDurationInDays": 12,
        "refundType": "Partial",
    }
    document = {**EVENT, "data": {**EVENT["data"], "recurrenceData": recurrence}}
    event = structure(document, RefundEvent)
    assert event.id == EVENT["id"]
    assert event.bundle_key == "order-1:line-1:9NBLGGH4R315"
    assert event.type == "ClawbackEventContractV2"
    assert event.time == datetime(2024, 12, 3, 10, 11, 12, 123456, tzinfo=UTC)
    assert event.data.sandbox_id == "RETAIL"
    assert event.data.sku_id == "0010"
    assert event.data.recurrence_data == RefundRecurrenceData(
        recurrence_id="rec-1",
        duration_interval_start=datetime(2024, 11, 1, tzinfo=UTC),
        duration_in_days=30,
        consumed_duration_in_days=12,
        refund_type="Partial",
    )


def message(document: object, alphabet: str = "standard", padded: bool = True) -> str:
    raw = orjson.dumps(document)
    text = (base64.urlsafe_b64encode if alphabet == "url" else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


@pytest.mark.parametrize("alphabet", ["standard", "url"])
@pytest.mark.parametrize("padded", [True, False])
def test_base64_and_base64url_padded_or_not_decode_to_the_same_event(
    alphabet: str, padded: bool
) -> None:
    # A payload whose base64 has both '+' or '/' and padding, so the alphabets really differ.
    document = {**EVENT, "subject": "~~~>>>???"}
    text = message(document, alphabet, padded)
    decoded = decode_message(text)
    assert isinstance(decoded, DecodedEvent)
    assert decoded.json == orjson.dumps(document)
    assert decoded.event.id == EVENT["id"]


def test_the_alphabets_in_the_test_really_differ() -> None:
    raw = orjson.dumps({**EVENT, "subject": "~~~>>>???"})
    assert base64.b64encode(raw) != base64.urlsafe_b64encode(raw)
    assert len(raw) % 3 != 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("this is not base64!", "not base64"),
        ("YWJj+_", "not base64"),  # both alphabets in one text
        ("YWJjZ", "impossible"),  # a length no base64 has
        (base64.b64encode(b"<xml/>").decode(), "not JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "not a JSON object"),
        (message({"data": {}}), "no id"),
        (message({"id": "", "data": {}}), "no id"),
        (message({"id": 7}), "no id"),
        (message({"id": "e-1", "data": {"orderId": "o"}}), "'e-1': RefundEvent: $.data."),
        (message(with_state(12)), "$.data.eventState: expected a string"),
    ],
)
def test_unreadable_messages_are_rejections_with_their_text_never_exceptions(
    text: str, reason: str
) -> None:
    decoded = decode_message(text)
    assert isinstance(decoded, Rejection)
    assert reason in decoded.reason
    assert decoded.text == text
    assert "text=" not in repr(decoded)  # raw texts can be large: shown by export, not repr


def test_decode_text_ignores_line_breaks() -> None:
    assert decode_text("eyJp\nZCI6\r\nIngifQ") == b'{"id":"x"}'
