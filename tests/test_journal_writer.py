"""The SQLite journal writer's batching: multi-row statements give the same rows as one
statement per row would, and the commit spacing is configured within bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from store_async.errors import OutcomeUnknownError
from store_async.fulfillment import (
    Fulfillment,
    JournalError,
    JournalReader,
    RowState,
    SqliteJournal,
)
from store_async.fulfillment._schema import connect
from store_async.fulfillment._sqlite_store import DONE, UNKNOWN, JournalStore, done_row, error_row
from store_async.fulfillment.sqlite_journal import _apply_marks
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

USER = UserIdentity(identity_value="user-key", local_ticket_reference="ref")


@pytest.mark.parametrize("interval", [-0.001, 1.5])
def test_commit_interval_outside_0_to_1_second_is_refused(tmp_path: Path, interval: float) -> None:
    with pytest.raises(JournalError, match=r"commit_interval must be within 0\.\.1 seconds"):
        SqliteJournal(tmp_path / "journal", commit_interval=interval)


@pytest.mark.parametrize("count", [1, 2, 3, 15, 16, 17, 63, 64, 65, 255, 256, 257, 300])
async def test_chunked_statements_write_every_row_once(tmp_path: Path, count: int) -> None:
    """Sizes around the chunk boundaries (256, 64, 16, and tails padded to 16 or sent as 1 or 2
    rows): every claim inserted, every mark applied to its own row, attempts added exactly
    once (a padding copy of the last mark is applied once, not twice)."""
    path = tmp_path / "journal"
    requests = [ConsumeRequest.for_item(USER, f"item-{n}") for n in range(count)]
    async with SqliteJournal(path, synchronous="normal") as journal:
        await journal.begin_run()
        claims = [
            journal.claim(Fulfillment(key=f"k{n}", request=r)) for n, r in enumerate(requests)
        ]
        for claim in claims:
            await claim
        for n, request in enumerate(requests):
            if n % 3 == 0:
                await journal.mark_unknown(
                    f"k{n}", OutcomeUnknownError("timed out", tracking_id=request.tracking_id)
                )
            else:
                result = ConsumeResult(
                    tracking_id=request.tracking_id,
                    transaction_id=None,
                    attempts=2,
                    correlation_id=f"c{n}",
                )
                await journal.mark_done(f"k{n}", result)
        await journal.flush()
    with JournalReader(path) as reader:
        rows = {row.key: row for row in reader.rows()}
    assert sorted(rows) == sorted(f"k{n}" for n in range(count))
    for n, request in enumerate(requests):
        row = rows[f"k{n}"]
        assert row.request.idempotency_key == request.tracking_id
        assert row.state is (RowState.PENDING if n % 3 == 0 else RowState.DONE)
        assert row.attempts == (1 if n % 3 == 0 else 2)


async def test_a_key_marked_twice_in_one_batch_keeps_the_arrival_order(tmp_path: Path) -> None:
    """A throttled row is marked unknown, then done after its park; both marks may ride in one
    commit. Applied a kind at a time, the unknown mark would land after the done one (an error
    on a done row) and two marks of one key in one statement would count one attempt."""
    path = tmp_path / "journal"
    requests = [ConsumeRequest.for_item(USER, f"item-{n}") for n in range(3)]
    async with SqliteJournal(path, synchronous="normal") as journal:
        await journal.begin_run()
        for n, request in enumerate(requests):
            await journal.claim(Fulfillment(key=f"k{n}", request=request))

    def unknown(n: int) -> tuple[object, ...]:
        error = OutcomeUnknownError("throttled", tracking_id=requests[n].tracking_id)
        return error_row(f"k{n}", error)

    def done(n: int) -> tuple[object, ...]:
        result = ConsumeResult(tracking_id=requests[n].tracking_id, transaction_id=None, attempts=1)
        return done_row(f"k{n}", result)

    # k0: unknown then done; k1: unknown twice; k2: done once.
    marks = [unknown(0), unknown(1), done(2), done(0), unknown(1)]
    kinds = [UNKNOWN, UNKNOWN, DONE, DONE, UNKNOWN]
    connection = connect(path, readonly=False, synchronous="normal")
    try:
        connection.execute("BEGIN IMMEDIATE")
        _apply_marks(JournalStore(connection), marks, kinds, 1.0)
        connection.execute("COMMIT")
    finally:
        connection.close()
    with JournalReader(path) as reader:
        rows = {row.key: row for row in reader.rows()}
    assert (rows["k0"].state, rows["k0"].attempts, rows["k0"].failure) == (RowState.DONE, 2, None)
    assert (rows["k1"].state, rows["k1"].attempts) == (RowState.PENDING, 2)
    assert rows["k1"].failure is not None
    assert rows["k1"].failure.error_type == "OutcomeUnknownError"
    assert (rows["k2"].state, rows["k2"].attempts, rows["k2"].failure) == (RowState.DONE, 1, None)


def test_a_batch_of_30_claims_and_30_marks_takes_two_statements_each(tmp_path: Path) -> None:
    """30 rows = 16 + 14 padded to 16: two INSERTs and two UPDATEs, not six of each (each
    statement is a GIL round trip for the writer thread). The padding copies insert nothing
    and count one attempt, once."""
    connection = connect(tmp_path / "journal", readonly=False, synchronous="normal")
    statements: list[str] = []
    try:
        store = JournalStore(connection)
        connection.execute("BEGIN IMMEDIATE")
        store.begin_run(False, 1, 1.0)
        requests = [ConsumeRequest.for_item(USER, f"item-{n}") for n in range(30)]
        fulfillments = [Fulfillment(key=f"k{n}", request=r) for n, r in enumerate(requests)]
        connection.set_trace_callback(statements.append)
        claims = store.claim_all(fulfillments, 1.0)
        marks = [
            done_row(
                f"k{n}",
                ConsumeResult(tracking_id=r.tracking_id, transaction_id=None, attempts=1),
            )
            for n, r in enumerate(requests)
        ]
        _apply_marks(store, marks, [DONE] * 30, 2.0)
        connection.set_trace_callback(None)
        connection.execute("COMMIT")
        assert [claim.request for claim in claims] == requests  # every one a fast-path SEND
        counts = connection.execute(
            "SELECT count(*), sum(attempts), min(state), max(state) FROM fulfillments"
        ).fetchone()
    finally:
        connection.close()
    assert counts == (30, 30, "done", "done")
    inserts = [s for s in statements if s.lstrip().startswith("INSERT OR IGNORE")]
    updates = [s for s in statements if s.lstrip().startswith("WITH v(")]
    assert (len(inserts), len(updates)) == (2, 2)
