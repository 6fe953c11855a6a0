"""The MS-CV the client sent with a failed attempt reaches both journals and the batch report."""

from __future__ import annotations

from pathlib import Path

import orjson

from store_async import StoreClient
from store_async.emulator import FaultPlan, RawAnswer
from store_async.fulfillment import Fulfiller, Fulfillment, JournalReader, RowState, SqliteJournal
from store_async.fulfillment.fleet import FleetWorker
from store_async.fulfillment.postgres_journal import PostgresJournal
from store_async.models import ConsumeRequest, UserIdentity
from tests.support.emulator import emulator

REFUSED = RawAnswer(
    400,
    {"Content-Type": "application/json"},
    orjson.dumps({"code": "BadRequest", "message": "no such item"}),
)


def items(count: int) -> list[Fulfillment]:
    user = UserIdentity(identity_value="user-1", local_ticket_reference="ref")
    return [
        Fulfillment.of(ConsumeRequest.for_item(user, f"item-{n}"), key=f"order-{n}", line=n + 1)
        for n in range(count)
    ]


async def test_sqlite_journal_and_report_carry_the_sent_cv_of_a_refused_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    batch = items(3)
    async with (
        emulator(FaultPlan(script={"consume": [REFUSED]})) as fake,
        StoreClient(fake.credential(), endpoints=fake.endpoints) as store,
        SqliteJournal(path, synchronous="normal") as journal,
    ):
        report = await Fulfiller(store, journal, concurrency=1).run(batch)
    refused = fake.request_log[0]
    assert refused.status == 400
    assert refused.cv is not None
    assert refused.cv.endswith(".1")
    assert (report.done, report.failed) == (2, 1)
    (row,) = report.failures
    assert row.failure.cv == refused.cv
    assert row.to_dict()["cv"] == refused.cv
    assert f"cv={refused.cv}" in str(row)
    with JournalReader(path) as reader:
        (failed,) = reader.rows([RowState.FAILED])
    assert failed.cv == refused.cv
    assert failed.failure is not None
    assert failed.failure.cv == refused.cv
    # A later run lists the row as failed in an earlier run, with the same vector.
    async with (
        emulator() as fake,
        StoreClient(fake.credential(), endpoints=fake.endpoints) as store,
        SqliteJournal(path, synchronous="normal") as journal,
    ):
        again = await Fulfiller(store, journal, concurrency=1).run(items(3))
    (earlier,) = again.failures
    assert earlier.previously
    assert earlier.failure.cv == refused.cv


async def test_postgres_journal_and_fleet_report_carry_the_sent_cv_of_a_refused_row(
    postgres_dsn: str,
) -> None:
    async with (
        emulator(FaultPlan(script={"consume": [REFUSED]})) as fake,
        StoreClient(fake.credential(), endpoints=fake.endpoints) as store,
        PostgresJournal(postgres_dsn, worker_id="w") as journal,
    ):
        fleet = await FleetWorker(store, journal, concurrency=1, poll=0.01).run(items(3))
        refused = fake.request_log[0]
        (row,) = [r async for r in journal.rows([RowState.FAILED])]
    assert refused.status == 400
    assert refused.cv is not None
    assert (fleet.report.done, fleet.report.failed) == (2, 1)
    assert row.cv == refused.cv
    assert row.failure is not None
    assert row.failure.cv == refused.cv
    (listed,) = fleet.report.failures
    assert listed.to_dict()["cv"] == refused.cv
    # A later run lists the row as failed in an earlier run, with the same vector.
    async with (
        emulator() as fake,
        StoreClient(fake.credential(), endpoints=fake.endpoints) as store,
        PostgresJournal(postgres_dsn, worker_id="w2") as journal,
    ):
        again = await FleetWorker(store, journal, concurrency=1, poll=0.01).run(items(3))
    (earlier,) = again.report.failures
    assert earlier.previously
    assert earlier.failure.cv == refused.cv
