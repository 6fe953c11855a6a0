"""A journal that cannot be written (a full disk) ends ``store-async fulfill`` with one clear
line and exit code 1, and loses nothing it had committed: a rerun with room completes the file
exactly once.

The disk fills by ``RLIMIT_FSIZE`` in the child process (SIGXFSZ ignored, so a write past the
limit fails with EFBIG, as SQLite sees a full disk): no root, no mount, same on every machine.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from pathlib import Path

import orjson

from store_async.emulator import StoreEmulator
from store_async.fulfillment import JournalReader, RowState

TOKEN = "test-token-full-disk"
CLI = "import sys; from store_async.cli import main; sys.exit(main())"
LINES = 6000
# Bytes any file of the child may grow to. The Fulfiller claims 1,024 rows ahead, whose intents
# alone take ~250 KB of WAL: at 300 KB the disk filled before any done mark was committed in
# some runs; at 1 MB ~700 rows are done when it fills (of 6,000).
JOURNAL_LIMIT = 1_000_000


def _small_disk() -> None:  # in the child, before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (JOURNAL_LIMIT, JOURNAL_LIMIT))


async def _fulfill(url: str, source: Path, journal: Path, *, small: bool) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", CLI, "fulfill", str(source), "--journal", str(journal)),
        *("--endpoint", url, "--token", TOKEN, "--no-progress", "--concurrency", "16"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_small_disk if small else None,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_a_full_disk_ends_fulfill_with_one_line_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    source, journal = tmp_path / "input.jsonl", tmp_path / "journal.sqlite"
    source.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "key": f"order-{n}",
                    "beneficiary": {"identityValue": f"user-{n % 7}", "localTicketReference": "r"},
                    "itemId": f"item-{n}",
                }
            )
            + b"\n"
            for n in range(LINES)
        )
    )
    emulator = StoreEmulator(auto_create=True, dev_token=TOKEN)
    await emulator.start()
    try:
        code, stdout, stderr = await _fulfill(emulator.url, source, journal, small=True)
        assert (code, stdout) == (1, "")
        # One line: no traceback, no exception group, no "Future exception was never retrieved".
        assert stderr == (
            f"store-async fulfill: journal {journal} could not be written: disk I/O error\n"
        )
        with JournalReader(journal) as reader:
            counts = reader.counts()
        assert 0 < counts[RowState.DONE] < LINES  # it stopped part way, keeping what it had

        code, stdout, stderr = await _fulfill(emulator.url, source, journal, small=False)
        assert (code, stderr) == (0, "")
        with JournalReader(journal) as reader:
            rows = list(reader.rows())
        assert len(rows) == LINES
        assert {row.state for row in rows} == {RowState.DONE}
        ledger = emulator.ledger
        assert [ledger.applied(row.request.idempotency_key) for row in rows] == [1] * LINES
        assert (ledger.total, ledger.duplicates()) == (LINES, {})
    finally:
        await emulator.stop()
