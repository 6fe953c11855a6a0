"""Codec micro-benchmark: our records against plain orjson on the same JSON, in one run.

    python benchmarks/bench_codec.py [--quick] [--against FILE ...]

Prints microseconds per operation (best of several repeats, so a noisy neighbour on a shared
machine inflates nothing but the worst runs) for:

- a 100-item query page: ``orjson.loads`` alone vs ``codec.loads(body, QueryResult)``, in
  paired rounds of thread CPU time (median and min-max of the per-round ratio; targets <= 4x
  and <= 450 µs); with ``--against FILE`` (repeatable), another version's ``codec.py`` (say
  ``git show main:store_async/codec.py > /tmp/codec_main.py``), loaded beside this one over
  the same models, joins every round: before and after from one run; then a page whose items
  each carry their own date-times, every one of them parsed (the codec's cache emptied before
  each decode);
- a consume request: ``orjson.dumps`` of the finished dict vs ``codec.dumps(request)``;
- building a ``ConsumeRequest`` (``for_item``, with and without a generated tracking id) next
  to ``uuid.uuid4()`` and a bare attrs class of the same shape.

No network, no files; bounded: a few seconds in total.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import orjson

from store_async import codec
from store_async.models import ConsumeRequest, QueryResult, UserIdentity

ITEM: dict[str, Any] = {
    "acquiredDate": "2015-09-22T19:22:51.2068724+00:00",
    "devOfferId": "f9587c53-540a-498b-a281-8a349491ed47",
    "endDate": "9999-12-31T23:59:59.9999999+00:00",
    "fulfillmentData": [],
    "inAppOfferToken": "consumable2",
    "itemId": "4b8fbb13127a41f299270ea668681c1d",
    "localTicketReference": "1055521810674918",
    "modifiedDate": "2015-09-22T19:22:51.2513155+00:00",
    "orderId": "4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
    "ownershipType": "OwnedByBeneficiary",
    "productId": "9NBLGGH5WVP6",
    "productType": "UnmanagedConsumable",
    "purchaser": {"identityType": "pub", "identityValue": "user123"},
    "skuId": "0010",
    "skuType": "Full",
    "startDate": "2015-09-22T19:22:51.2068724+00:00",
    "status": "Active",
    "tags": [],
    "transactionId": "4ba5960d-4ec6-4a81-ac20-aafce02ddf31",
}
# A realistic Store ID key is a ~1 KB JWT.
STORE_ID_KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6IjFhYmMifQ." + "A" * 900 + ".c2ln"
TRACKING_ID = "44db79ca-e31d-49e9-8896-fa5c7f892b40"


@attrs.frozen(kw_only=True)
class _BareConsume:
    """Same fields as ConsumeRequest, no converters or checks: the floor for attrs."""

    beneficiary: UserIdentity
    item_id: str | None = None
    tracking_id: str | None = None
    product_id: str | None = None
    transaction_id: str | None = None


def per_op(function: Callable[[], object], number: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds per call."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def row(label: str, ours: float, baseline: float, baseline_label: str) -> None:
    print(
        f"  {label:<38} {ours:9.2f} µs   {baseline_label:<24} {baseline:9.2f} µs"
        f"   x{ours / baseline:5.1f}"
    )


def cpu_per_op(function: Callable[[], object], number: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds of this thread's CPU time per call: a process that
    waits for a core on a busy machine accrues none, so this is steadier than wall time."""
    times = timeit.repeat(function, number=number, repeat=repeat, timer=time.thread_time)
    return min(times) / number * 1e6


def load_codec(path: str, index: int) -> Any:
    """Another version's ``codec.py``, imported as a module of its own (over this tree's
    models): its converter and generated functions are its own."""
    spec = importlib.util.spec_from_file_location(f"_codec_against_{index}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def distinct_dates_page() -> bytes:
    """The query page as a real one reads: each item acquired (= started) and modified at its
    own instant, so two of its four date-times are new to the codec's cache."""
    base = datetime(2015, 9, 22, 19, 22, 51, 206872, tzinfo=UTC)
    items = []
    for index in range(100):
        acquired = (base + timedelta(minutes=index, microseconds=index)).isoformat(
            "T", "microseconds"
        )
        modified = (base + timedelta(hours=index, microseconds=3 * index)).isoformat(
            "T", "microseconds"
        )
        # 7 fractional digits, as the service writes them
        acquired, modified = (text.replace("+00:00", "4+00:00") for text in (acquired, modified))
        items.append({**ITEM, "acquiredDate": acquired, "startDate": acquired})
        items[-1]["modifiedDate"] = modified
    return orjson.dumps({"items": items, "continuationToken": "next"})


def decoder(module: Any, page: bytes, forget: bool) -> Callable[[], object]:
    """``module.loads(page, QueryResult)``; with ``forget``, the module's date-time cache (if
    it has one) is emptied first, so every date-time of the page is parsed again."""
    cache = getattr(module, "_DATES", None)
    if forget and cache is not None:

        def decode() -> object:
            cache.clear()
            return module.loads(page, QueryResult)

        return decode
    return lambda: module.loads(page, QueryResult)


def paired_page(
    page: bytes, number: int, rounds: int, against: dict[str, Any], forget: bool = False
) -> None:
    """The query page in paired rounds (orjson, then codec, back to back, in thread CPU time):
    on a shared machine a noisy moment hits both sides of a round, so the per-round ratio is
    what to compare. Each ``against`` codec joins every round (the order rotates)."""
    decoders = {"codec": decoder(codec, page, forget)}
    for label, module in against.items():
        decoders[label] = decoder(module, page, forget)
    times: dict[str, list[float]] = {label: [] for label in decoders}
    theirs, ratios = [], []
    order = list(decoders)
    for index in range(rounds):
        baseline = cpu_per_op(lambda: orjson.loads(page), number, 3)
        theirs.append(baseline)
        for label in order[index % len(order) :] + order[: index % len(order)]:
            times[label].append(cpu_per_op(decoders[label], number, 3))
        ratios.append(times["codec"][-1] / baseline)
    ours = times["codec"]
    label = "codec.loads(page, QueryResult)" if not forget else "  distinct date-times, cold cache"
    row(label, min(ours), min(theirs), "orjson.loads(page)")
    print(
        f"    {rounds} paired rounds: codec/orjson median x{statistics.median(ratios):.2f} "
        f"(min x{min(ratios):.2f}, max x{max(ratios):.2f}); codec median "
        f"{statistics.median(ours):.0f} µs (min {min(ours):.0f}, max {max(ours):.0f})"
        + ("" if forget else "  (targets: <= x4, <= 450 µs)")
    )
    for label in against:
        other = times[label]
        speedup = [old / new for old, new in zip(other, ours, strict=True)]
        versus = [old / base for old, base in zip(other, theirs, strict=True)]
        print(
            f"    {label}: median {statistics.median(other):.0f} µs (min {min(other):.0f}, "
            f"max {max(other):.0f}), x{statistics.median(versus):.2f} orjson "
            f"(min x{min(versus):.2f}, max x{max(versus):.2f}); codec is "
            f"{statistics.median(speedup):.2f}x faster (per round: min {min(speedup):.2f}, "
            f"max {max(speedup):.2f})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="FILE",
        help="another version's codec.py to pair with this one on the query page (repeatable)",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    repeat = 3 if args.quick else 7

    page = orjson.dumps({"items": [ITEM] * 100, "continuationToken": "next"})
    assert len(codec.loads(page, QueryResult).items) == 100
    against = {path: load_codec(path, index) for index, path in enumerate(args.against)}
    for module in against.values():  # the same records from the same bytes
        assert module.loads(page, QueryResult) == codec.loads(page, QueryResult)
    user = UserIdentity(identity_value=STORE_ID_KEY, local_ticket_reference="1055521810674918")
    request = ConsumeRequest.for_item(user, ITEM["itemId"], TRACKING_ID)
    as_dict = orjson.loads(codec.dumps(request))
    assert orjson.dumps(as_dict) == codec.dumps(request)

    print(f"Python {sys.version.split()[0]}, orjson {orjson.__version__}, pid {os.getpid()}")
    print(
        f"query page: 100 items, {len(page):,} bytes; consume body: {len(codec.dumps(request))} B"
    )
    print()
    print("codec vs plain orjson on the same JSON")
    paired_page(page, 200 // scale, 15 if args.quick else 31, against)
    # Not the target's page: the miss path of the date-time cache, on a realistic page.
    real = distinct_dates_page()
    for module in against.values():
        assert module.loads(real, QueryResult) == codec.loads(real, QueryResult)
    paired_page(real, 100 // scale, 9 if args.quick else 15, against, forget=True)
    row(
        "codec.dumps(consume request)",
        per_op(lambda: codec.dumps(request), 200_000 // scale, repeat),
        per_op(lambda: orjson.dumps(as_dict), 200_000 // scale, repeat),
        "orjson.dumps(dict)",
    )
    print()
    print("building a ConsumeRequest")
    row(
        "for_item(user, item, tracking_id)",
        per_op(
            lambda: ConsumeRequest.for_item(user, "item", TRACKING_ID), 100_000 // scale, repeat
        ),
        per_op(
            lambda: _BareConsume(beneficiary=user, item_id="item", tracking_id=TRACKING_ID),
            100_000 // scale,
            repeat,
        ),
        "bare attrs class",
    )
    row(
        "for_item(user, item)  (new UUID4)",
        per_op(lambda: ConsumeRequest.for_item(user, "item"), 100_000 // scale, repeat),
        per_op(uuid.uuid4, 100_000 // scale, repeat),
        "uuid.uuid4()",
    )
    row(
        "for_item + codec.dumps",
        per_op(
            lambda: codec.dumps(ConsumeRequest.for_item(user, "item")), 100_000 // scale, repeat
        ),
        per_op(
            lambda: orjson.dumps(
                {
                    "beneficiary": as_dict["beneficiary"],
                    "itemId": "i",
                    "trackingId": str(uuid.uuid4()),
                }
            ),
            100_000 // scale,
            repeat,
        ),
        "dict + uuid4 + orjson",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
