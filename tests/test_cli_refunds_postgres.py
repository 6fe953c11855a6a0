"""``store-async refunds sync|export --journal postgresql://...`` end to end: real subprocesses,
a real Azurite, a real PostgreSQL, the emulator's SAS route and control plane in a thread.

The kills and the overlap of two syncers are placed by :class:`QueueProxy` at chosen queue
requests (see ``tests/test_cli_refunds.py``); nothing waits on timing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from tests.azurite import Azurite, azurite  # noqa: F401 - the fixture
from tests.support.postgres import PostgresServer
from tests.test_cli_fulfill import EmulatorThread
from tests.test_cli_refunds import QueueProxy, cli, control, export, sync_command


def journal_events(dsn: str, server: PostgresServer) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(dsn, password=server.password)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM store_async_refund_events"))
        finally:
            await connection.close()

    return asyncio.run(count())


def summary_numbers(summary: str) -> tuple[int, int, int]:
    """(new events, duplicates, rejected) from ``refunds sync``'s summary line."""
    counts = summary.split(": ", 2)[2]
    new, duplicates, rejected = (int(part.split()[0]) for part in counts.split(";")[0].split(","))
    return new, duplicates, rejected


@pytest.fixture
def queue(azurite: Azurite) -> tuple[Azurite, str]:  # noqa: F811
    return azurite, azurite.new_queue()


@pytest.mark.slow
def test_sigkilled_twice_then_until_empty_records_every_event_once_in_postgresql(
    queue: tuple[Azurite, str], postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """The issue's Show at a smaller scale, on the PostgreSQL journal."""
    server, name = queue
    with QueueProxy(f"http://127.0.0.1:{server.port}") as proxy:
        sas = server.sas_uri(name).replace(f"http://127.0.0.1:{server.port}", proxy.url)
        with EmulatorThread(refund_queue=sas) as emulator:
            issued = control(
                emulator,
                {"count": 120, "duplicates": 15, "base64urlShare": 0.25, "poison": 2, "seed": 11},
            )
            assert (issued["messages"], len(set(issued["eventIds"]))) == (137, 120)
            # A receive answered but never seen (hidden, nothing recorded), then a batch
            # committed whose deletes stop half way (its copies come back as duplicates).
            kills = [("receive", 2, "after"), ("delete", 45, "before")]
            command = sync_command(emulator, postgres_dsn, "--visibility-timeout", "3")
            recorded: list[int] = []
            for kill_at in kills:
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                proxy.arm(process, kill_at)
                assert process.wait(timeout=120) == -signal.SIGKILL, kill_at
                assert proxy.killed
                recorded.append(journal_events(postgres_dsn, postgres_server))
            proxy.arm(process, None)
            final = subprocess.run(
                [*command, "--until-empty"], capture_output=True, text=True, timeout=300
            )
    summary = final.stdout.strip()
    # 2 when this run met a poison message; the killed runs may have rejected both already.
    assert final.returncode == (2 if " 0 rejected" not in summary else 0), final.stderr
    assert summary.endswith("queue drained")
    # The first run recorded its first batch only (copies and poison included: up to 32
    # events); the second got further, and left work for the last.
    assert 0 < recorded[0] <= 32
    assert recorded[0] < recorded[1] < 120
    events = export(postgres_dsn)
    ids = [event["id"] for event in events]
    assert sorted(ids) == sorted(set(issued["eventIds"]))  # exactly the 120 ids, each once
    assert len(ids) == 120
    assert len(export(postgres_dsn, "--rejected")) == 2
    assert server.count(name) == 0


class OverlapProxy(QueueProxy):
    """Holds the first receive's answer until a second receive arrives: two syncers are
    certain to hold batches of the same queue at the same time."""

    both: asyncio.Event | None = None
    receives = 0

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        receive = (
            request.method == "GET"
            and request.path.endswith("/messages")
            and "peekonly" not in request.query
        )
        if receive:
            if self.both is None:
                self.both = asyncio.Event()
            self.receives += 1
            if self.receives == 2:
                self.both.set()
            elif self.receives == 1:
                await asyncio.wait_for(self.both.wait(), 120)
        return await super()._forward(request)


def test_two_syncers_on_one_queue_and_one_database_record_each_event_once(
    queue: tuple[Azurite, str], postgres_dsn: str
) -> None:
    server, name = queue
    with OverlapProxy(f"http://127.0.0.1:{server.port}") as proxy:
        sas = server.sas_uri(name).replace(f"http://127.0.0.1:{server.port}", proxy.url)
        with EmulatorThread(refund_queue=sas) as emulator:
            issued = control(emulator, {"count": 150, "duplicates": 50, "poison": 1, "seed": 13})
            assert issued["messages"] == 201
            command = [*sync_command(emulator, postgres_dsn, "--until-empty")]
            processes = [
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)
            ]
            results = [process.communicate(timeout=300) for process in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode in (0, 2), err
    numbers = [summary_numbers(out.strip()) for out, _ in results]
    assert all(out.strip().endswith("queue drained") for out, _ in results)
    assert all(new > 0 for new, _, _ in numbers)  # both recorded part of the queue
    assert sum(new for new, _, _ in numbers) == 150
    assert sum(duplicates for _, duplicates, _ in numbers) == 50
    assert sum(rejected for _, _, rejected in numbers) == 1
    ids = [event["id"] for event in export(postgres_dsn)]
    assert sorted(ids) == sorted(set(issued["eventIds"]))
    assert len(ids) == 150
    assert server.count(name) == 0


def test_export_and_errors_on_postgresql_never_show_the_password(
    queue: tuple[Azurite, str],
    postgres_server: PostgresServer,
    postgres_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, name = queue
    missing = cli("refunds", "export", "--journal", postgres_dsn)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        f"store-async refunds: no refund journal in {postgres_dsn}: "
        "no refund event was recorded there yet",
    )
    password = postgres_server.password
    with_password = postgres_dsn.replace("postgres@", f"postgres:{password}@")
    redacted = postgres_dsn.replace("postgres@", "postgres:***@")
    outputs: list[Any] = [missing]
    with EmulatorThread(refund_queue=server.sas_uri(name)) as emulator:
        events = [
            {"id": f"e-{n}", "data": {"orderId": "o", "lineItemId": f"l-{n}", "productId": "p",
                                      "eventState": state}}
            for n, state in enumerate(["Revoked", "Refunded", "ChargebackReversal"])
        ]  # fmt: skip
        control(emulator, {"events": events})
        monkeypatch.delenv("PGPASSWORD")  # only the DSN carries it now
        done = cli(*sync_command(emulator, with_password)[3:])
        outputs.append(done)
        assert done.returncode == 0, done.stderr
        assert "3 new events, 0 duplicates, 0 rejected" in done.stdout
        assert done.stderr.strip() == (
            f"store-async refunds: warning: the DSN {redacted} carries a password, which every "
            "local user can read in the process list; use PGPASSWORD or a passfile "
            "(~/.pgpass) instead"
        )
        wrong = postgres_dsn.replace("postgres@", "postgres:Wr0ng-Passw0rd@")
        refused = cli(*sync_command(emulator, wrong)[3:])
        outputs.append(refused)
    assert refused.returncode == 1
    assert "password authentication failed" in refused.stderr
    assert "Wr0ng-Passw0rd" not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    revoked = cli("refunds", "export", "--journal", with_password, "--state", "revoked")
    outputs.append(revoked)
    assert [line for line in revoked.stdout.splitlines()] == [
        '{"id":"e-0","data":{"orderId":"o","lineItemId":"l-0","productId":"p",'
        '"eventState":"Revoked"}}'
    ]
    for output in outputs:
        assert password not in output.stdout + output.stderr
