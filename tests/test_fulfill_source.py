"""The JSON Lines reader: every valid line read, every bad line reported precisely, no secret
ever repeated."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from store_async.fulfillment import Fulfillment, LineError, iter_jsonl, parse_line, read_jsonl
from store_async.models import ConsumeRequest, UserIdentity

SECRET = "eyJ-SECRET-store-id-key"
TRACKING = "3eea1529-611e-4aee-915c-345494e4ee76"
TRANSACTION = "6a1e2a3b-0f0e-4c1d-8b7a-112233445566"
BENEFICIARY = {"identityValue": SECRET, "localTicketReference": "user-1"}
USER = UserIdentity(identity_value=SECRET, local_ticket_reference="user-1")


def line(**fields: object) -> bytes:
    return orjson.dumps({"beneficiary": BENEFICIARY, **fields}) + b"\n"


BAD_FILE = b"".join(
    [
        b"\xef\xbb\xbf" + line(key="k1", itemId="item-1"),  # 1: valid, after a BOM
        b"\n",  # 2: blank
        b"   \t \r\n",  # 3: blank
        b"this is not json\n",  # 4
        line(itemId="item-2"),  # 5: no key, no trackingId
        line(key="k3"),  # 6: neither form
        line(key="k4", itemId="item-4", productId="9P", transactionId=TRANSACTION),  # 7
        line(key="k5", itemId="item-5", trackingId="not-a-guid"),  # 8
        line(key=5, itemId="item-6"),  # 9
        orjson.dumps({"key": "k7", "itemId": "i"}) + b"\n",  # 10: no beneficiary
        orjson.dumps({"key": "k8", "itemId": "i", "beneficiary": {"identityValue": SECRET}})
        + b"\n",  # 11
        orjson.dumps({"key": "k9", "itemId": "i", "beneficiary": "user-1"}) + b"\n",  # 12
        line(key="k10", itemID="item-10"),  # 13: misspelt field
        b"[1, 2, 3]\n",  # 14
        line(key="k11", productId="9NBLGGH4R315"),  # 15: no transactionId
        line(key="", itemId="item-12"),  # 16
        line(itemId="item-13", trackingId=TRACKING.upper()),  # 17: valid, key = tracking id
        line(productId="9NBLGGH4R315", transactionId=TRANSACTION),  # 18: valid, key = txn id
        b'{"key": "k14", "beneficiary": {"identityValue": "' + SECRET.encode() + b'", "loc',
    ]
)


def test_a_bad_file_yields_every_valid_line_and_a_precise_error_per_bad_line() -> None:
    items = list(iter_jsonl(io.BytesIO(BAD_FILE)))
    errors = [(item.line, item.message, item.key) for item in items if isinstance(item, LineError)]
    assert errors == [
        (4, "invalid JSON: invalid literal, expected 'true' at column 1", None),
        (5, "missing field 'key' (required unless 'trackingId' is given)", None),
        (6, "missing field 'itemId' (or 'productId' + 'transactionId')", "k3"),
        (7, "give either itemId (+ trackingId) or productId + transactionId, not both", "k4"),
        (8, "'trackingId' must be a GUID such as 3eea1529-611e-4aee-915c-345494e4ee76", "k5"),
        (9, "'key' must be a string, not a number", None),
        (10, "missing field 'beneficiary'", "k7"),
        (11, "missing field 'beneficiary.localTicketReference'", "k8"),
        (12, "'beneficiary' must be an object, not a string", "k9"),
        (13, "unknown field 'itemID'", "k10"),
        (14, "expected a JSON object, got an array", None),
        (15, "missing field 'transactionId'", "k11"),
        (16, "'key' must not be empty", None),
        (19, "truncated last line (no newline at end of file): invalid JSON: unexpected end "
             "of data at column 80", None),
    ]  # fmt: skip
    fulfillments = [item for item in items if isinstance(item, Fulfillment)]
    assert fulfillments[1:] == [
        Fulfillment(
            key=TRACKING,
            request=ConsumeRequest.for_item(USER, "item-13", TRACKING),
            line=17,
            caller_tracking_id=True,
        ),
        Fulfillment(
            key=TRANSACTION,
            request=ConsumeRequest.for_transaction(USER, "9NBLGGH4R315", TRANSACTION),
            line=18,
        ),
    ]
    first = fulfillments[0]
    assert (first.key, first.line, first.caller_tracking_id) == ("k1", 1, False)
    assert first.request.item_id == "item-1"
    assert first.request.tracking_id is not None  # generated
    assert all(SECRET not in message for _, message, _ in errors)


def test_a_complete_last_line_without_a_newline_is_read() -> None:
    data = line(key="k1", itemId="a") + line(key="k2", itemId="b").rstrip(b"\n")
    assert [item.key for item in iter_jsonl(io.BytesIO(data))] == ["k1", "k2"]  # type: ignore[union-attr]


def test_an_over_long_line_is_skipped_without_buffering_it() -> None:
    data = (
        line(key="k1", itemId="a")
        + b'{"key": "'
        + b"x" * 5000
        + b'"}\n'
        + line(key="k3", itemId="c")
    )
    items = list(iter_jsonl(io.BytesIO(data), max_line_bytes=1000))
    assert items[1] == LineError(line=2, message="line is longer than 1000 bytes")
    assert [getattr(item, "key", None) for item in items] == ["k1", None, "k3"]


def test_identity_type_and_guid_spellings() -> None:
    item = parse_line(
        line(key="k", itemId="i", trackingId="{" + TRACKING.upper() + "}")[:-2] + b', "x": 1}',
        3,
    )
    assert item == LineError(line=3, message="unknown field 'x'", key="k")
    document = {
        "key": "k",
        "beneficiary": {**BENEFICIARY, "identityType": "b2b"},
        "itemId": "i",
        "trackingId": TRACKING.replace("-", ""),
    }
    parsed = parse_line(orjson.dumps(document), 1)
    assert isinstance(parsed, Fulfillment)
    assert parsed.request.tracking_id == TRACKING
    assert parse_line(
        orjson.dumps({**document, "beneficiary": {**BENEFICIARY, "identityType": 3}}), 1
    ) == LineError(
        line=1, message="'beneficiary.identityType' must be a string, not a number", key="k"
    )


async def test_read_jsonl_streams_the_same_items(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(BAD_FILE)
    streamed = [item async for item in read_jsonl(path, chunk_lines=3)]
    expected = list(iter_jsonl(io.BytesIO(BAD_FILE)))
    assert [(type(a), getattr(a, "line", None), getattr(a, "key", None)) for a in streamed] == [
        (type(b), getattr(b, "line", None), getattr(b, "key", None)) for b in expected
    ]
