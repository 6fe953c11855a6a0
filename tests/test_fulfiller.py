"""Fulfiller against an in-process fake Store: exact counts, journal states and ledger, for
success, unknown outcomes, permanent failures, duplicates, stops and grace expiry."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from store_async.errors import (
    AuthenticationError,
    FailureKind,
    InvalidRequestError,
    OutcomeUnknownError,
    ResponseTooLargeError,
    StoreError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from store_async.fulfillment import (
    ExitCode,
    FailedRow,
    FailureInfo,
    Fulfiller,
    Fulfillment,
    FulfillmentReport,
    JournalError,
    JournalReader,
    LineError,
    RowState,
    SqliteJournal,
)
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

USER = UserIdentity(identity_value="eyJ-SECRET", local_ticket_reference="user-1")

Behaviour = Callable[[ConsumeRequest], StoreError | None]


class FakeStore:
    """Applies each item once per tracking id, like the Store; ``faults[item_id]`` lists what
    the next calls for that item do: an error to raise (``apply_first`` errors are raised after
    applying, like a response lost after the commit)."""

    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()
        self.consumed_by: dict[str, str] = {}
        self.sends: Counter[str] = Counter()
        self.faults: dict[str, list[tuple[StoreError, bool]]] = {}
        self.gate: asyncio.Event | None = None  # when set: calls wait for it
        self.entered = 0
        self.all_entered = asyncio.Event()
        self.expect_entered = 0

    async def consume(self, request: ConsumeRequest) -> ConsumeResult:
        item_id = request.item_id or request.product_id or ""
        self.sends[request.idempotency_key] += 1
        self.entered += 1
        if self.entered == self.expect_entered:
            self.all_entered.set()
        if self.gate is not None:
            await self.gate.wait()
        planned = self.faults.get(item_id)
        fault = planned.pop(0) if planned else None
        if fault is not None and not fault[1]:
            raise fault[0]
        owner = self.consumed_by.setdefault(item_id, request.idempotency_key)
        if owner != request.idempotency_key:
            raise StoreError("HTTP 409: The item was already consumed.", status=409)
        if self.applied[request.idempotency_key] == 0:
            self.applied[request.idempotency_key] = 1
        if fault is not None:
            raise fault[0]
        return ConsumeResult(
            tracking_id=request.tracking_id,
            transaction_id=request.transaction_id,
            attempts=1,
            correlation_id=f"corr-{item_id}",
        )


def fulfillment(n: int, *, item: str | None = None) -> Fulfillment:
    request = ConsumeRequest.for_item(USER, item or f"item-{n}")
    return Fulfillment(key=f"order-{n}", request=request, line=n)


def counts(report: FulfillmentReport) -> dict[str, int]:
    names = (
        "done",
        "already_done",
        "failed",
        "already_failed",
        "pending",
        "duplicates",
        "rejected",
    )
    return {name: getattr(report, name) for name in names if getattr(report, name)}


def states(path: Path) -> dict[str, RowState]:
    with JournalReader(path) as reader:
        return {row.key: row.state for row in reader.rows()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal"


async def run(path: Path, store: FakeStore, items: object, **options: object) -> FulfillmentReport:
    async with SqliteJournal(path, synchronous="normal") as journal:
        fulfiller = Fulfiller(store, journal, **options)  # type: ignore[arg-type]
        return await fulfiller.run(items)  # type: ignore[arg-type]


async def test_every_item_is_sent_once_and_journaled_done(path: Path) -> None:
    store = FakeStore()
    report = await run(path, store, [fulfillment(n) for n in range(1, 301)], concurrency=8)
    assert counts(report) == {"done": 300}
    assert (report.complete, report.exit_code, report.stop_reason) == (
        True,
        ExitCode.ALL_DONE,
        None,
    )
    assert sorted(store.applied.values()) == [1] * 300
    assert sorted(store.sends.values()) == [1] * 300
    assert set(states(path).values()) == {RowState.DONE}
    with JournalReader(path) as reader:
        row = reader.row("order-7")
    assert row is not None
    assert (row.correlation_id, row.attempts) == ("corr-item-7", 1)
    # A rerun of the same input sends nothing.
    again = await run(path, store, [fulfillment(n) for n in range(1, 301)])
    assert counts(again) == {"already_done": 300}
    assert sum(store.sends.values()) == 300


async def test_an_unknown_outcome_stays_pending_and_the_rerun_settles_it_once(path: Path) -> None:
    store = FakeStore()
    lost = OutcomeUnknownError("gave up", tracking_id=None, attempts=5)
    store.faults["item-2"] = [(lost, True)]  # applied, answer lost
    store.faults["item-3"] = [(ThrottledError("HTTP 429", status=429), False)]
    items = [fulfillment(n) for n in (1, 2, 3)]
    report = await run(path, store, items)
    assert counts(report) == {"done": 1, "pending": 2}
    assert report.exit_code is ExitCode.PENDING
    assert states(path) == {"order-1": RowState.DONE, "order-2": RowState.PENDING,
                            "order-3": RowState.PENDING}  # fmt: skip
    # The rerun regenerates tracking ids for the input, but the journal's are sent.
    rerun = await run(path, store, [fulfillment(n) for n in (1, 2, 3)])
    assert counts(rerun) == {"done": 2, "already_done": 1}
    assert rerun.exit_code is ExitCode.ALL_DONE
    assert sorted(store.applied.values()) == [1, 1, 1]
    tracking_2 = items[1].request.tracking_id
    assert store.sends[tracking_2] == 2  # the same tracking id both times
    with JournalReader(path) as reader:
        row = reader.row("order-2")
    assert row is not None
    assert (row.state, row.attempts, row.request.tracking_id) == (RowState.DONE, 6, tracking_2)


async def test_a_permanent_refusal_fails_the_row_and_reruns_skip_it(path: Path) -> None:
    store = FakeStore()
    refused = InvalidRequestError("HTTP 400: bad item", status=400, code="InvalidParameter")
    store.faults["item-2"] = [(refused, False)]
    report = await run(path, store, [fulfillment(1), fulfillment(2)])
    failure = FailureInfo.from_error(refused)
    tracking = store.sends.most_common()[-1][0]
    assert counts(report) == {"done": 1, "failed": 1}
    assert report.exit_code is ExitCode.FAILED
    (row,) = report.failures
    assert row == FailedRow(
        key="order-2", line=2, idempotency_key=row.idempotency_key, failure=failure
    )
    assert str(row) == (
        "line 2: key 'order-2' failed: InvalidRequestError: HTTP 400: bad item "
        "(status=400, code=InvalidParameter)"
    )
    rerun = await run(path, store, [fulfillment(1), fulfillment(2)])
    assert counts(rerun) == {"already_done": 1, "already_failed": 1}
    assert rerun.failures == (
        FailedRow(key="order-2", line=2, idempotency_key=row.idempotency_key, failure=failure,
                  previously=True),
    )  # fmt: skip
    assert rerun.exit_code is ExitCode.FAILED
    redrive = await run(path, store, [fulfillment(2)], retry_failed=True)
    assert counts(redrive) == {"done": 1}
    assert store.sends[row.idempotency_key] == 2
    assert tracking in store.sends


async def test_duplicates_and_bad_lines_are_reported_not_sent(path: Path) -> None:
    store = FakeStore()
    rejected: list[LineError] = []
    bad = LineError(line=4, message="invalid JSON: unexpected end of data at column 3")
    items = [
        fulfillment(1),
        fulfillment(1),  # same key, same item: a duplicate line
        Fulfillment(key="order-1", request=ConsumeRequest.for_item(USER, "other"), line=3),
        bad,
        ConsumeRequest.for_item(USER, "item-5"),  # keyed by its tracking id
    ]
    report = await run(path, store, items, on_rejected=rejected.append)
    assert counts(report) == {"done": 2, "duplicates": 1, "rejected": 2}
    assert report.exit_code is ExitCode.REJECTED  # nothing reached the Store and failed: 4, not 2
    conflict = LineError(
        line=3,
        message="key 'order-1' is journaled (line 1, run 1) with a different request: "
        "itemId differs",
        key="order-1",
    )
    assert report.rejections == (conflict, bad)  # in line order
    assert sorted(rejected, key=lambda error: error.line) == [conflict, bad]
    assert sum(store.sends.values()) == 2


async def test_stop_takes_no_new_work_and_lets_in_flight_calls_finish(path: Path) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    store.expect_entered = 4
    items = [fulfillment(n) for n in range(1, 41)]
    async with SqliteJournal(path, synchronous="normal") as journal:
        fulfiller = Fulfiller(store, journal, concurrency=4, grace=60)
        running = asyncio.create_task(fulfiller.run(items))
        await store.all_entered.wait()
        fulfiller.stop("SIGTERM")
        store.gate.set()
        report = await running
    assert report.done == 4
    assert (report.complete, report.stop_reason, report.exit_code) == (
        False,
        "SIGTERM",
        ExitCode.PENDING,
    )
    # Claimed but never sent: pending in the journal and in the report; the rest was not read.
    journaled = states(path)
    assert Counter(journaled.values()) == {RowState.DONE: 4, RowState.PENDING: report.pending}
    assert report.pending == len(journaled) - 4
    assert store.entered == 4
    rerun = await run(path, store, items)
    assert counts(rerun) == {"already_done": 4, "done": 36}
    assert sorted(store.applied.values()) == [1] * 40


async def test_calls_still_running_when_the_grace_period_ends_stay_pending(path: Path) -> None:
    store = FakeStore()
    store.gate = asyncio.Event()  # never set: the calls hang
    store.expect_entered = 3
    items = [fulfillment(n) for n in range(1, 11)]
    async with SqliteJournal(path, synchronous="normal") as journal:
        fulfiller = Fulfiller(store, journal, concurrency=3, grace=0.0)
        running = asyncio.create_task(fulfiller.run(items))
        await store.all_entered.wait()
        fulfiller.stop()
        report = await running
    assert report.done == 0
    assert report.pending == len(states(path)) >= 3
    assert set(states(path).values()) == {RowState.PENDING}
    store.gate = None
    rerun = await run(path, store, items)
    assert counts(rerun) == {"done": 10}


async def test_repeated_authentication_failures_stop_the_run(path: Path) -> None:
    store = FakeStore()
    for n in range(1, 101):
        store.faults[f"item-{n}"] = [
            (AuthenticationError("HTTP 401: bad token", status=401,
                                 inner_code="AuthenticationTokenInvalid"), False)
        ]  # fmt: skip
    report = await run(path, store, [fulfillment(n) for n in range(1, 101)], concurrency=1,
                       auth_failure_limit=5)  # fmt: skip
    assert report.failed == 5
    assert report.stop_reason == (
        "5 authentication failures in a row: check the access token and the Store ID keys "
        "(rerun with --retry-failed once fixed)"
    )
    assert report.exit_code is ExitCode.PENDING


async def test_an_unexpected_client_error_propagates_and_leaves_the_row_pending(path: Path) -> None:
    class Broken(FakeStore):
        async def consume(self, request: ConsumeRequest) -> ConsumeResult:
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await run(path, Broken(), [fulfillment(1)])
    assert states(path) == {"order-1": RowState.PENDING}


async def test_a_broken_journal_stops_the_run_with_its_error(path: Path) -> None:
    store = FakeStore()
    journal = SqliteJournal(path)
    await journal.begin_run()
    journal._connection.close()
    with pytest.raises(JournalError, match="could not be written"):
        await Fulfiller(store, journal).run([fulfillment(1)])
    await journal.close()
    assert sum(store.sends.values()) == 0


async def test_an_async_source_is_read_to_the_end(path: Path) -> None:
    async def source():  # type: ignore[no-untyped-def]
        for n in range(1, 6):
            yield fulfillment(n)

    report = await run(path, FakeStore(), source(), concurrency=2)
    assert counts(report) == {"done": 5}
    assert report.to_dict()["counts"] == {
        "total": 5, "done": 5, "alreadyDone": 0, "failed": 0, "alreadyFailed": 0,
        "pending": 0, "duplicates": 0, "rejected": 0,
    }  # fmt: skip


async def test_no_access_token_stops_the_run_and_keeps_every_row_pending(path: Path) -> None:
    class NoToken(FakeStore):
        async def consume(self, request: ConsumeRequest) -> ConsumeResult:
            self.sends[request.idempotency_key] += 1
            raise AuthenticationError(
                "could not get an access token for scope (ClientAuthenticationError)"
            )

    store = NoToken()
    report = await run(path, store, [fulfillment(n) for n in range(1, 201)], concurrency=4)
    assert report.stop_reason == (
        "could not get an access token for scope (ClientAuthenticationError): check the credential"
    )
    assert (report.failed, report.exit_code, report.complete) == (0, ExitCode.PENDING, False)
    assert report.pending == len(states(path))
    assert set(states(path).values()) == {RowState.PENDING}
    assert sum(store.sends.values()) <= 4  # the calls already in flight, no more


@pytest.mark.parametrize(("options", "message"), [
    ({"concurrency": 0}, "Fulfiller concurrency must be an int >= 1, not 0"),
    ({"grace": -1.0}, "Fulfiller grace must be >= 0 seconds, not -1.0"),
])  # fmt: skip
async def test_bad_options_are_refused(path: Path, options: dict[str, float], message: str) -> None:
    async with SqliteJournal(path) as journal:
        with pytest.raises(ValidationError, match=message):
            Fulfiller(FakeStore(), journal, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [
    TransportError(
        "consume: ClientConnectorCertificateError (not sent): certificate verify failed",
        kind=FailureKind.NOT_SENT,
    ),
    ValidationError("the StoreClient is not open"),
])  # fmt: skip
async def test_a_final_error_before_any_answer_keeps_rows_pending_and_stops(
    path: Path, error: StoreError
) -> None:
    """An invalid certificate (or a client that is not open) is final but says nothing about
    the rows: nothing was sent, so no row may be marked failed for it."""
    error.retryable = False

    class Refusing(FakeStore):
        async def consume(self, request: ConsumeRequest) -> ConsumeResult:
            self.sends[request.idempotency_key] += 1
            raise error

    store = Refusing()
    report = await run(path, store, [fulfillment(n) for n in range(1, 201)], concurrency=4)
    assert report.stop_reason == f"{error.message}: nothing was sent; check the configuration"
    assert (report.failed, report.exit_code, report.complete) == (0, ExitCode.PENDING, False)
    assert report.pending == len(states(path))
    assert set(states(path).values()) == {RowState.PENDING}
    assert sum(store.sends.values()) <= 4


async def test_a_final_maybe_applied_error_leaves_the_row_pending(path: Path) -> None:
    """A 2xx answer too large to read may have been applied: the row is not a failure (a rerun
    settles it under the same tracking id)."""
    store = FakeStore()
    too_large = ResponseTooLargeError("consume: the answer is larger than 8 MiB", status=200)
    store.faults["item-2"] = [(too_large, True)]
    report = await run(path, store, [fulfillment(n) for n in range(1, 4)])
    assert counts(report) == {"done": 2, "pending": 1}
    assert states(path)["order-2"] is RowState.PENDING
    rerun = await run(path, store, [fulfillment(n) for n in range(1, 4)])
    assert counts(rerun) == {"already_done": 2, "done": 1}
    assert sorted(store.applied.values()) == [1, 1, 1]


async def test_a_stop_while_the_run_starts_takes_no_work_and_returns(path: Path) -> None:
    """A SIGTERM that lands while the run is opening its journal run must not leave the feeder
    blocked on a full queue with no worker to empty it (a hang no second signal could end)."""

    class StopsDuringBeginRun(SqliteJournal):
        fulfiller: Fulfiller

        async def begin_run(self, *, retry_failed: bool = False) -> int:
            run_id = await super().begin_run(retry_failed=retry_failed)
            self.fulfiller.stop("SIGTERM received")
            return run_id

    store = FakeStore()
    async with StopsDuringBeginRun(path, synchronous="normal") as journal:
        fulfiller = journal.fulfiller = Fulfiller(store, journal, concurrency=2)
        report = await asyncio.wait_for(
            fulfiller.run([fulfillment(n) for n in range(1, 101)]), timeout=10
        )
    assert (report.stop_reason, report.complete, report.exit_code) == (
        "SIGTERM received",
        False,
        ExitCode.PENDING,
    )
    assert sum(store.sends.values()) == 0
    assert report.pending == len(states(path))


async def test_an_item_of_the_wrong_type_is_a_validation_error(path: Path) -> None:
    store = FakeStore()
    with pytest.raises(ValidationError) as caught:
        await run(path, store, [fulfillment(1), {"key": "order-2"}])
    assert caught.value.message == (
        "Fulfiller.run takes Fulfillment, ConsumeRequest or LineError items, not dict"
    )
