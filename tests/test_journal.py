"""SqliteJournal: exact row states, claim decisions, group commits, reopening after a crash,
and typed errors for files that are not journals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store_async.errors import (
    AuthenticationError,
    InvalidRequestError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)
from store_async.fulfillment import (
    Claim,
    ClaimOutcome,
    FailureInfo,
    Fulfillment,
    JournalError,
    JournalReader,
    RowState,
    SqliteJournal,
)
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

SECRET = "eyJ-store-id-key-SECRET"
USER = UserIdentity(identity_value=SECRET, local_ticket_reference="user-1")
TRACKING = "3eea1529-611e-4aee-915c-345494e4ee76"
TRANSACTION = "6a1e2a3b-0f0e-4c1d-8b7a-112233445566"


def by_item(key: str, item_id: str = "item-1", tracking_id: str | None = None, *,
            user: UserIdentity = USER, line: int | None = None) -> Fulfillment:  # fmt: skip
    request = ConsumeRequest.for_item(user, item_id, tracking_id)
    return Fulfillment(
        key=key, request=request, line=line, caller_tracking_id=tracking_id is not None
    )


def by_transaction(key: str, product_id: str = "9NBLGGH4R315", transaction_id: str = TRANSACTION,
                   *, line: int | None = None) -> Fulfillment:  # fmt: skip
    request = ConsumeRequest.for_transaction(USER, product_id, transaction_id)
    return Fulfillment(key=key, request=request, line=line)


def read_row(path: Path, key: str):  # type: ignore[no-untyped-def]
    with JournalReader(path) as reader:
        return reader.row(key)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fulfill.journal"


@pytest.fixture(params=["thread", "process"])
def writer(request: pytest.FixtureRequest) -> str:
    """The journal's writer: a thread of this process, or a process of its own."""
    return str(request.param)


async def test_a_new_key_is_journaled_pending_before_the_claim_returns(
    path: Path, writer: str
) -> None:
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        fulfillment = by_item("order-1", tracking_id=TRACKING, line=7)
        claim = await journal.claim(fulfillment)
        assert claim == Claim(outcome=ClaimOutcome.SEND, request=fulfillment.request)
        # Durable now: a separate read-only connection sees it while the journal is open.
        row = read_row(path, "order-1")
        assert row is not None
        assert (row.state, row.request, row.attempts, row.line, row.run_id) == (
            RowState.PENDING, fulfillment.request, 0, 7, 1,
        )  # fmt: skip
        assert row.request.beneficiary.identity_value == SECRET
        assert row.failure is None


async def test_marks_record_exact_outcomes(path: Path, writer: str) -> None:
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        for key in ("done", "failed", "unknown"):
            await journal.claim(by_item(key, item_id=f"item-{key}"))
        await journal.mark_done(
            "done",
            ConsumeResult(tracking_id=TRACKING, transaction_id=None, attempts=3,
                          correlation_id="corr-1", request_id="req-1", cv="cv-1"),
        )  # fmt: skip
        refused = AuthenticationError(
            "HTTP 401: The key expired", status=401, code="Unauthorized",
            inner_code="AuthenticationTokenInvalid", correlation_id="corr-2",
        )  # fmt: skip
        await journal.mark_failed("failed", refused)
        last = ServiceUnavailableError("HTTP 503: busy", status=503)
        unknown = OutcomeUnknownError("gave up", tracking_id=TRACKING, attempts=4, last_error=last)
        await journal.mark_unknown("unknown", unknown)
        await journal.flush()
        with JournalReader(path) as reader:
            done, failed, pending = (reader.row(key) for key in ("done", "failed", "unknown"))
            assert reader.counts() == {RowState.DONE: 1, RowState.FAILED: 1, RowState.PENDING: 1}
    assert done is not None
    assert failed is not None
    assert pending is not None
    assert (done.state, done.attempts, done.correlation_id, done.request_id, done.cv) == (
        RowState.DONE, 3, "corr-1", "req-1", "cv-1",
    )  # fmt: skip
    assert done.failure is None
    assert (failed.state, failed.attempts, failed.correlation_id) == (RowState.FAILED, 1, "corr-2")
    assert failed.failure == FailureInfo(
        error_type="AuthenticationError", status=401, code="Unauthorized",
        inner_code="AuthenticationTokenInvalid", message="HTTP 401: The key expired",
    )  # fmt: skip
    assert (pending.state, pending.attempts) == (RowState.PENDING, 4)
    assert pending.failure == FailureInfo(error_type="OutcomeUnknownError", message="gave up")


async def test_a_rerun_resends_pending_under_the_original_tracking_id(
    path: Path, writer: str
) -> None:
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        first = by_item("order-1")  # generated tracking id
        await journal.claim(first)
    renewed = UserIdentity(identity_value="eyJ-renewed-key", local_ticket_reference="user-1")
    async with SqliteJournal(path, writer=writer) as journal:
        assert await journal.begin_run() == 2
        again = by_item("order-1", user=renewed, line=9)  # another generated tracking id
        assert again.request.tracking_id != first.request.tracking_id
        claim = await journal.claim(again)
    assert claim.outcome is ClaimOutcome.RESEND
    assert claim.request is not None
    assert claim.request.tracking_id == first.request.tracking_id
    assert claim.request.beneficiary == renewed  # the caller's current Store ID key is sent
    row = read_row(path, "order-1")
    assert row is not None
    assert (row.state, row.run_id, row.line) == (RowState.PENDING, 2, 9)
    assert row.request.tracking_id == first.request.tracking_id
    assert row.request.beneficiary.identity_value == "eyJ-renewed-key"  # kept for export


async def test_a_rerun_skips_done_and_failed_rows_unless_retrying_failed(
    path: Path, writer: str
) -> None:
    refused = InvalidRequestError("HTTP 400: bad item", status=400, code="InvalidParameter")
    failed = by_item("failed", item_id="b")
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        await journal.claim(by_item("done", item_id="a"))
        await journal.claim(failed)
        await journal.mark_done(
            "done", ConsumeResult(tracking_id=None, transaction_id=None, attempts=1)
        )
        await journal.mark_failed("failed", refused)
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        assert await journal.claim(by_item("done", item_id="a")) == Claim(
            outcome=ClaimOutcome.ALREADY_DONE
        )
        assert await journal.claim(by_item("failed", item_id="b")) == Claim(
            outcome=ClaimOutcome.ALREADY_FAILED,
            request=failed.request,  # as journaled, with its original tracking id
            failure=FailureInfo.from_error(refused),
        )
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run(retry_failed=True)
        assert (
            await journal.claim(by_item("done", item_id="a"))
        ).outcome is ClaimOutcome.ALREADY_DONE
        resend = await journal.claim(by_item("failed", item_id="b"))
    assert resend.outcome is ClaimOutcome.RESEND
    row = read_row(path, "failed")
    assert row is not None
    assert row.state is RowState.PENDING


async def test_a_key_never_gets_a_second_request(path: Path, writer: str) -> None:
    async with SqliteJournal(path, writer=writer) as journal:
        await journal.begin_run()
        await journal.claim(by_item("order-1", item_id="item-1", tracking_id=TRACKING, line=1))
        await journal.claim(by_transaction("order-2", line=2))
        claims = [
            await journal.claim(fulfillment)
            for fulfillment in (
                by_item("order-1", item_id="item-2", line=3),
                by_item("order-1", tracking_id="11111111-2222-4333-8444-555555555555", line=4),
                by_item("other-key", item_id="item-9", tracking_id=TRACKING, line=5),
                by_transaction("order-2", product_id="9OTHERPRODUCT", line=6),
                by_transaction("order-3", line=7),
                by_item("order-2", line=8),
                by_item("order-1", tracking_id=TRACKING, line=9),
                by_item("order-1", line=10),
            )
        ]
    assert [(claim.outcome, claim.detail) for claim in claims] == [
        (ClaimOutcome.CONFLICT,
         "key 'order-1' is journaled (line 1, run 1) with a different request: itemId differs"),
        (ClaimOutcome.CONFLICT,
         "key 'order-1' is journaled (line 1, run 1) with a different request: trackingId differs"),
        (ClaimOutcome.CONFLICT,
         "its trackingId is already journaled under another key 'order-1' (line 1)"),
        (ClaimOutcome.CONFLICT,
         "key 'order-2' is journaled (line 2, run 1) with a different request: productId differs"),
        (ClaimOutcome.CONFLICT,
         "its transactionId is already journaled under another key 'order-2' (line 2)"),
        (ClaimOutcome.CONFLICT,
         "key 'order-2' is journaled (line 2, run 1) with a different request: "
         "the form (itemId+trackingId vs productId+transactionId) differs"),
        (ClaimOutcome.DUPLICATE, "duplicate of line 1"),
        (ClaimOutcome.DUPLICATE, "duplicate of line 1"),  # a generated tracking id is not binding
    ]  # fmt: skip
    with JournalReader(path) as reader:
        assert reader.counts()[RowState.PENDING] == 2
        assert all(SECRET not in (claim.detail or "") for claim in claims)


async def test_group_commit_decides_concurrent_claims_in_input_order(
    path: Path, writer: str
) -> None:
    """Claims queued while a commit waits are decided in one transaction, in order: of many
    claims of one key, exactly the first is sent."""
    async with SqliteJournal(path, writer=writer, synchronous="normal") as journal:
        await journal.begin_run()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next transaction waits for this one
        fulfillments = [by_item(f"key-{n % 1000}", item_id=f"item-{n % 1000}") for n in range(3000)]
        pending = [journal.claim(fulfillment) for fulfillment in fulfillments]
        commits_before = journal.commits
        blocker.execute("COMMIT")
        blocker.close()
        claims = await asyncio.gather(*pending)
        # Batch 1 is what the writer took before blocking; the rest fits in one more batch.
        assert journal.commits - commits_before <= 2
    outcomes = [claim.outcome for claim in claims]
    assert outcomes[:1000] == [ClaimOutcome.SEND] * 1000
    assert outcomes[1000:] == [ClaimOutcome.DUPLICATE] * 2000
    with JournalReader(path) as reader:
        rows = list(reader.rows())
    assert len(rows) == 1000
    assert [row.request.tracking_id for row in rows] == [
        fulfillment.request.tracking_id for fulfillment in fulfillments[:1000]
    ]


async def test_marks_are_lazy_but_bounded(path: Path, writer: str) -> None:
    async with SqliteJournal(
        path, writer=writer, synchronous="normal", max_lazy_marks=10
    ) as journal:
        await journal.begin_run()
        await asyncio.gather(*(journal.claim(by_item(f"k{n}", item_id=f"i{n}")) for n in range(50)))
        result = ConsumeResult(tracking_id=None, transaction_id=None, attempts=1)
        for n in range(50):
            await journal.mark_done(f"k{n}", result)
            assert journal._lazy_marks <= 10
    with JournalReader(path) as reader:
        assert reader.counts() == {RowState.DONE: 50, RowState.PENDING: 0, RowState.FAILED: 0}


async def test_a_killed_writer_leaves_a_journal_that_reopens_with_every_claim(
    path: Path, writer: str
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from store_async.fulfillment import Fulfillment, SqliteJournal
        from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

        async def main():
            journal = SqliteJournal({str(path)!r}, writer={writer!r})
            await journal.begin_run()
            user = UserIdentity(identity_value="k", local_ticket_reference="u")
            claims = [journal.claim(Fulfillment(key=f"k{{n}}",
                      request=ConsumeRequest.for_item(user, f"i{{n}}"))) for n in range(200)]
            await asyncio.gather(*claims)
            for n in range(100):
                await journal.mark_done(f"k{{n}}", ConsumeResult(
                    tracking_id=None, transaction_id=None, attempts=1))
            print("claimed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == -9, stderr
    assert stdout == b"claimed\n"
    async with SqliteJournal(path, writer=writer) as journal:  # the lock died with the process
        assert await journal.begin_run() == 2
        with JournalReader(path) as reader:
            counts = reader.counts()
            # Every claim survived; lazily written done marks may or may not have.
            assert counts[RowState.PENDING] + counts[RowState.DONE] == 200
            assert counts[RowState.FAILED] == 0


def test_the_file_is_private_and_locked_while_open(path: Path, writer: str) -> None:
    async def scenario() -> None:
        async with SqliteJournal(path, writer=writer) as journal:
            await journal.begin_run()
            with pytest.raises(JournalError, match="in use by another process"):
                SqliteJournal(path, writer=writer)
            with JournalReader(path) as reader:  # readers need no lock
                assert reader.runs() == 1
        await SqliteJournal(path, writer=writer).close()  # released on close

    asyncio.run(scenario())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"key,item\norder-1,item-1\n" * 40,
            "not a usable store_async journal: file is not a database",
        ),
        (os.urandom(4096), "not a usable store_async journal"),
    ],
)
def test_a_file_that_is_not_a_database_is_refused(path: Path, content: bytes, message: str) -> None:
    path.write_bytes(content)
    with pytest.raises(JournalError, match=message):
        SqliteJournal(path)
    with pytest.raises(JournalError, match=message):
        JournalReader(path)
    assert path.read_bytes() == content  # untouched


def test_a_foreign_database_is_refused_untouched(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE orders (id INTEGER)")
    connection.commit()
    connection.close()
    with pytest.raises(
        JournalError,
        match=r"a SQLite database but not a store_async journal \(application_id 0x0\)",
    ):
        SqliteJournal(path)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT name FROM sqlite_schema").fetchall() == [("orders",)]
    connection.close()


def test_a_journal_of_a_newer_schema_is_refused(path: Path) -> None:
    asyncio.run(SqliteJournal(path).close())
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 3")
    connection.close()
    with pytest.raises(JournalError, match="schema version 3, written by a newer store_async"):
        SqliteJournal(path)


def test_unusable_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open journal"):
        SqliteJournal(tmp_path / "missing-dir" / "j")
    with pytest.raises(JournalError, match="cannot open journal"):
        SqliteJournal(tmp_path)
    with pytest.raises(JournalError, match="no journal file at"):
        JournalReader(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.touch()
    with pytest.raises(JournalError, match="empty file: no fulfillment was journaled yet"):
        JournalReader(empty)


def test_an_empty_file_becomes_a_journal(path: Path) -> None:
    path.touch()

    async def scenario() -> int:
        async with SqliteJournal(path) as journal:
            return await journal.begin_run()

    assert asyncio.run(scenario()) == 1


async def test_a_journal_that_cannot_write_fails_every_waiter_with_a_typed_error(
    path: Path,
) -> None:
    journal = SqliteJournal(path)
    await journal.begin_run()
    journal._connection.close()  # simulate an I/O failure under the writer
    with pytest.raises(JournalError, match="could not be written"):
        await journal.claim(by_item("k1"))
    with pytest.raises(JournalError, match="could not be written"):
        await journal.claim(by_item("k2"))
    with pytest.raises(JournalError, match="could not be written"):
        await journal.flush()
    await journal.mark_done("k1", ConsumeResult(tracking_id=None, transaction_id=None, attempts=1))
    await journal.close()
    with pytest.raises(JournalError, match="is closed"):
        await journal.claim(by_item("k3"))


def test_a_damaged_journal_fails_with_typed_errors(path: Path, writer: str) -> None:
    async def fill() -> None:
        async with SqliteJournal(path, writer=writer) as journal:
            await journal.begin_run()
            await asyncio.gather(*(journal.claim(by_item(f"k{n}", f"i{n}")) for n in range(2000)))

    asyncio.run(fill())
    connection = sqlite3.connect(path)  # fold the WAL into the file, then damage the file
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * 4096
    data[2 * 4096 :] = b"\xa5" * (len(data) - 2 * 4096)  # keep pages 1-2, overwrite the rest
    path.write_bytes(bytes(data))
    with JournalReader(path) as reader, pytest.raises(JournalError, match="cannot read journal"):
        reader.counts()

    async def claim() -> None:
        async with SqliteJournal(path, writer=writer) as journal:
            await journal.begin_run()
            await journal.claim(by_item("k1", "i1"))

    with pytest.raises(JournalError, match="could not be written") as raised:
        asyncio.run(claim())
    assert "malformed" in str(raised.value)


async def test_a_value_sqlite_cannot_store_fails_its_waiters_instead_of_killing_the_writer(
    path: Path, writer: str
) -> None:
    """A lone surrogate cannot be encoded as UTF-8: the claim must fail with a typed error, and
    the journal still close, rather than the writer thread dying and every waiter hanging."""
    journal = SqliteJournal(path, writer=writer, synchronous="normal")
    await journal.begin_run()
    with pytest.raises(JournalError, match="could not be written: UnicodeEncodeError") as caught:
        await asyncio.wait_for(journal.claim(by_item("bad-\ud800-key")), timeout=10)
    assert "\ud800" not in str(caught.value)
    with pytest.raises(JournalError, match="could not be written"):
        await asyncio.wait_for(journal.claim(by_item("k2")), timeout=10)
    await asyncio.wait_for(journal.close(), timeout=10)


@pytest.mark.parametrize(("options", "level"), [({}, 2), ({"synchronous": "normal"}, 1)])
async def test_intents_are_fsynced_at_commit_unless_normal_is_chosen(
    path: Path, options: dict[str, str], level: int
) -> None:
    """FULL (2) by default: the WAL is fsynced at each group commit, before any claim returns,
    so an intent survives power loss; NORMAL (1) only a process crash."""
    async with SqliteJournal(path, **options) as journal:  # type: ignore[arg-type]
        await journal.begin_run()
        await journal.claim(by_item("k1"))
        connection = journal._connection
        assert connection.execute("PRAGMA synchronous").fetchone() == (level,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_reruns_store_no_new_copy_of_a_store_id_key_already_journaled(
    path: Path, writer: str
) -> None:
    """Each distinct user's Store ID key is stored once: reruns of done, pending, duplicate
    or conflicting lines (in a fresh process, with an empty cache) add no beneficiary row."""

    def claims() -> list[Fulfillment]:
        users = [
            UserIdentity(identity_value=f"eyJ-key-{n}", local_ticket_reference=f"user-{n}")
            for n in range(3)
        ]
        return [
            Fulfillment(key=f"order-{n}", request=ConsumeRequest.for_item(users[n % 3], f"i{n}"))
            for n in range(12)
        ] + [by_item("order-0", "another-item")]  # a conflict

    def beneficiaries() -> int:
        with sqlite3.connect(path) as connection:
            return int(connection.execute("SELECT count(*) FROM beneficiaries").fetchone()[0])

    for run in range(3):
        async with SqliteJournal(path, writer=writer, synchronous="normal") as journal:
            await journal.begin_run()
            outcomes = [
                claim.outcome for claim in await asyncio.gather(*map(journal.claim, claims()))
            ]
            for n in range(0, 12, 2):  # even rows done, odd ones stay pending
                await journal.mark_done(
                    f"order-{n}", ConsumeResult(tracking_id=None, transaction_id=None, attempts=1)
                )
        expected = [ClaimOutcome.SEND] * 12 if run == 0 else [
            ClaimOutcome.ALREADY_DONE if n % 2 == 0 else ClaimOutcome.RESEND for n in range(12)
        ]  # fmt: skip
        assert outcomes == [*expected, ClaimOutcome.CONFLICT]
        assert beneficiaries() == 3


async def test_a_writer_process_that_dies_fails_every_waiter_with_a_typed_error(
    path: Path,
) -> None:
    """The writer process killed under the journal (the OOM killer, say): claims waiting for
    it and later ones fail with JournalError, nothing hangs, and close still works."""
    journal = SqliteJournal(path, writer="process")
    assert await journal.begin_run() == 1
    assert (await journal.claim(by_item("k1"))).outcome is ClaimOutcome.SEND
    assert journal._process is not None
    journal._process.kill()
    with pytest.raises(JournalError, match=r"writer process exited \(code -9\)"):
        await asyncio.wait_for(journal.claim(by_item("k2", "i2")), timeout=30)
    with pytest.raises(JournalError, match="could not be written"):
        await journal.claim(by_item("k3", "i3"))
    with pytest.raises(JournalError, match="could not be written"):
        await journal.flush()
    await asyncio.wait_for(journal.close(), timeout=30)
    assert read_row(path, "k1").state is RowState.PENDING  # committed before the kill
    with JournalReader(path) as reader:
        assert [row.key for row in reader.rows()] == ["k1"]


async def test_a_flush_right_after_the_writer_process_died_fails_and_never_passes_for_done(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's end of file can come before its exit code: the journal reports the death
    once it has the code, without blocking the loop. Marks sent to the dead writer are not
    committed, so a flush issued in between must fail too, not return as if they were durable."""
    journal = SqliteJournal(path, writer="process")
    await journal.begin_run()
    assert (await journal.claim(by_item("k1"))).outcome is ClaimOutcome.SEND
    writer = journal._process
    assert writer is not None
    reaped = False
    poll = writer._process.poll
    monkeypatch.setattr(writer._process, "poll", lambda: poll() if reaped else None)
    end_of_file = asyncio.Event()
    exited = writer._exited

    def seen() -> None:
        exited()
        end_of_file.set()

    monkeypatch.setattr(writer, "_exited", seen)
    writer.kill()
    await asyncio.wait_for(end_of_file.wait(), timeout=30)
    await journal.mark_done(
        "k1", ConsumeResult(tracking_id=TRACKING, transaction_id=None, attempts=1)
    )
    flush = asyncio.ensure_future(journal.flush())
    await asyncio.sleep(0)
    assert not flush.done()  # no answer can come: it waits for the exit report
    reaped = True
    with pytest.raises(JournalError, match=r"writer process exited \(code -9\)"):
        await asyncio.wait_for(flush, timeout=30)
    await asyncio.wait_for(journal.close(), timeout=30)
    assert read_row(path, "k1").state is RowState.PENDING


async def test_the_writer_process_records_the_fulfillers_pid_and_commits_before_answering(
    path: Path,
) -> None:
    """The runs table names the fulfilling process, not the writer; a claim's answer means its
    row is already readable by another connection (committed)."""
    async with SqliteJournal(path, writer="process") as journal:
        assert journal.commits == 1  # entering waited for the writer to answer (started)
        await journal.begin_run()
        await journal.claim(by_item("k1"))
        assert read_row(path, "k1").state is RowState.PENDING
        assert journal.commits == 3
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT pid FROM runs").fetchall() == [(os.getpid(),)]
    finally:
        connection.close()


def test_an_unknown_writer_is_refused(path: Path) -> None:
    with pytest.raises(JournalError, match="writer must be 'thread' or 'process', not 'fork'"):
        SqliteJournal(path, writer="fork")  # type: ignore[arg-type]


def test_a_writer_process_that_cannot_start_is_a_typed_error_at_open(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded or frozen Python may have no interpreter to start: the journal says so when
    it is opened (and suggests the thread), and leaves the file unlocked."""
    monkeypatch.setattr(sys, "executable", str(path.parent / "no-such-python"))
    with pytest.raises(JournalError, match=r"cannot start the writer process .*writer='thread'"):
        SqliteJournal(path, writer="process")
    monkeypatch.undo()
    asyncio.run(SqliteJournal(path, writer="process").close())  # the lock was released


async def test_a_process_journal_opened_and_closed_unused_stops_its_writer(path: Path) -> None:
    journal = SqliteJournal(path, writer="process")
    assert journal._process is not None
    await asyncio.wait_for(journal.close(), timeout=30)
    assert journal._process._process.returncode == 0


def _open_files(prefix: str) -> list[str]:
    """The paths this process has open that start with ``prefix`` (Linux: /proc/self/fd)."""
    opened = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(prefix):
                opened.append(target)
    return sorted(opened)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
async def test_with_a_writer_process_this_process_holds_only_the_journals_lock(
    path: Path,
) -> None:
    """The file is checked (or created) at open; then the writer process is the only one with
    a SQLite connection: this process keeps just the locked descriptor (no idle connection,
    no WAL or shared-memory file open here). The writer thread keeps its connection."""
    async with SqliteJournal(path, writer="process") as journal:
        await journal.begin_run()
        await journal.claim(by_item("k1"))
        assert _open_files(str(path)) == [str(path)]
    assert _open_files(str(path)) == []
    async with SqliteJournal(path, writer="thread") as journal:
        await journal.begin_run()
        await journal.claim(by_item("k2", "i2"))
        assert _open_files(str(path)) == sorted([str(path)] * 2 + [f"{path}-shm", f"{path}-wal"])
    assert _open_files(str(path)) == []


async def test_the_writer_process_keeps_each_rows_beneficiary_when_its_table_starts_afresh(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beneficiaries cross the pipe once, numbered; with room for 3 numbers the table starts
    afresh several times, within frames and between them: every row still has its own user."""
    from store_async.fulfillment import _journal_process

    monkeypatch.setattr(_journal_process, "_IDENTITIES", 3)
    users = [
        UserIdentity(identity_value=f"eyJ-{n}", local_ticket_reference=f"u{n}") for n in range(7)
    ]
    expected: dict[str, UserIdentity] = {}
    async with SqliteJournal(path, writer="process") as journal:
        await journal.begin_run()
        for batch in range(4):  # each batch one frame; users come back across frames
            claims = []
            for n in range(6):
                key, user = f"k{batch}-{n}", users[(batch * 2 + n) % 7]
                expected[key] = user
                claims.append(journal.claim(by_item(key, f"i-{key}", user=user)))
            assert {(await claim).outcome for claim in claims} == {ClaimOutcome.SEND}
    with JournalReader(path) as reader:
        journaled = {row.key: row.request.beneficiary for row in reader.rows()}
    assert journaled == expected


async def test_both_writers_store_the_same_rows_for_every_form_of_claim(tmp_path: Path) -> None:
    """The writer process builds its rows straight from the wire (no request objects); the
    thread builds them from the requests. Every column but the times must come out the same:
    generated and caller-chosen tracking ids, transaction ids, v8 quantity, sandbox and order
    ids, a user first met in this batch and one met earlier."""
    other = UserIdentity(identity_value="eyJ-other", local_ticket_reference="user-2")
    forms = [
        by_item("generated", "item-1", line=1),
        by_item("chosen", "item-2", TRACKING, user=other, line=2),
        by_transaction("by-transaction", line=3),
        Fulfillment(
            key="v8",
            request=ConsumeRequest.for_quantity(
                other, "9NCOINS", 5, sandbox_id="XDKS.1", include_order_ids=True
            ),
            line=4,
        ),
    ]
    tables = []
    for writer in ("thread", "process"):
        path = tmp_path / f"{writer}.journal"
        async with SqliteJournal(path, writer=writer) as journal:
            await journal.begin_run()
            claims = [await journal.claim(fulfillment) for fulfillment in forms[:1]]
            claims += await asyncio.gather(*(journal.claim(f) for f in forms[1:]))
            assert [claim.outcome for claim in claims] == [ClaimOutcome.SEND] * len(forms)
            assert [claim.request for claim in claims] == [f.request for f in forms]
        with sqlite3.connect(path) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(
                "SELECT f.*, b.identity_type, b.identity_value, b.local_ticket_reference "
                "FROM fulfillments AS f JOIN beneficiaries AS b ON b.id = f.beneficiary_id "
                "ORDER BY f.rowid"
            ).fetchall()
        # (a sqlite3.Row iterates over its values: keys() is needed)
        untimed = [{k: row[k] for k in row.keys() if not k.endswith("_at")} for row in rows]  # noqa: SIM118
        tables.append(untimed)
    thread, process = tables
    assert process == thread
    assert [(row["key"], row["caller_chosen"], row["remove_quantity"]) for row in thread] == [
        ("generated", 0, None),
        ("chosen", 1, None),
        ("by-transaction", 1, None),
        ("v8", 0, 5),
    ]
    assert thread[3]["sandbox_id"] == "XDKS.1"
    assert thread[3]["include_order_ids"] == 1
    assert thread[2]["idempotency_key"] == TRANSACTION


def test_a_writer_spacing_its_commits_commits_at_once_for_enough_claims_or_a_waiter() -> None:
    """Under load a writer waits up to commit_interval to fill a commit, but workers wait for
    their claims: ENOUGH_CLAIMS claims (over any number of frames) or any waiter end the wait."""
    from store_async.fulfillment._journal_process import ENOUGH_CLAIMS, FLUSH, _commit_now

    def frame(claims: int, waiters: int = 0) -> list[object]:
        return [[[]] * claims, [], [[FLUSH, None]] * waiters, [], 0]

    assert not _commit_now([frame(ENOUGH_CLAIMS - 1)])
    assert not _commit_now([frame(200), frame(ENOUGH_CLAIMS - 201)])
    assert _commit_now([frame(200), frame(ENOUGH_CLAIMS - 200)])
    assert _commit_now([frame(0), frame(0, waiters=1)])
