"""Fleet scaling: 1, 2 and 4 worker processes on one PostgreSQL journal, beside SQLite.

Each configuration fulfils the same generated input (``--lines``, default 100,000, for
``--users`` users; consumes by item with caller-chosen tracking ids) against a fresh
``store-async emulator`` process (no faults) and a fresh database, with real
``store-async fulfill`` processes:

- ``sqlite``: one process, ``--journal FILE`` (the single-machine default, ``--sync full``);
- ``pg×N``: N processes at once, ``--journal postgresql://...`` (the same command each).

For each it prints lines/s (wall clock from the first start to the last exit) and CPU
milliseconds per 1,000 lines spent by the workers, the emulator and PostgreSQL (the
postmaster and its backends, from /proc), so that what binds is visible: the machine has 2
cores, and the sum of the three columns over the wall time says how busy they were.

PostgreSQL is started for the run as in the tests (``initdb``/``pg_ctl`` on loopback, as the
``postgres`` user under root), ``fsync`` on, ``synchronous_commit`` on. Everything lives in a
temporary directory removed at the end. Bounded by ``--lines``.

    .venv/bin/python benchmarks/bench_fleet.py [--lines 100000] [--users 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

CLI = "import sys; from store_async.cli import main; sys.exit(main())"
TICKS = os.sysconf("SC_CLK_TCK")


def write_input(path: Path, lines: int, users: int) -> None:
    with open(path, "wb") as file:
        for n in range(lines):
            user = f"user-{n % users}"
            line = {
                "key": f"line-{n}",
                "beneficiary": {"identityValue": user, "localTicketReference": user},
                "itemId": f"item-{n}",
                "trackingId": str(uuid.uuid4()),
            }
            file.write(orjson.dumps(line) + b"\n")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid`` (+ its waited-for children's), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def postgres_cpu(postmaster: int) -> float:
    """The postmaster, its exited backends (waited for) and its live ones."""
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Postgres:
    def __init__(self, root: Path) -> None:
        self.root, self.data = root, root / "data"
        self.password = secrets.token_urlsafe(18)
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run([*prefix, *command], check=True, capture_output=True)

    def start(self) -> None:
        password_file = self.root / "pw"
        password_file.write_text(self.password)
        if self.as_root:
            entry = pwd.getpwnam("postgres")
            for path in (self.root, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(password_file),
                  "--auth-host=scram-sha-256", "--auth-local=trust")  # fmt: skip
        password_file.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "start")  # fmt: skip
        self.postmaster = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> None:
        import asyncpg

        async def run() -> None:
            connection = await asyncpg.connect(self.dsn("postgres"), password=self.password)
            await connection.execute(f"CREATE DATABASE {database}")
            await connection.close()

        asyncio.run(run())


def start_emulator() -> tuple[subprocess.Popen[bytes], str, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "emulator", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    token = process.stdout.readline().decode().strip()
    return process, url, token


def run_config(
    name: str, workers: int, journal: str, input_path: Path, pg: Postgres, env: dict[str, str]
) -> dict[str, float]:
    emulator, url, token = start_emulator()
    try:
        emulator_before = cpu_seconds(emulator.pid)
        pg_before = postgres_cpu(pg.postmaster)
        children_before = os.times()
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CLI,
                    "fulfill",
                    str(input_path),
                    "--journal",
                    journal,
                    "--endpoint",
                    url,
                    "--token",
                    token,
                    "--no-progress",
                    "--worker-id",
                    f"{name}-{n}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for n in range(workers)
        ]
        for process in processes:
            out, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"{name}: exit {process.returncode}\n{out.decode()}{err.decode()}")
        wall = time.perf_counter() - started
        children_after = os.times()
        worker_cpu = (children_after.children_user - children_before.children_user) + (
            children_after.children_system - children_before.children_system
        )
        return {
            "wall": wall,
            "worker": worker_cpu,
            "emulator": cpu_seconds(emulator.pid) - emulator_before,
            "postgres": postgres_cpu(pg.postmaster) - pg_before,
        }
    finally:
        emulator.terminate()
        emulator.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    pg = Postgres(root)
    try:
        pg.start()
        env = {**os.environ, "PGPASSWORD": pg.password}
        input_path = root / "in.jsonl"
        write_input(input_path, args.lines, args.users)
        if pg.as_root:
            os.chmod(root, 0o755)
        configs = [("sqlite", 1, str(root / "journal.sqlite"))]
        for workers in (1, 2, 4):
            database = f"fleet_{workers}"
            pg.create(database)
            configs.append((f"pg×{workers}", workers, pg.dsn(database)))
        print(f"{args.lines} lines, {args.users} users, emulator without faults, "
              f"{os.cpu_count()} cores")  # fmt: skip
        print(f"{'journal':<10} {'lines/s':>9} {'wall s':>7} "
              f"{'CPU ms per 1000 lines: workers':>31} {'emulator':>9} {'postgres':>9} "
              f"{'cores busy':>11}")  # fmt: skip
        for name, workers, journal in configs:
            result = run_config(name, workers, journal, input_path, pg, env)
            per = 1e6 / args.lines
            busy = (result["worker"] + result["emulator"] + result["postgres"]) / result["wall"]
            print(f"{name:<10} {args.lines / result['wall']:>9,.0f} {result['wall']:>7.1f} "
                  f"{result['worker'] * per:>31.0f} {result['emulator'] * per:>9.0f} "
                  f"{result['postgres'] * per:>9.0f} {busy:>11.2f}", flush=True)  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
