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
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

USER = UserIdentity(identity_value="user-key", local_ticket_reference="ref")


@pytest.mark.parametrize("interval", [-0.001, 1.5])
def test_commit_interval_outside_0_to_1_second_is_refused(tmp_path: Path, interval: float) -> None:
    with pytest.raises(JournalError, match=r"commit_interval must be within 0\.\.1 seconds"):
        SqliteJournal(tmp_path / "journal", commit_interval=interval)


@pytest.mark.parametrize("count", [1, 2, 3, 127, 128, 129, 300])
async def test_chunked_statements_write_every_row_once(tmp_path: Path, count: int) -> None:
    """Sizes around the chunk boundaries (128, 32, 8, 2, 1): every claim inserted, every mark
    applied to its own row, attempts added exactly once."""
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
