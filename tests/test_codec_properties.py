"""Property tests of the codec (hypothesis).

1. Every record round-trips: ``structure(loads(dumps(record))) == record``, whatever the casing
   of the keys and whatever unknown fields the service adds.
2. Whatever JSON a response structurer is fed (arbitrary values, valid documents with one field
   broken, missing, re-typed, nested thousands deep or megabytes long), it returns a record or
   raises exactly :class:`ResponseFormatError` with a short message; nothing else escapes.
   Every generated document is fed to *every* response structurer, which keeps the run short on
   a small machine and gives each record type well over 1,000 examples (counted and asserted).
3. The generated fast path agrees with cattrs: whenever it returns a record, cattrs' own
   structuring of the same document (in any casing) returns an equal record of the same class.
"""

from __future__ import annotations

import collections
import functools
import random
import typing
from datetime import timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest
from cattrs.gen import make_dict_structure_fn, override
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store_async import codec
from store_async.errors import InnerError, ResponseFormatError, ServiceError
from store_async.models import (
    ClientContext,
    CollectionItem,
    ConsumeRequest,
    ConsumeResult,
    ConsumeV8Response,
    GrantRequest,
    IdentityV6,
    KeyRenewalRequest,
    KeyRenewalResponse,
    OfflineLicense,
    Order,
    OrderLineItem,
    OrderTransaction,
    ProductKey,
    ProductSkuId,
    QueryRequest,
    QueryResult,
    UserIdentity,
)
from store_async.models.licenses import (
    EntitlementItem,
    EntitlementPage,
    EntitlementQuery,
    LicenseItem,
    LicensePage,
    LicenseQuery,
    TrialData,
)
from store_async.models.orders import OrderPage, OrderQuery, PurchaseLineItem, PurchaseOrder
from store_async.models.subscriptions import (
    Subscription,
    SubscriptionChange,
    SubscriptionPage,
    SubscriptionQuery,
)

RESPONSE_RECORDS = (
    QueryResult,
    CollectionItem,
    IdentityV6,
    Order,
    OrderLineItem,
    ClientContext,
    OfflineLicense,
    ProductKey,
    KeyRenewalResponse,
    ServiceError,
    InnerError,
    ConsumeV8Response,
    OrderTransaction,
    TrialData,
    EntitlementItem,
    LicenseItem,
    EntitlementPage,
    LicensePage,
    Subscription,
    SubscriptionPage,
    PurchaseLineItem,
    PurchaseOrder,
    OrderPage,
)
FUZZ_EXAMPLES = 1_500
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies for valid records, derived from the attrs fields and their types --

texts = st.text(max_size=20)
non_blank = st.text(min_size=1, max_size=20).filter(lambda s: not s.isspace())
guids = st.uuids().map(str)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(timezones=offsets)
# Amounts as the services write them: a few places, up to 15 significant digits.
amounts = st.one_of(
    st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    st.decimals(min_value=-(10**6), max_value=10**6, places=7),
    st.integers(min_value=-(10**15), max_value=10**15).map(Decimal),
)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)

# Request records refuse empty strings; response records take any string.
VALIDATING = (
    UserIdentity,
    ProductSkuId,
    QueryRequest,
    GrantRequest,
    KeyRenewalRequest,
    LicenseQuery,
    EntitlementQuery,
    SubscriptionQuery,
    SubscriptionChange,
    OrderQuery,
)
# Queries need at least one beneficiary, product type or product/SKU pair.
AT_LEAST_ONE = (QueryRequest, LicenseQuery, EntitlementQuery)
# Fields of request records that carry validated values.
OVERRIDES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (UserIdentity, "identity_value"): non_blank,
    (UserIdentity, "local_ticket_reference"): non_blank,
    (UserIdentity, "identity_type"): non_blank,
    (ProductSkuId, "product_id"): non_blank,
    (ProductSkuId, "sku_id"): non_blank,
    (QueryRequest, "max_page_size"): st.none() | st.integers(1, 100),
    (LicenseQuery, "max_page_size"): st.none() | st.integers(1, 100),
    (EntitlementQuery, "max_page_size"): st.none() | st.integers(1, 200),
    # Untyped JSON the service may send; scalars, so that re-casing keys cannot change it.
    (LicenseItem, "beneficiary"): json_scalars,
    (LicenseItem, "recurrence_data"): json_scalars,
    (EntitlementItem, "beneficiary"): json_scalars,
    (OrderQuery, "line_item_state_filter"): st.none()
    | st.lists(non_blank, min_size=1, max_size=3).map(tuple),
    (GrantRequest, "order_id"): guids,
    (GrantRequest, "quantity"): st.just(1),
    # Opaque JSON the service may send; scalars only, so that re-casing keys cannot change it.
    (ServiceError, "data"): st.lists(json_scalars, max_size=3).map(tuple),
    (ServiceError, "details"): st.lists(json_scalars, max_size=3).map(tuple),
    (InnerError, "data"): st.lists(json_scalars, max_size=3).map(tuple),
    (InnerError, "details"): st.lists(json_scalars, max_size=3).map(tuple),
}


def _strategy(type_: Any, owner: type, name: str) -> st.SearchStrategy[Any]:
    if (owner, name) in OVERRIDES:
        return OVERRIDES[(owner, name)]
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    if args and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        return st.none() | _strategy(inner, owner, name)
    if origin is tuple:
        element = json_values if args[0] is Any else _strategy(args[0], owner, name)
        # A query needs at least one beneficiary and product type.
        least = 1 if owner in AT_LEAST_ONE else 0
        return st.lists(element, min_size=least, max_size=3).map(tuple)
    if attrs.has(type_):
        return records(type_)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: non_blank if owner in VALIDATING else texts,
        int: st.integers(-(2**63), 2**63 - 1),
        bool: st.booleans(),
        Decimal: amounts,
        typing.get_type_hints(CollectionItem)["acquired_date"]: aware_datetimes,
    }
    return simple[type_]


@functools.cache
def records(cls: type) -> st.SearchStrategy[Any]:
    """Valid instances of ``cls`` (every field, optional ones sometimes left out)."""
    if cls is ConsumeRequest:
        users = records(UserIdentity)
        return st.one_of(
            st.builds(ConsumeRequest.for_item, users, non_blank, guids | st.uuids()),
            st.builds(ConsumeRequest.for_transaction, users, non_blank, guids | st.uuids()),
            st.builds(
                ConsumeRequest.for_quantity,
                users,
                non_blank,
                st.integers(1, 2**31 - 1),
                tracking_id=guids | st.uuids(),
                include_order_ids=st.booleans(),
                sandbox_id=st.none() | non_blank,
            ),
        )
    if cls is SubscriptionChange:
        return st.one_of(
            st.builds(
                SubscriptionChange,
                b2b_key=non_blank,
                change_type=st.just("Extend"),
                extension_time_in_days=st.integers(-36_500, 36_500),
                sandbox_id=st.none() | non_blank,
            ),
            st.builds(
                SubscriptionChange,
                b2b_key=non_blank,
                change_type=st.sampled_from(["Cancel", "Refund", "ToggleAutoRenew"]),
                sandbox_id=st.none() | non_blank,
            ),
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name], cls, f.name) for f in attrs.fields(cls)}
    return st.builds(cls, **fields)


ALL_RECORDS = (
    UserIdentity,
    ProductSkuId,
    QueryRequest,
    ConsumeRequest,
    ConsumeResult,
    GrantRequest,
    KeyRenewalRequest,
    LicenseQuery,
    EntitlementQuery,
    SubscriptionQuery,
    SubscriptionChange,
    OrderQuery,
    *RESPONSE_RECORDS,
)


def test_every_record_is_covered() -> None:
    assert set(ALL_RECORDS) == set(codec.RECORDS)


# -- 1. round trips --

REQUESTS = (
    UserIdentity,
    ProductSkuId,
    QueryRequest,
    ConsumeRequest,
    GrantRequest,
    KeyRenewalRequest,
    LicenseQuery,
    EntitlementQuery,
    SubscriptionQuery,
    SubscriptionChange,
    OrderQuery,
)
CASINGS = (str.lower, str.upper, str.title, str, str.swapcase)


def _has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_null(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_null(item) for item in value)
    return value is None


def _recase(value: Any, rng: random.Random) -> Any:
    """The same JSON with the keys of every object in a random casing."""
    if isinstance(value, dict):
        casing = rng.choice(CASINGS)
        return {casing(key): _recase(item, rng) for key, item in value.items()}
    if isinstance(value, list):
        return [_recase(item, rng) for item in value]
    return value


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_every_record_round_trips_in_any_casing(cls: type) -> None:
    known = {codec.wire_name(f.name).lower() for f in attrs.fields(cls)}
    extra_keys = texts.filter(lambda key: key.lower() not in known)

    @ROUND_TRIP
    @given(
        record=records(cls),
        extra=st.dictionaries(extra_keys, json_scalars, max_size=3),
        seed=st.integers(0, 2**32),
    )
    def round_trip(record: Any, extra: dict[str, Any], seed: int) -> None:
        body = codec.dumps(record)
        if cls in REQUESTS:
            assert not _has_null(orjson.loads(body))  # absent means omitted, never null
        assert codec.loads(body, cls) == record
        # Keys in any casing, plus fields we do not know: the same record.
        document = _recase(orjson.loads(body), random.Random(seed))
        assert codec.structure({**extra, **document}, cls) == record

    round_trip()


def test_the_consume_fast_path_matches_the_generated_unstructurer() -> None:
    generated = codec._make_unstructure_hook(ConsumeRequest)

    @ROUND_TRIP
    @given(request=records(ConsumeRequest))
    def same(request: ConsumeRequest) -> None:
        assert orjson.loads(codec.dumps(request)) == orjson.loads(orjson.dumps(generated(request)))

    same()


# -- 2. nothing but ResponseFormatError --


def _deep(depth: int) -> Any:
    nested: Any = {"code": "x"}
    for _ in range(depth):
        nested = [nested]
    return nested


# Built once and drawn by index: hypothesis cannot print (or cheaply rebuild) these.
MONSTERS = (_deep(3_000), "7" * 3_000_000, {"itemId": "x" * 1_000_000})
WIRE_KEYS = sorted({codec.wire_name(f.name) for cls in codec.RECORDS for f in attrs.fields(cls)})

nasty_leaves = st.one_of(
    json_scalars,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, len(MONSTERS) - 1).map(lambda index: MONSTERS[index]),
    st.sampled_from(["/Date(99999999999999999)/", "9999-99-99", 2**64, -(2**70), 1e308]),
    st.sampled_from(["NaN", "-Infinity", "1e999999", "0x10", " 1", "\x00", "\ud800", "7" * 65]),
)
# Any JSON, with objects keyed mostly by field names we know (in any casing), so that values
# reach the field structurers instead of stopping at "required field missing".
keys = st.sampled_from(WIRE_KEYS) | st.sampled_from(WIRE_KEYS).map(str.upper) | texts
nasty_values = st.recursive(
    nasty_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=8,
)


def _mutate(document: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Break one thing somewhere in a valid document: drop, retype or add a field."""
    if depth > 8:
        return data.draw(nasty_values)
    if isinstance(document, dict) and document:
        key = data.draw(st.sampled_from(sorted(document)))
        action = data.draw(st.sampled_from(["drop", "retype", "descend", "add"]))
        changed = dict(document)
        if action == "drop":
            del changed[key]
        elif action == "retype":
            changed[key] = data.draw(nasty_values)
        elif action == "descend":
            changed[key] = _mutate(changed[key], data, depth + 1)
        else:
            changed[data.draw(keys)] = data.draw(nasty_values)
        return changed
    if isinstance(document, list) and document:
        index = data.draw(st.integers(0, len(document) - 1))
        changed_list = list(document)
        changed_list[index] = _mutate(changed_list[index], data, depth + 1)
        return changed_list
    return data.draw(nasty_values)


def _outcome(call: Any, body: Any, cls: type) -> None:
    """``call(body, cls)`` returns a ``cls`` or raises exactly ResponseFormatError, briefly."""
    error: ResponseFormatError | None = None
    try:
        result = call(body, cls)
    except ResponseFormatError as exc:  # anything else fails the test
        error = exc
    if error is None:
        assert type(result) is cls
    else:
        assert type(error) is ResponseFormatError
        assert error.message.startswith(f"{cls.__name__}: ")
        assert len(error.message) < 2_000  # never megabytes of input


@pytest.mark.slow
def test_any_json_gives_a_record_or_response_format_error() -> None:
    fed: collections.Counter[type] = collections.Counter()

    @FUZZ
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["mutated", "mutated twice", "anything"]))
        if how == "anything":
            document = data.draw(nasty_values)
        else:
            # A valid document of one record type with one or two things broken.
            target = data.draw(st.sampled_from(RESPONSE_RECORDS))
            document = orjson.loads(codec.dumps(data.draw(records(target))))
            for _ in range(1 if how == "mutated" else 2):
                document = _mutate(document, data)
        for cls in RESPONSE_RECORDS:
            _outcome(codec.structure, document, cls)
            fed[cls] += 1

    fuzz()
    assert min(fed[cls] for cls in RESPONSE_RECORDS) >= 1_000


@pytest.mark.slow
def test_any_bytes_give_a_record_or_response_format_error() -> None:
    fed: collections.Counter[type] = collections.Counter()
    truncated_json = json_values.map(orjson.dumps).map(lambda body: body[:-1])

    @settings(max_examples=1_000, deadline=None)
    @given(body=st.binary(max_size=200) | truncated_json | json_values.map(orjson.dumps))
    def fuzz(body: bytes) -> None:
        for cls in RESPONSE_RECORDS:
            _outcome(codec.loads, body, cls)
            fed[cls] += 1

    fuzz()
    assert min(fed[cls] for cls in RESPONSE_RECORDS) >= 1_000


# -- 3. the generated fast path against cattrs --


def _cattrs_reference(cls: type) -> Any:
    """cattrs' generated structuring of ``cls`` over lowercased keys: the codec's own fallback,
    which explains any failure of the fast path (nested records use the codec's hooks)."""
    renames = {
        field.name: override(rename=codec.field_wire_name(field).lower())
        for field in attrs.fields(cls)
    }
    generated: Any = make_dict_structure_fn
    return generated(cls, codec.converter, _cattrs_detailed_validation=True, **renames)


@pytest.mark.slow
def test_the_fast_path_returns_only_what_cattrs_returns() -> None:
    references = {cls: _cattrs_reference(cls) for cls in RESPONSE_RECORDS}
    accepted: collections.Counter[type] = collections.Counter()

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), target=st.sampled_from(RESPONSE_RECORDS), seed=st.integers(0, 2**32))
    def agree(data: st.DataObject, target: type, seed: int) -> None:
        document = orjson.loads(codec.dumps(data.draw(records(target))))
        if data.draw(st.booleans()):
            document = _recase(document, random.Random(seed))
        if data.draw(st.booleans()):
            document = _mutate(document, data)
        try:
            fast = codec._entry(target)(document)
        except Exception:
            return  # cattrs explains it (the other tests hold that it is a ResponseFormatError)
        accepted[target] += 1
        reference = references[target](codec._lower(document), target)
        assert type(fast) is type(reference) is target
        assert fast == reference

    agree()
    assert sum(accepted.values()) >= 300
