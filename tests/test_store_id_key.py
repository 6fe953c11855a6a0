"""StoreIdKey: claims decoded from the documented examples, lenient audiences, strict errors,
and the key never shown."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_async.errors import InvalidStoreIdKeyError, ValidationError
from store_async.store_id_key import MAX_KEY_LENGTH, StoreIdKey, StoreIdKeyKind

CLAIM = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
COLLECTIONS_AUD = "https://collections.mp.microsoft.com/v6.0/keys"
PURCHASE_AUD = "https://purchase.mp.microsoft.com/v6.0/keys"
PAYLOAD = "ZdcOq0/N2rjytCRzCHSqnfczv3f0343wfSydx7hghfu0snWzMqyoAGy5DSJ5rMSsKoQFAccs1iNlwlGrX+/eIwh"
SIGNATURE = "c2lnbmF0dXJlLW5vdC12ZXJpZmllZA"
HEADER = {"typ": "JWT", "alg": "RS256", "x5t": "agA_pgJ7Twx_Ex2_rEeQ2o5fZ5g"}


def segment(part: Any) -> str:
    """base64url without padding, as in a JWT; bytes are encoded as given, anything else as JSON.

    The stdlib encoder, unlike orjson, writes integers of any size: keys come from elsewhere.
    """
    raw = part if isinstance(part, bytes) else json.dumps(part).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_key(claims: Any, *, header: Any = HEADER, signature: str = SIGNATURE) -> str:
    """An unsigned test key: we never verify signatures, so any base64url will do."""
    return f"{segment(header)}.{segment(claims)}.{signature}"


def old_doc_claims(**changes: Any) -> dict[str, Any]:
    """The 2017-2021 documentation example: exp = iat + 90 days - 1 s, nbf = iat - 3601 s."""
    claims = {
        CLAIM + "clientId": "1d5773695a3b44928227393bfef1e13d",
        CLAIM + "payload": PAYLOAD,
        CLAIM + "userId": "infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=",
        CLAIM + "refreshUri": "https://collections.mp.microsoft.com/v6.0/b2b/keys/renew",
        "iat": 1442395542,
        "iss": COLLECTIONS_AUD,
        "aud": COLLECTIONS_AUD,
        "exp": 1450171541,
        "nbf": 1442391941,
    }
    claims.update(changes)
    return claims


def new_doc_claims() -> dict[str, Any]:
    """The Dec 2024 example: exp one hour *before* iat, nbf 30 days after it (swapped?)."""
    iat = 1733526889  # 2024-12-06T23:14:49Z
    return old_doc_claims(
        **{CLAIM + "clientId": "1d577369placeholder7393beef1e13d"},
        iat=iat,
        exp=iat - 3600,
        nbf=iat + 30 * 86400,
    )


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


OLD_KEY = make_key(old_doc_claims())


def test_old_documentation_example_decodes_to_exact_claims() -> None:
    key = StoreIdKey.parse(OLD_KEY)

    assert key.value == OLD_KEY
    assert key.kind is StoreIdKeyKind.COLLECTIONS
    assert str(key.kind) == "collections"
    assert key.audience == COLLECTIONS_AUD
    assert key.client_id == "1d5773695a3b44928227393bfef1e13d"
    assert key.user_id == "infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY="
    assert key.refresh_uri == "https://collections.mp.microsoft.com/v6.0/b2b/keys/renew"
    assert key.issued_at == utc(2015, 9, 16, 9, 25, 42)
    assert key.expires_at == utc(2015, 12, 15, 9, 25, 41)
    assert key.not_before == utc(2015, 9, 16, 8, 25, 41)
    assert key.refresh_after == utc(2015, 9, 30, 9, 25, 42)
    assert key.issued_at.tzinfo is UTC
    assert key.has_inconsistent_times is False


def test_old_example_expiry_and_refresh_boundaries() -> None:
    key = StoreIdKey.parse(OLD_KEY)
    second = timedelta(seconds=1)

    assert key.needs_refresh(key.refresh_after - second) is False
    assert key.needs_refresh(key.refresh_after) is True
    assert key.is_expired(key.refresh_after) is False
    assert key.is_expired(key.expires_at - second) is False
    assert key.is_expired(key.expires_at) is True
    # Years later, by the real clock.
    assert key.is_expired() is True
    assert key.needs_refresh() is True


def test_new_documentation_example_is_taken_as_written_so_it_is_expired_at_once() -> None:
    key = StoreIdKey.parse(make_key(new_doc_claims()))

    assert key.issued_at == utc(2024, 12, 6, 23, 14, 49)
    assert key.expires_at == utc(2024, 12, 6, 22, 14, 49)
    assert key.not_before == utc(2025, 1, 5, 23, 14, 49)
    assert key.refresh_after == utc(2024, 12, 20, 23, 14, 49)
    assert key.has_inconsistent_times is True
    assert key.is_expired(key.issued_at) is True
    assert key.needs_refresh(key.issued_at) is True


def test_nbf_not_before_exp_is_inconsistent_too() -> None:
    claims = old_doc_claims(nbf=1450171541)  # nbf == exp

    assert StoreIdKey.parse(make_key(claims)).has_inconsistent_times is True


def test_purchase_key() -> None:
    claims = old_doc_claims(
        aud=PURCHASE_AUD,
        iss=PURCHASE_AUD,
        **{CLAIM + "refreshUri": "https://purchase.mp.microsoft.com/v6.0/b2b/keys/renew"},
    )
    key = StoreIdKey.parse(make_key(claims))

    assert key.kind is StoreIdKeyKind.PURCHASE
    assert key.audience == PURCHASE_AUD
    assert key.refresh_uri == "https://purchase.mp.microsoft.com/v6.0/b2b/keys/renew"


@pytest.mark.parametrize(
    ("aud", "kind", "audience"),
    [
        ("https://collections.md.mp.microsoft.com/v6.0/keys", "collections", None),
        ("https://purchase.mp.microsoft.com/v7.0/keys/", "purchase", None),
        ("HTTPS://Collections.MP.Microsoft.com/V6.0/Keys", "collections", None),
        ("https://collections.mp.microsoft.com:443/v6/keys", "collections", None),
        ([PURCHASE_AUD], "purchase", PURCHASE_AUD),
        (["https://example.com", COLLECTIONS_AUD], "collections", COLLECTIONS_AUD),
    ],
)
def test_audience_variants_are_accepted(aud: Any, kind: str, audience: str | None) -> None:
    key = StoreIdKey.parse(make_key(old_doc_claims(aud=aud)))

    assert key.kind == kind
    assert key.audience == (aud if audience is None else audience)


@pytest.mark.parametrize(
    ("aud", "message"),
    [
        (
            "https://onestore.microsoft.com",
            "Store ID key claim 'aud' is not a Store ID key audience (expected "
            f"{COLLECTIONS_AUD} or {PURCHASE_AUD}, got 'https://onestore.microsoft.com')",
        ),
        (
            "https://collections.mp.microsoft.com/v6.0/b2b/keys/renew",
            "is not a Store ID key audience",
        ),
        ("ftp://collections.mp.microsoft.com/v6.0/keys", "is not a Store ID key audience"),
        ("https://example.com/v6.0/keys", "is not a Store ID key audience"),
        ("https://[collections/v6.0/keys", "is not a Store ID key audience"),
        ("", "is not a Store ID key audience"),
        ([COLLECTIONS_AUD, PURCHASE_AUD], "Store ID key claim 'aud' names both kinds"),
        ([], "Store ID key claim 'aud' must be a string, got an array"),
        ([COLLECTIONS_AUD, 7], "Store ID key claim 'aud' must be a string, got an array"),
        (5, "Store ID key claim 'aud' must be a string, got a number"),
        (None, "Store ID key claim 'aud' must be a string, got null"),
    ],
)
def test_other_audiences_are_refused(aud: Any, message: str) -> None:
    with pytest.raises(InvalidStoreIdKeyError) as caught:
        StoreIdKey.parse(make_key(old_doc_claims(aud=aud)))

    assert message in str(caught.value)


def test_a_long_audience_is_shown_truncated() -> None:
    aud = "https://example.com/" + "x" * 500

    with pytest.raises(InvalidStoreIdKeyError) as caught:
        StoreIdKey.parse(make_key(old_doc_claims(aud=aud)))

    assert f"got {aud[:100]!r})" in str(caught.value)


def _without(name: str) -> dict[str, Any]:
    claims = old_doc_claims()
    del claims[name]
    return claims


GOOD_CLAIMS = segment(old_doc_claims())
GOOD_HEADER = segment(HEADER)
INFINITE_EXP = segment(b'{"exp": 1e400}')  # orjson refuses numbers that overflow a double

MALFORMED: list[tuple[Any, str]] = [
    ("", "Store ID key is empty"),
    (" \n\t", "Store ID key is empty"),
    ("x" * (MAX_KEY_LENGTH + 1), "Store ID key is too long: 16385 characters (at most 16384)"),
    ("eyJhbGciOiJSUzI1NiJ9", "expected 3 dot-separated parts, got 1"),
    (f"{GOOD_HEADER}.{GOOD_CLAIMS}", "expected 3 dot-separated parts, got 2"),
    (f"{OLD_KEY}.extra", "expected 3 dot-separated parts, got 4"),
    (f".{GOOD_CLAIMS}.{SIGNATURE}", "Store ID key header segment is not base64url"),
    (f"ey J.{GOOD_CLAIMS}.{SIGNATURE}", "Store ID key header segment is not base64url"),
    (f"A.{GOOD_CLAIMS}.{SIGNATURE}", "Store ID key header segment is not base64url"),
    (f"{GOOD_HEADER}.{GOOD_CLAIMS}+/.{SIGNATURE}", "Store ID key claims segment is not base64url"),
    (f"{GOOD_HEADER}.{GOOD_CLAIMS}.ab+c/", "Store ID key signature segment is not base64url"),
    (f"{segment(b'not json')}.{GOOD_CLAIMS}.x", "Store ID key header segment is not JSON"),
    (f"{segment([1])}.{GOOD_CLAIMS}.x", "Store ID key header segment is not a JSON object"),
    (f"{GOOD_HEADER}.{segment(b'{')}.x", "Store ID key claims segment is not JSON"),
    (f"{GOOD_HEADER}.{segment(bytes([0xFF, 0xFE]))}.x", "Store ID key claims segment is not JSON"),
    (f"{GOOD_HEADER}.{INFINITE_EXP}.x", "Store ID key claims segment is not JSON"),
    (f"{GOOD_HEADER}.{segment(b'[' * 2000)}.x", "Store ID key claims segment is not JSON"),
    (make_key("a string"), "Store ID key claims segment is not a JSON object"),
    (make_key(None), "Store ID key claims segment is not a JSON object"),
    (make_key(_without("aud")), "Store ID key claim 'aud' is missing"),
    (make_key(_without("iat")), "Store ID key claim 'iat' is missing"),
    (make_key(_without("exp")), "Store ID key claim 'exp' is missing"),
    (make_key(_without(CLAIM + "clientId")), f"Store ID key claim '{CLAIM}clientId' is missing"),
    (
        make_key(_without(CLAIM + "refreshUri")),
        f"Store ID key claim '{CLAIM}refreshUri' is missing",
    ),
    (
        make_key(old_doc_claims(**{CLAIM + "clientId": 5})),
        f"Store ID key claim '{CLAIM}clientId' must be a string, got a number",
    ),
    (
        make_key(old_doc_claims(**{CLAIM + "userId": None})),
        f"Store ID key claim '{CLAIM}userId' must be a string, got null",
    ),
    (
        make_key(old_doc_claims(**{CLAIM + "refreshUri": ["x"]})),
        f"Store ID key claim '{CLAIM}refreshUri' must be a string, got an array",
    ),
    (
        make_key(old_doc_claims(iat="1442395542")),
        "Store ID key claim 'iat' must be a number of seconds since the epoch, got a string",
    ),
    (
        make_key(old_doc_claims(exp=True)),
        "Store ID key claim 'exp' must be a number of seconds since the epoch, got a boolean",
    ),
    (
        make_key(old_doc_claims(nbf=None)),
        "Store ID key claim 'nbf' must be a number of seconds since the epoch, got null",
    ),
    (
        make_key(old_doc_claims(exp={"at": 1})),
        "Store ID key claim 'exp' must be a number of seconds since the epoch, got an object",
    ),
    (make_key(old_doc_claims(exp=1e300)), "Store ID key claim 'exp' is out of range"),
    (make_key(old_doc_claims(exp=10**18)), "Store ID key claim 'exp' is out of range"),
    (make_key(old_doc_claims(nbf=-(10**12))), "Store ID key claim 'nbf' is out of range"),
    # A valid datetime, but refresh_after (iat + 14 days) would pass year 9999.
    (make_key(old_doc_claims(iat=253402300000)), "Store ID key claim 'iat' is out of range"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_keys_give_a_typed_error_that_never_echoes_the_key(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidStoreIdKeyError) as caught:
        StoreIdKey.parse(text)

    error = caught.value
    assert message in str(error)
    assert isinstance(error, ValidationError)
    assert isinstance(error, ValueError)
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    for shown in (str(error), repr(error)):
        assert PAYLOAD not in shown
        if len(text.strip()) > 20:
            assert text.strip() not in shown


def test_a_non_string_is_refused() -> None:
    with pytest.raises(InvalidStoreIdKeyError, match=r"^a Store ID key must be a str, got bytes$"):
        StoreIdKey.parse(OLD_KEY.encode())  # type: ignore[arg-type]


def test_huge_input_is_refused_before_any_work() -> None:
    with pytest.raises(InvalidStoreIdKeyError, match=r"too long: 50000001 characters"):
        StoreIdKey.parse("." * 50_000_001)


def test_optional_claims_may_be_absent() -> None:
    claims = old_doc_claims()
    del claims["nbf"], claims[CLAIM + "userId"], claims[CLAIM + "payload"], claims["iss"]

    key = StoreIdKey.parse(make_key(claims))

    assert key.not_before is None
    assert key.user_id is None
    assert key.has_inconsistent_times is False
    assert str(key).startswith("collections Store ID key for no user id (client ")


def test_fractional_times_keep_microseconds() -> None:
    key = StoreIdKey.parse(make_key(old_doc_claims(iat=1442395542.25)))

    assert key.issued_at == utc(2015, 9, 16, 9, 25, 42) + timedelta(microseconds=250000)


def test_padding_empty_signature_and_surrounding_whitespace_are_tolerated() -> None:
    padded = base64.urlsafe_b64encode(orjson.dumps(old_doc_claims())).decode()
    assert padded.endswith("=")  # the claim set's length makes the encoder pad it
    unsigned = f"{GOOD_HEADER}.{padded}."

    key = StoreIdKey.parse(f"\n  {unsigned}\r\n")

    assert key.value == unsigned
    assert key.client_id == "1d5773695a3b44928227393bfef1e13d"


def test_repr_and_str_show_who_and_when_but_never_the_key_or_payload() -> None:
    key = StoreIdKey.parse(OLD_KEY)

    assert repr(key) == (
        "StoreIdKey(kind=collections, user_id='infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=', "
        "client_id='1d5773695a3b44928227393bfef1e13d', expires_at=2015-12-15T09:25:41+00:00)"
    )
    assert str(key) == (
        "collections Store ID key for user 'infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=' "
        "(client 1d5773695a3b44928227393bfef1e13d), expires 2015-12-15T09:25:41+00:00"
    )
    for shown in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        for secret in (OLD_KEY, PAYLOAD, SIGNATURE, GOOD_CLAIMS[:40]):
            assert secret not in shown


def test_the_payload_claim_is_not_kept() -> None:
    key = StoreIdKey.parse(OLD_KEY)
    fields = attrs.asdict(key)

    assert "payload" not in fields
    assert not any(PAYLOAD in str(value) for name, value in fields.items() if name != "value")


def test_equality_and_hash_follow_the_key() -> None:
    key = StoreIdKey.parse(OLD_KEY)
    same = StoreIdKey.parse(f" {OLD_KEY} ")
    other = StoreIdKey.parse(make_key(old_doc_claims(), signature="b3RoZXI"))

    assert key == same
    assert hash(key) == hash(same)
    assert key != other
    assert len({key, same, other}) == 2
    assert pickle.loads(pickle.dumps(key)) == key


def test_records_are_frozen_and_slotted() -> None:
    key = StoreIdKey.parse(OLD_KEY)

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        key.user_id = "someone else"  # type: ignore[misc]
    assert not hasattr(key, "__dict__")


def test_now_may_be_any_aware_time_but_not_naive() -> None:
    key = StoreIdKey.parse(OLD_KEY)
    paris = timezone(timedelta(hours=2))

    # 2015-12-15T11:25:41+02:00 is the exp instant.
    assert key.is_expired(datetime(2015, 12, 15, 11, 25, 40, tzinfo=paris)) is False
    assert key.is_expired(datetime(2015, 12, 15, 11, 25, 41, tzinfo=paris)) is True
    with pytest.raises(ValidationError, match=r"^now must be a timezone-aware datetime$"):
        key.is_expired(datetime(2015, 12, 15))
    with pytest.raises(ValidationError, match=r"^now must be a timezone-aware datetime$"):
        key.needs_refresh(datetime(2015, 12, 15))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
CLAIM_NAMES = [
    "aud",
    "iat",
    "exp",
    "nbf",
    CLAIM + "clientId",
    CLAIM + "userId",
    CLAIM + "refreshUri",
]


@settings(max_examples=400, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_parses_or_gives_only_the_typed_error(text: str) -> None:
    message = ""
    try:
        StoreIdKey.parse(text)
    except InvalidStoreIdKeyError as error:
        message = str(error)
    assert len(text.strip()) < 8 or text.strip() not in message


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(CLAIM_NAMES), value=JSON_VALUES)
def test_any_claim_value_parses_or_gives_only_the_typed_error(name: str, value: Any) -> None:
    try:
        key = StoreIdKey.parse(make_key(old_doc_claims(**{name: value})))
    except InvalidStoreIdKeyError as error:
        message = str(error)
        key = None
    if key is None:
        assert PAYLOAD not in message
    else:
        assert key.kind in (StoreIdKeyKind.COLLECTIONS, StoreIdKeyKind.PURCHASE)
        assert key.issued_at.tzinfo is UTC
