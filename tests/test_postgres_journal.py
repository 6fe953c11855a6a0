"""PostgresJournal against a real PostgreSQL server: schema, loading, leases, marks, secrets.

Lease expiry is tested by moving ``lease_expires`` into the past in SQL, not by waiting.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest

from store_async import StoreClient
from store_async.emulator import StoreEmulator
from store_async.errors import InvalidRequestError, OutcomeUnknownError
from store_async.fulfillment import (
    ClaimOutcome,
    Fulfiller,
    Fulfillment,
    JournalError,
    RowState,
    SqliteJournal,
)
from store_async.fulfillment._pg_schema import SCHEMA_VERSION, redact_dsn
from store_async.fulfillment.fleet import FleetWorker
from store_async.fulfillment.postgres_journal import PostgresJournal, user_key
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity
from tests.support.postgres import PostgresServer

CLI = "import sys; from store_async.cli import main; sys.exit(main())"


def user(n: int) -> UserIdentity:
    return UserIdentity(identity_value=f"user-{n}", local_ticket_reference=f"user-{n}")


def item(n: int, user_number: int = 0, tracking_id: str | None = None) -> Fulfillment:
    request = ConsumeRequest.for_item(
        user(user_number), f"item-{n}", tracking_id or str(uuid.UUID(int=n + 1, version=4))
    )
    return Fulfillment.of(request, key=f"line-{n}", line=n + 1, caller_tracking_id=True)


def result(request: ConsumeRequest) -> ConsumeResult:
    return ConsumeResult(
        tracking_id=request.tracking_id, transaction_id=None, attempts=1, correlation_id="c"
    )


async def sql(dsn: str, server: PostgresServer, query: str) -> object:
    connection = await asyncpg.connect(dsn, password=server.password)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def test_the_schema_is_created_once_and_a_newer_one_is_refused(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    first, second = PostgresJournal(postgres_dsn), PostgresJournal(postgres_dsn)
    await asyncio.gather(first.open(), second.open())  # two workers starting together
    await first.close()
    await second.close()
    version = "SELECT version FROM store_async_journal_version"
    assert await sql(postgres_dsn, postgres_server, version) == SCHEMA_VERSION
    await sql(postgres_dsn, postgres_server, "UPDATE store_async_journal_version SET version = 99")
    with pytest.raises(JournalError) as caught:
        await PostgresJournal(postgres_dsn).open()
    assert "schema version 99" in str(caught.value)
    assert "upgrade store_async" in str(caught.value)


async def test_a_wrong_password_is_a_journal_error_that_never_shows_it(
    postgres_server: PostgresServer, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD")
    secret = "s3cret-Passw0rd"
    dsn = postgres_dsn.replace("postgres@", f"postgres:{secret}@")
    journal = PostgresJournal(dsn)
    assert secret not in repr(journal)
    with pytest.raises(JournalError) as caught:
        await journal.open()
    assert secret not in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    assert "postgres:***@127.0.0.1" in str(caught.value)


def test_redact_dsn_hides_passwords_in_the_user_part_and_in_parameters() -> None:
    assert redact_dsn("postgresql://u:p%40ss@h:5/db?sslmode=require") == (
        "postgresql://u:***@h:5/db?sslmode=require"
    )
    assert redact_dsn("postgres://u@h/db?password=x&application_name=a") == (
        "postgres://u@h/db?password=***&application_name=a"
    )
    assert redact_dsn("postgresql://h/db") == "postgresql://h/db"


async def test_concurrent_loaders_journal_each_key_once_and_report_a_changed_request(
    postgres_dsn: str,
) -> None:
    batch = [item(n, n % 3) for n in range(300)]
    async with (
        PostgresJournal(postgres_dsn, worker_id="a") as a,
        PostgresJournal(postgres_dsn, worker_id="b") as b,
    ):
        await a.begin_run()
        await b.begin_run()
        claims_a, claims_b = await asyncio.gather(a.load(batch), b.load(batch))
        outcomes = [(x.outcome, y.outcome) for x, y in zip(claims_a, claims_b, strict=True)]
        # Per key, exactly one loader inserted it; the other found it pending.
        assert all(sorted([x.value, y.value]) == ["resend", "send"] for x, y in outcomes), outcomes
        changed = Fulfillment.of(
            ConsumeRequest.for_item(user(0), "another-item", batch[0].request.tracking_id),
            key="line-0",
            caller_tracking_id=True,
        )
        stolen = Fulfillment.of(
            ConsumeRequest.for_item(user(0), "item-1", batch[1].request.tracking_id),
            key="other-key",
            caller_tracking_id=True,
        )
        conflict, taken = await a.load([changed, stolen])
        assert conflict.outcome is ClaimOutcome.CONFLICT
        assert conflict.detail is not None
        assert "itemId differs" in conflict.detail
        assert taken.outcome is ClaimOutcome.CONFLICT
        assert taken.detail == (
            "its trackingId is already journaled under another key 'line-1' (line 2)"
        )
        counts = await a.counts()
    assert counts == {"pending": 300, "done": 0, "failed": 0, "leased": 0, "parked": 0}


async def test_a_user_is_leased_to_one_worker_and_a_lost_lease_records_nothing(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    async with (
        PostgresJournal(postgres_dsn, worker_id="a") as a,
        PostgresJournal(postgres_dsn, worker_id="b") as b,
    ):
        await a.begin_run()
        await a.load([item(n, n % 4) for n in range(40)])
        leases_a = await a.lease(users=2, rows_per_user=100, seconds=60)
        leases_b = await b.lease(users=10, rows_per_user=100, seconds=60)
        users_a = {lease.user_id for lease in leases_a}
        users_b = {lease.user_id for lease in leases_b}
        assert len(users_a) == 2
        assert len(users_b) == 2
        assert not users_a & users_b  # one user, one worker
        assert await b.lease(users=10, rows_per_user=100, seconds=60) == []
        assert sum(len(lease.rows) for lease in leases_a + leases_b) == 40
        # a's leases run out (a paused, say); b takes its users with the same rows and keys.
        await sql(
            postgres_dsn,
            postgres_server,
            "UPDATE store_async_users SET lease_expires = now() - interval '1 s' "
            "WHERE lease_owner = 'a'",
        )
        taken = await b.lease(users=10, rows_per_user=100, seconds=60)
        assert {lease.user_id for lease in taken} == users_a
        old = {row.key: row for lease in leases_a for row in lease.rows}
        new = {row.key: row for lease in taken for row in lease.rows}
        assert old.keys() == new.keys()
        assert all(new[key].request == old[key].request for key in old)  # original keys
        assert await a.renew({lease.token for lease in leases_a}, 60) == set()
        # a's answers are refused; b's are recorded.
        key = next(iter(old))
        refused = await a.settle(
            done=[(key, old[key].token, result(old[key].request))],
            release=[(lease.user_id, lease.token) for lease in leases_a],
        )
        assert refused == set()
        error = InvalidRequestError("bad", status=400)
        assert await b.settle(failed=[(key, new[key].token, error)]) == {key}
        row = await b.row(key)
        assert row is not None
        assert row.state is RowState.FAILED
        assert (
            await sql(
                postgres_dsn,
                postgres_server,
                "SELECT settled_by FROM store_async_fulfillments WHERE state = 'failed'",
            )
            == "b"
        )
        # The release of a lost lease did not free b's users.
        assert (
            await sql(
                postgres_dsn,
                postgres_server,
                "SELECT count(*) FROM store_async_users WHERE lease_owner = 'b'",
            )
            == 4
        )


async def test_repeated_unknown_outcomes_park_a_row_until_it_is_loaded_again(
    postgres_dsn: str,
) -> None:
    fulfillment = item(0)
    unknown = OutcomeUnknownError("timed out", tracking_id=fulfillment.request.tracking_id)
    async with PostgresJournal(postgres_dsn, retry_after=0.0) as journal:
        await journal.begin_run()
        await journal.load([fulfillment])
        for _ in range(2):
            (lease,) = await journal.lease(users=1, rows_per_user=10, seconds=60)
            marked = await journal.settle(
                unknown=[("line-0", lease.token, unknown)],
                release=[(lease.user_id, lease.token)],
                max_tries=2,
            )
            assert marked == {"line-0"}
        assert await journal.lease(users=1, rows_per_user=10, seconds=60) == []
        assert not await journal.has_work()
        counts = await journal.counts()
        assert (counts["pending"], counts["parked"]) == (1, 1)
        await journal.begin_run()  # a rerun loads the input again: the row is workable
        (claim,) = await journal.load([fulfillment])
        assert claim.outcome is ClaimOutcome.RESEND
        assert claim.request == fulfillment.request
        assert await journal.has_work()


async def test_the_fulfiller_runs_on_a_postgres_journal_like_on_sqlite(
    postgres_dsn: str,
) -> None:
    items = [item(n, n % 5) for n in range(200)]
    async with (
        StoreEmulator(auto_create=True) as emu,
        StoreClient(emu.credential(), endpoints=emu.endpoints) as client,
    ):
        async with PostgresJournal(postgres_dsn) as journal:
            report = await Fulfiller(client, journal, concurrency=16).run(items)
        assert (report.done, report.exit_code) == (200, 0)
        async with PostgresJournal(postgres_dsn) as journal:
            again = await Fulfiller(client, journal, concurrency=16).run(items)
            assert (again.done, again.already_done) == (0, 200)
            assert (await journal.counts())["done"] == 200
        assert emu.ledger.total == 200


async def test_a_fleet_worker_settles_everything_and_leaves_no_lease(postgres_dsn: str) -> None:
    items = [item(n, n % 7) for n in range(500)]
    async with (
        StoreEmulator(auto_create=True) as emu,
        StoreClient(emu.credential(), endpoints=emu.endpoints) as client,
        PostgresJournal(postgres_dsn, worker_id="w") as journal,
    ):
        report = await FleetWorker(client, journal, concurrency=8, poll=0.01).run(items)
        assert report.exit_code == 0
        assert (report.loaded, report.report.done, report.lost) == (500, 500, 0)
        assert report.journal == {
            "pending": 0, "done": 500, "failed": 0, "leased": 0, "parked": 0
        }  # fmt: skip
        assert await journal.leases() == []
    assert emu.ledger.total == 500


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, timeout=120
    )


async def test_journal_json_for_postgres_and_sqlite(
    postgres_dsn: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    lines = [item(n, n % 2) for n in range(6)]
    failing = InvalidRequestError(
        "no such item", status=400, code="BadRequest", cv="tul4NUsfs9Cl7mOf.2"
    )
    async with PostgresJournal(postgres_dsn) as journal:
        await journal.begin_run()
        await journal.load(lines)
        await journal.settle(
            done=[(f.key, None, result(f.request)) for f in lines[:4]],
            failed=[("line-4", None, failing)],
        )
    async with SqliteJournal(tmp_path / "j.sqlite", synchronous="normal") as sqlite:
        await sqlite.begin_run()
        for claim in [sqlite.claim(f) for f in lines]:
            await claim
        for f in lines[:4]:
            await sqlite.mark_done(f.key, result(f.request))
        await sqlite.mark_failed("line-4", failing)
    env = {**os.environ, "PGPASSWORD": postgres_server.password}
    documents = []
    for target in (postgres_dsn, str(tmp_path / "j.sqlite")):
        completed = await asyncio.to_thread(run_cli, "journal", target, "--json", env=env)
        assert completed.returncode == 0, completed.stderr
        assert postgres_server.password not in completed.stdout + completed.stderr
        documents.append(orjson.loads(completed.stdout))
    postgres = documents[0]
    for document in documents:
        assert document["runs"] == 1
        assert {k: document["counts"][k] for k in ("pending", "done", "failed")} == {
            "pending": 1, "done": 4, "failed": 1
        }  # fmt: skip
        assert document["failed"] == [
            {
                "key": "line-4", "line": 5, "idempotencyKey": lines[4].request.tracking_id,
                "error": "InvalidRequestError", "status": 400, "code": "BadRequest",
                "innerCode": None, "message": "no such item", "cv": "tul4NUsfs9Cl7mOf.2",
            }
        ]  # fmt: skip
        assert "user-0" not in orjson.dumps(document).decode()  # no Store ID key
    assert postgres["counts"]["leased"] == 0
    assert postgres["leases"] == []
    assert postgres["journal"] == postgres_dsn


def test_user_key_is_the_store_id_keys_user_or_a_digest() -> None:
    assert user_key(user(1)).startswith("key:")
    assert user_key(user(1)) == user_key(user(1))
    assert user_key(user(1)) != user_key(user(2))
