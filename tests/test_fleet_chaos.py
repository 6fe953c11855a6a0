"""A fleet under fire: worker processes on one PostgreSQL journal, SIGKILLed and SIGSTOPped.

The workers are real ``store-async fulfill --journal postgresql://...`` processes; the emulator
runs in the test process (so its ledger, the proof of exactly-once, can be read directly).
The PostgreSQL password reaches the workers only through ``PGPASSWORD``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from store_async.emulator import FaultPlan, StoreEmulator
from store_async.fulfillment.postgres_journal import PostgresJournal
from tests.support.postgres import PostgresServer

CLI = "import sys; from store_async.cli import main; sys.exit(main())"


def write_input(path: Path, lines: int, users: int) -> list[str]:
    """``lines`` consumes by item for ``users`` users; returns the tracking ids in order."""
    tracking_ids = []
    with open(path, "wb") as file:
        for n in range(lines):
            user = f"user-{n % users}"
            tracking_id = str(uuid.UUID(int=random.Random(n).getrandbits(128), version=4))
            tracking_ids.append(tracking_id)
            line = {
                "key": f"line-{n}",
                "beneficiary": {"identityValue": user, "localTicketReference": user},
                "itemId": f"item-{n}",
                "trackingId": tracking_id,
            }
            file.write(orjson.dumps(line) + b"\n")
    return tracking_ids


async def start_worker(
    server: PostgresServer,
    dsn: str,
    input_path: Path,
    url: str,
    token: str,
    name: str,
    *extra: str,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "fulfill", str(input_path), "--journal", dsn,
        "--endpoint", url, "--token", token, "--no-progress", "--worker-id", name, *extra,
        env=server.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def journal_state(server: PostgresServer, dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn, password=server.password)
    try:
        counts = {"pending": 0, "done": 0, "failed": 0}
        for row in await connection.fetch(
            "SELECT state, count(*) AS n FROM store_async_fulfillments GROUP BY state"
        ):
            counts[row["state"]] = row["n"]
        counts["leases"] = await connection.fetchval(
            "SELECT count(*) FROM store_async_users WHERE lease_token IS NOT NULL"
        )
        counts["user_pending"] = await connection.fetchval(
            "SELECT coalesce(sum(pending), 0) FROM store_async_users"
        )
        return counts
    finally:
        await connection.close()


@pytest.mark.slow
@pytest.mark.timeout(600)  # a hang guard: each respawn re-imports the CLI, slow on a loaded machine
async def test_workers_killed_at_random_still_apply_every_line_exactly_once(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    lines, users = 8_000, 500  # 20,000 for the published figure; 8,000 keep the suite short
    input_path = tmp_path / "in.jsonl"
    tracking_ids = write_input(input_path, lines, users)
    plan = FaultPlan(rate=0.10, seed=16, retry_after=0.0, slow_seconds=0.001)
    chaos = random.Random(1616)
    async with PostgresJournal(postgres_dsn):
        pass  # the schema exists before the first look at it
    async with StoreEmulator(faults=plan, auto_create=True) as emu:
        workers: list[asyncio.subprocess.Process] = []
        started = 0

        async def spawn() -> None:
            nonlocal started
            started += 1
            workers.append(
                await start_worker(
                    postgres_server,
                    postgres_dsn,
                    input_path,
                    emu.url,
                    emu.dev_token,
                    f"worker-{started}",
                    "--lease-seconds",
                    "1",
                    "--concurrency",
                    "64",
                )
            )

        for _ in range(3):
            await spawn()
        kills = 0
        try:
            while True:
                # The chaos schedule, not a wait for a condition: kill every 0.3-1.0 s.
                await asyncio.sleep(chaos.uniform(0.3, 1.0))
                state = await journal_state(postgres_server, postgres_dsn)
                if state["done"] + state["failed"] == lines:
                    break  # no work remains
                live = [worker for worker in workers if worker.returncode is None]
                if not live:
                    break
                victim = chaos.choice(live)
                victim.kill()
                await victim.wait()
                workers.remove(victim)
                kills += 1
                await spawn()
            outputs = [await worker.communicate() for worker in workers]
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, (out.decode(), err.decode())
            assert postgres_server.password.encode() not in out + err

        print(  # the figures, with -s
            f"chaos: {kills} workers SIGKILLed, {started} started, "
            f"{sum(emu.stats.faults.values())} faults injected, {emu.ledger.total} applied"
        )
        assert kills >= 5
        assert emu.ledger.duplicates() == {}
        assert emu.ledger.total == lines
        assert all(emu.ledger.applied(tracking_id) == 1 for tracking_id in tracking_ids)
        assert sum(emu.stats.faults.values()) > 400  # the faults really happened (~10 %)
    state = await journal_state(postgres_server, postgres_dsn)
    assert state == {
        "pending": 0, "done": lines, "failed": 0, "leases": 0, "user_pending": 0
    }  # fmt: skip


class Gate:
    """A reverse proxy in front of the emulator that holds the first consume until opened."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.holding = asyncio.Event()
        self.opened = asyncio.Event()
        self._held = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._held and request.path.endswith("/consume"):
            self._held = True
            self.holding.set()
            await self.opened.wait()
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                data=await request.read(),
            ) as answer,
        ):
            body = await answer.read()
            headers = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return web.Response(status=answer.status, body=body, headers=headers)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Gate]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            self.opened.set()
            await runner.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_paused_past_its_lease_cannot_mark_rows_another_worker_took(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    input_path = tmp_path / "in.jsonl"
    tracking_ids = write_input(input_path, 10, 1)  # one user: one lease holds every row
    async with StoreEmulator(auto_create=True) as emu, Gate(emu.url).serving() as gate:
        first = await start_worker(
            postgres_server, postgres_dsn, input_path, gate.url, emu.dev_token, "paused",
            "--concurrency", "1", "--lease-seconds", "30",
        )  # fmt: skip
        try:
            await asyncio.wait_for(gate.holding.wait(), 60)  # it leased the user and sent
            first.send_signal(signal.SIGSTOP)
            # Its lease runs out (moved to the past here instead of waiting 30 s).
            connection = await asyncpg.connect(postgres_dsn, password=postgres_server.password)
            try:
                owner = await connection.fetchval("SELECT lease_owner FROM store_async_users")
                assert owner == "paused"
                await connection.execute(
                    "UPDATE store_async_users SET lease_expires = now() - interval '1 second'"
                )
            finally:
                await connection.close()
            second = await start_worker(
                postgres_server, postgres_dsn, input_path, emu.url, emu.dev_token, "second"
            )
            out, err = await second.communicate()
            assert second.returncode == 0, (out.decode(), err.decode())
            gate.opened.set()  # the paused worker's call is answered...
            first.send_signal(signal.SIGCONT)  # ...and it wakes up with a lost lease
            out, err = await asyncio.wait_for(first.communicate(), 60)
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGCONT)
                first.kill()
                await first.wait()
        assert first.returncode == 0, (out.decode(), err.decode())
        report = out.decode()
        assert "settled 0 done and 0 failed" in report, report
        assert emu.ledger.total == 10
        assert all(emu.ledger.applied(tracking_id) == 1 for tracking_id in tracking_ids)
    connection = await asyncpg.connect(postgres_dsn, password=postgres_server.password)
    try:
        settled = await connection.fetch(
            "SELECT settled_by, state, count(*) AS n FROM store_async_fulfillments "
            "GROUP BY settled_by, state"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in settled] == [("second", "done", 10)]
    assert os.environ.get("PGPASSWORD") == postgres_server.password  # set by the fixture
