"""``store-async fulfill --journal postgresql://...`` as a process: exit codes, secrets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from store_async.emulator import StoreEmulator
from store_async.fulfillment.fleet import FleetReport
from store_async.fulfillment.report import ExitCode, FulfillmentReport
from tests.support.postgres import PostgresServer

CLI = "import sys; from store_async.cli import main; sys.exit(main())"
GUID = "3eea1529-611e-4aee-915c-34549400000{}"


def line(key: str, item: str, n: int, user: str = "u1") -> bytes:
    document = {
        "key": key,
        "beneficiary": {"identityValue": user, "localTicketReference": user},
        "itemId": item,
        "trackingId": GUID.format(n),
    }
    return orjson.dumps(document) + b"\n"


async def fulfill(
    env: dict[str, str], *args: str
) -> tuple[int, str, str, str]:  # (exit code, stdout, stderr, command line as ps shows it)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "fulfill", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # What ``ps`` shows of the process (read once it started; a tiny local file).
    command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ")  # noqa: ASYNC240
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), command_line.decode()


async def test_a_key_seen_again_with_other_values_is_rejected_and_exits_2(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(line("k1", "item-1", 1) + line("k2", "item-2", 2))
    changed = tmp_path / "changed.jsonl"
    changed.write_bytes(line("k1", "item-9", 1) + line("k2", "item-2", 2))
    async with StoreEmulator(auto_create=True) as emu:
        common = ("--journal", postgres_dsn, "--endpoint", emu.url, "--token", emu.dev_token,
                  "--no-progress")  # fmt: skip
        code, out, err, command_line = await fulfill(
            postgres_server.env(), str(input_path), *common, "--report", str(tmp_path / "r.json")
        )
        assert code == ExitCode.ALL_DONE, (out, err)
        assert "loaded 2 lines" in out
        assert "journal: 2 done, 0 failed, 0 pending" in out
        report = orjson.loads((tmp_path / "r.json").read_bytes())
        assert report["exitCode"] == 0
        assert report["journal"]["done"] == 2
        assert report["workerId"].endswith(":" + report["workerId"].split(":")[-1])  # host:pid
        code, out, err, _ = await fulfill(postgres_server.env(), str(changed), *common)
        assert code == ExitCode.FAILED, (out, err)
        assert (
            "rejected line 1: key 'k1' is journaled (line 1, run 1) with a different request: "
            "itemId differs"
        ) in out
        assert "1 already done" in out
        assert emu.ledger.total == 2
    for text in (out, err, command_line):
        assert postgres_server.password not in text


async def test_a_password_in_the_dsn_is_never_printed_and_draws_a_warning(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(line("k1", "item-1", 1))
    env = postgres_server.env()
    del env["PGPASSWORD"]
    dsn = postgres_dsn.replace("postgres@", f"postgres:{postgres_server.password}@")
    wrong = postgres_dsn.replace("postgres@", "postgres:not-the-password@")
    async with StoreEmulator(auto_create=True) as emu:
        common = ("--endpoint", emu.url, "--token", emu.dev_token, "--no-progress")
        code, out, err, _ = await fulfill(env, str(input_path), "--journal", dsn, *common)
        assert code == ExitCode.ALL_DONE, (out, err)
        assert "warning: the DSN postgresql://postgres:***@127.0.0.1" in err
        assert postgres_server.password not in out + err
        code, out, err, _ = await fulfill(env, str(input_path), "--journal", wrong, *common)
    assert code == ExitCode.USAGE
    assert "password authentication failed" in err
    assert "not-the-password" not in out + err


def test_the_exit_code_speaks_for_the_whole_journal() -> None:
    def fleet(journal: dict[str, int], *, rejected: int = 0, complete: bool = True) -> int:
        report = FulfillmentReport(
            done=0, already_done=0, failed=0, already_failed=0, pending=journal["pending"],
            duplicates=0, rejected=rejected, complete=complete, stop_reason=None, elapsed=0.0,
        )  # fmt: skip
        return FleetReport(
            worker_id="w", report=report, journal=journal, loaded=0, present=0, leases=0, lost=0
        ).exit_code

    assert fleet({"pending": 0, "done": 5, "failed": 0}) == 0
    assert fleet({"pending": 0, "done": 5, "failed": 1}) == 2
    assert fleet({"pending": 0, "done": 5, "failed": 0}, rejected=1) == 2
    assert fleet({"pending": 1, "done": 5, "failed": 1}) == 3
    assert fleet({"pending": 0, "done": 5, "failed": 0}, complete=False) == 3
