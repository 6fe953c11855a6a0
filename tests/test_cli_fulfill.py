"""``store-async fulfill`` and ``store-async journal`` end to end: real subprocesses, a real
emulator (in a background thread of the test process, so the test reads its ledger directly),
real SQLite. Includes the crash test: SIGKILL at five seeded moments, exactly once in the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from store_async.cli import main
from store_async.emulator import FaultPlan, StoreEmulator
from store_async.fulfillment import (
    Fulfillment,
    JournalReader,
    JournalRow,
    RowState,
    SqliteJournal,
)
from store_async.models import ConsumeRequest, UserIdentity

T = TypeVar("T")
TOKEN = "test-token-fulfill"
TRANSACTION = "6a1e2a3b-0f0e-4c1d-8b7a-112233445566"
SECRET_PREFIX = "opaque-user-"  # the emulator takes any non-JWT identity value as a user id
CLI = "import sys; from store_async.cli import main; sys.exit(main())"


class EmulatorThread:
    """A StoreEmulator serving from its own event loop in a daemon thread."""

    def __init__(self, **options: Any) -> None:
        self._options = {"auto_create": True, "dev_token": TOKEN, **options}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()

        async def start() -> StoreEmulator:
            emulator = StoreEmulator(**self._options)
            await emulator.start()
            return emulator

        self.emulator = self.call(start)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.call(self.emulator.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    def sync(self, function: Callable[[], T]) -> T:
        """Run ``function`` in the emulator's thread (no concurrent access to its state)."""

        async def call() -> T:
            return function()

        return self.call(call)


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread() as running:
        yield running


def item_line(n: int, **changes: Any) -> bytes:
    line = {
        "key": f"order-{n}",
        "beneficiary": {
            "identityValue": f"{SECRET_PREFIX}{n % 7}",
            "localTicketReference": f"ref-{n % 7}",
        },
        "itemId": f"item-{n}",
        **changes,
    }
    return orjson.dumps(line) + b"\n"


def transaction_line(n: int) -> bytes:
    line = orjson.loads(item_line(n))
    del line["itemId"]
    line.update(productId="9NBLGGH4R315", transactionId=TRANSACTION)
    return orjson.dumps(line) + b"\n"


def v8_line(n: int) -> bytes:
    """A v8 consume (productId + quantity) of one of 5 store-managed products, 1-3 units."""
    line = orjson.loads(item_line(n))
    del line["itemId"]
    line.update(productId=f"9NV8PRODUCT{n % 5}", quantity=1 + n % 3)
    return orjson.dumps(line) + b"\n"


def write_input(path: Path, count: int, *, v8_every: int = 0) -> None:
    """``count`` item lines; with ``v8_every``, every such line is a v8 line instead."""
    with open(path, "wb") as file:
        for n in range(1, count + 1):
            file.write(v8_line(n) if v8_every and n % v8_every == 0 else item_line(n))


def fulfill_command(
    emulator: EmulatorThread, input_path: Path, journal: Path, *extra: str, sync: str = "normal"
) -> list[str]:
    """The fulfill command line; ``--sync normal`` by default: tests crash processes, not
    machines (the crash test keeps the default, full)."""
    return [
        *(sys.executable, "-c", CLI, "fulfill", str(input_path), "--journal", str(journal)),
        *("--endpoint", emulator.emulator.url, "--token", TOKEN, "--sync", sync, *extra),
    ]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def journal_counts(path: Path) -> dict[RowState, int]:
    with JournalReader(path) as reader:
        return reader.counts()


def assert_exactly_once(
    emulator: EmulatorThread, journal: Path, lines: int, *, v8_every: int = 0
) -> None:
    """Every row of the SQLite journal done and applied exactly once (see
    :func:`assert_rows_applied_once`)."""
    with JournalReader(journal) as reader:
        rows = list(reader.rows())
    assert_rows_applied_once(emulator.emulator, rows, lines, v8_every=v8_every, run=emulator.sync)


def _here(function: Callable[[], T]) -> T:
    return function()


def assert_rows_applied_once(
    emulator: StoreEmulator,
    rows: list[JournalRow],
    lines: int,
    *,
    v8_every: int = 0,
    run: Callable[[Callable[[], Any]], Any] = _here,
) -> None:
    """The journal's rows of a :func:`write_input` file (any journal) are all done, each
    tracking id applied exactly once and nothing else applied; v8 balances (auto-created with
    1,000,000 units) are down by exactly the quantities of the v8 lines. ``run`` runs a
    function where the emulator lives (its thread; by default here)."""
    assert len(rows) == lines
    assert {row.state for row in rows} == {RowState.DONE}
    ledger = emulator.ledger
    applied = run(lambda: [ledger.applied(row.request.idempotency_key) for row in rows])
    assert applied == [1] * lines
    assert run(lambda: (ledger.total, ledger.duplicates())) == (lines, {})
    subjects = run(lambda: sorted(entry.subject for entry in ledger))
    v8 = [n for n in range(1, lines + 1) if v8_every and n % v8_every == 0]
    expected = [f"item-{n}" for n in range(1, lines + 1) if n not in set(v8)]
    assert subjects == sorted(expected + [f"9NV8PRODUCT{n % 5} x{1 + n % 3}" for n in v8])
    consumed: dict[tuple[str, str], int] = {}
    for n in v8:
        user_product = (f"{SECRET_PREFIX}{n % 7}", f"9NV8PRODUCT{n % 5}")
        consumed[user_product] = consumed.get(user_product, 0) + 1 + n % 3
    balances = run(lambda: {pair: emulator.balance_of(*pair) for pair in consumed})
    assert balances == {pair: 1_000_000 - units for pair, units in consumed.items()}


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_clean_file_is_fulfilled_and_a_rerun_sends_nothing(
    emulator: EmulatorThread, tmp_path: Path, writer: str
) -> None:
    source, journal, report = tmp_path / "in.jsonl", tmp_path / "journal", tmp_path / "report.json"
    write_input(source, 300)
    first = subprocess.run(
        fulfill_command(
            emulator, source, journal, "--report", str(report), "--journal-writer", writer
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(
        "300 fulfillments: 300 done, 0 already done, 0 failed (0 in earlier runs), 0 pending, "
        "0 duplicate lines, 0 rejected lines, in "
    )
    assert orjson.loads(report.read_bytes())["counts"]["done"] == 300
    again = subprocess.run(
        fulfill_command(emulator, source, journal), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("300 fulfillments: 0 done, 300 already done,")
    assert_exactly_once(emulator, journal, 300)
    assert SECRET_PREFIX not in first.stdout + first.stderr + again.stdout + again.stderr


def test_a_bad_file_gets_precise_line_errors_and_every_valid_line_is_fulfilled(
    emulator: EmulatorThread, tmp_path: Path
) -> None:
    emulator.sync(
        lambda: emulator.emulator.add_item(f"{SECRET_PREFIX}2", "9DURABLE", item_id="durable-1")
    )
    source, journal, report = tmp_path / "in.jsonl", tmp_path / "journal", tmp_path / "report.json"
    source.write_bytes(
        item_line(1)
        + b"{{not json\n"
        + item_line(3)
        + item_line(4, key="order-1")  # order-1 again, another item
        + b'{"key": "order-5", "itemId": "item-5"}\n'
        + b"\n"
        + transaction_line(7)
        + item_line(3)  # the same key and item again: a duplicate, not an error
        + item_line(
            9,
            key="order-9",
            itemId="durable-1",
            beneficiary={"identityValue": f"{SECRET_PREFIX}2", "localTicketReference": "ref-2"},
        )
        + item_line(10).rstrip(b"\n")[:-9]  # a truncated last line
    )
    done = subprocess.run(
        fulfill_command(emulator, source, journal, "--report", str(report)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    # Parse errors are reported at once, conflicts once the journal has decided: sort by line.
    assert sorted(done.stderr.splitlines(), key=lambda text: int(text.split()[2][:-1])) == [
        "rejected line 2: invalid JSON: unexpected character, expected a string key at column 2",
        "rejected line 4: key 'order-1' is journaled (line 1, run 1) with a different request: "
        "itemId, beneficiary.localTicketReference differ",
        "rejected line 5: missing field 'beneficiary'",
        "rejected line 10: truncated last line (no newline at end of file): invalid JSON: "
        "unexpected end of data at column 108",
    ]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        "9 fulfillments: 3 done, 0 already done, 1 failed (0 in earlier runs), 0 pending, "
        "1 duplicate line, 4 rejected lines, in "
    )
    (failed_line,) = lines[1:]
    # The MS-CV the client sent with the refused attempt, for Microsoft support.
    cv = failed_line.rpartition("cv=")[2].removesuffix(")")
    assert re.fullmatch(r"[A-Za-z0-9+/]{21}[AQgw]\.1", cv), failed_line
    assert failed_line == (
        "  line 9: key 'order-9' failed: InvalidRequestError: HTTP 400: The item is not a "
        f"consumable product. (status=400, code=BadRequest, inner_code=InvalidParameter, cv={cv})"
    )
    document = orjson.loads(report.read_bytes())
    assert [failure["cv"] for failure in document["failures"]] == [cv]
    assert document["exitCode"] == 2
    assert [(r["line"], r["key"]) for r in document["rejections"]] == [
        (2, None),
        (4, "order-1"),
        (5, "order-5"),
        (10, None),
    ]
    assert journal_counts(journal) == {RowState.DONE: 3, RowState.FAILED: 1, RowState.PENDING: 0}
    with JournalReader(journal) as reader:
        done_keys = sorted(row.request.idempotency_key for row in reader.rows([RowState.DONE]))
    assert TRANSACTION in done_keys  # the transaction line
    ledger = emulator.emulator.ledger
    assert emulator.sync(lambda: sorted(entry.key for entry in ledger)) == done_keys
    assert SECRET_PREFIX not in done.stdout + done.stderr + report.read_text()


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in this process (fast): exit code (also from argparse) and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exit:
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


def test_usage_and_configuration_errors_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, journal = tmp_path / "in.jsonl", str(tmp_path / "journal")
    write_input(source, 1)
    code, stderr = run_main(capsys, "fulfill", str(source))
    assert code == 1
    assert "the following arguments are required: --journal" in stderr
    code, stderr = run_main(
        capsys, "fulfill", str(source), "--journal", journal, "--concurrency", "0"
    )
    assert code == 1
    assert "argument --concurrency: must be >= 1, got 0" in stderr
    missing = tmp_path / "nothing.jsonl"
    code, stderr = run_main(capsys, "fulfill", str(missing), "--journal", journal)
    assert (code, stderr) == (1, f"store-async fulfill: no input file {missing}\n")
    foreign = tmp_path / "foreign.db"
    foreign.write_text("not a journal\n" * 100)
    code, stderr = run_main(
        capsys, "fulfill", str(source), "--journal", str(foreign), "--token", "t"
    )
    assert (code, stderr) == (
        1,
        f"store-async fulfill: {foreign} is not a usable store_async journal: file is not a "
        "database\n",
    )
    args = ("fulfill", str(source), "--journal", journal, "--endpoint", "http://example.com")
    code, stderr = run_main(capsys, *args)
    assert code == 1
    assert "plain http:// is refused for non-loopback host 'example.com'" in stderr
    assert not os.path.exists(journal)  # nothing was created before the configuration was checked


def test_the_token_can_come_from_the_environment(emulator: EmulatorThread, tmp_path: Path) -> None:
    source, journal = tmp_path / "in.jsonl", tmp_path / "journal"
    write_input(source, 5)
    env = {**os.environ, "STORE_ASYNC_ACCESS_TOKEN": TOKEN}
    done = cli(
        "fulfill",
        str(source),
        "--journal",
        str(journal),
        "--endpoint",
        emulator.emulator.url,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    wrong = cli(
        "fulfill",
        str(source),
        "--journal",
        str(tmp_path / "j2"),
        "--endpoint",
        emulator.emulator.url,
        env={**env, "STORE_ASYNC_ACCESS_TOKEN": "wrong"},
    )
    assert wrong.returncode == 2  # every row refused with 401
    assert "failed: AuthenticationError" in wrong.stdout


def test_journal_summary_and_export_of_failed_rows(
    emulator: EmulatorThread, tmp_path: Path
) -> None:
    emulator.sync(
        lambda: emulator.emulator.add_item(f"{SECRET_PREFIX}3", "9DURABLE", item_id="item-3")
    )
    source, journal = tmp_path / "in.jsonl", tmp_path / "journal"
    write_input(source, 4)
    subprocess.run(fulfill_command(emulator, source, journal), capture_output=True, timeout=300)
    summary = cli("journal", str(journal))
    assert summary.returncode == 0, summary.stderr
    with JournalReader(journal) as reader:
        failed = reader.row("order-3")
    assert failed is not None
    assert summary.stdout.splitlines() == [
        f"journal {journal}: 4 fulfillments in 1 runs",
        "  pending  0",
        "  done     3",
        "  failed   1",
        "failed rows (first 1):",
        f"  'order-3' (line 3, {failed.request.tracking_id}): InvalidRequestError: HTTP 400: The "
        "item is not a consumable product. (status=400, code=BadRequest, "
        f"inner_code=InvalidParameter, cv={failed.cv})",  # the MS-CV the client sent
    ]
    assert failed.cv is not None
    assert failed.cv.endswith(".1")
    exported = tmp_path / "failed.jsonl"
    result = cli("journal", str(journal), "--export", "failed,pending", "--output", str(exported))
    assert (result.returncode, result.stderr) == (
        0,
        f"exported 1 failed,pending rows to {exported}\n",
    )
    assert exported.stat().st_mode & 0o777 == 0o600
    assert orjson.loads(exported.read_bytes()) == {
        "key": "order-3",
        "beneficiary": {"identityValue": f"{SECRET_PREFIX}3", "localTicketReference": "ref-3"},
        "itemId": "item-3",
        "trackingId": failed.request.tracking_id,
    }
    assert SECRET_PREFIX not in summary.stdout + result.stdout + result.stderr
    bad = cli("journal", str(journal), "--export", "finished")
    assert bad.returncode == 1
    assert "argument --export: give pending, failed, done or a list: pending,failed" in bad.stderr
    missing = cli("journal", str(tmp_path / "nothing"))
    assert (missing.returncode, missing.stderr) == (
        1,
        f"store-async journal: no journal file at {tmp_path / 'nothing'}\n",
    )


def wait_for_requests(
    emulator: EmulatorThread, process: subprocess.Popen[bytes], count: int
) -> bool:
    """Wait until the emulator has received ``count`` consumes in all (it wakes us as the
    request arrives) or the process has ended, whichever comes first; True for the former."""
    settled = threading.Event()
    reached = asyncio.run_coroutine_threadsafe(
        emulator.emulator.wait_for_requests(count), emulator._loop
    )
    reached.add_done_callback(lambda _: settled.set())
    threading.Thread(target=lambda: (process.wait(), settled.set()), daemon=True).start()
    settled.wait(600)
    if reached.done():
        return True
    reached.cancel()
    return False


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_rerun_completes(tmp_path: Path) -> None:
    with EmulatorThread(faults=FaultPlan(rate=0.02, seed=3, retry_after=0.0)) as emulator:
        source, journal, report = tmp_path / "in.jsonl", tmp_path / "journal", tmp_path / "r.json"
        write_input(source, 3000)
        command = fulfill_command(
            emulator, source, journal, "--report", str(report), "--grace", "30"
        )
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stopped_mid_run = wait_for_requests(emulator, process, 300)
        process.send_signal(signal.SIGTERM)
        assert stopped_mid_run
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode in (0, 3), stderr
        document = orjson.loads(report.read_bytes())
        counts = journal_counts(journal)
        # The journal is committed: it agrees with the report, and nothing failed.
        assert counts[RowState.FAILED] == 0
        assert counts[RowState.DONE] == document["counts"]["done"]
        assert counts[RowState.PENDING] == document["counts"]["pending"]
        if process.returncode == 3:
            assert document["stopReason"] == "SIGTERM received"
            assert b"run the same command again" in stdout
        for _ in range(5):  # faults may leave rows pending: rerun until settled
            rerun = subprocess.run(command, capture_output=True, timeout=300)
            if rerun.returncode == 0:
                break
            assert rerun.returncode == 3, rerun.stderr
        assert rerun.returncode == 0
        assert_exactly_once(emulator, journal, 3000)


@pytest.mark.slow
def test_crash_test_sigkill_at_five_random_moments_then_exactly_once(tmp_path: Path) -> None:
    lines = 20_000
    faults = FaultPlan(rate=0.03, seed=11, retry_after=0.0, slow_seconds=0.01)
    with EmulatorThread(faults=faults) as emulator:
        source, journal = tmp_path / "in.jsonl", tmp_path / "journal"
        write_input(source, lines, v8_every=4)  # a quarter of the lines are v8 consumes
        command = fulfill_command(emulator, source, journal, "--no-progress", sync="full")
        # Each run is killed after a random number of its own consumes (5 x <= 3,500 < 20,000:
        # no run can finish first).
        moments = random.Random(20_240_601).sample(range(1_000, 3_500), 5)
        left_pending = []
        for moment in moments:
            before = emulator.sync(lambda: emulator.emulator.stats.requests["consume"])
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            killed = wait_for_requests(emulator, process, before + moment)
            process.kill()
            process.wait(timeout=60)
            assert killed, f"the run ended before it sent {moment} consumes"
            left_pending.append(journal_counts(journal)[RowState.PENDING])
        # Every kill caught calls in flight: their intents were durable, their rows pending.
        assert all(pending > 0 for pending in left_pending), left_pending
        reruns = 0
        while True:  # then run to completion (faults may leave a few pending)
            reruns += 1
            final = subprocess.run(command, capture_output=True, timeout=600)
            if final.returncode == 0 or reruns == 10:
                break
            assert final.returncode == 3, final.stderr
        assert final.returncode == 0, final.stderr
        assert_exactly_once(emulator, journal, lines, v8_every=4)
        with JournalReader(journal) as reader:
            assert reader.runs() == 5 + reruns
            v8_rows = [row for row in reader.rows() if row.request.is_v8]
        assert len(v8_rows) == lines // 4
        # The batch asks for order ids; each done v8 row keeps the first answer's.
        assert all(row.order_transactions for row in v8_rows)
        faults = emulator.sync(lambda: sum(emulator.emulator.stats.faults.values()))
        print(
            f"killed after {moments} consumes, leaving {left_pending} pending; settled after "
            f"{reruns} more runs; {faults} injected faults; {lines} applied exactly once"
        )


def test_exported_pending_rows_redrive_exactly_once_with_any_journal(
    emulator: EmulatorThread, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"

    async def claim_without_sending() -> None:  # as a crash right after the intents would
        async with SqliteJournal(journal) as writer:
            await writer.begin_run()
            for n in range(1, 6):
                request = ConsumeRequest.for_item(
                    UserIdentity(identity_value=f"{SECRET_PREFIX}{n}", local_ticket_reference="r"),
                    f"item-{n}",
                )
                await writer.claim(Fulfillment(key=f"order-{n}", request=request))

    asyncio.run(claim_without_sending())
    exported = tmp_path / "pending.jsonl"
    assert (
        cli("journal", str(journal), "--export", "pending", "--output", str(exported)).returncode
        == 0
    )
    for attempt in ("first", "second"):  # each time with a fresh journal
        fresh = tmp_path / f"journal-{attempt}"
        done = subprocess.run(
            fulfill_command(emulator, exported, fresh), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    with JournalReader(journal) as reader:
        tracking_ids = [row.request.tracking_id for row in reader.rows()]
    ledger = emulator.emulator.ledger
    assert emulator.sync(lambda: [ledger.applied(key) for key in tracking_ids]) == [1] * 5
    assert emulator.sync(lambda: ledger.total) == 5


def test_an_export_to_a_closed_pipe_ends_with_a_one_line_error(tmp_path: Path) -> None:
    """``store-async journal J --export pending | head -1``: no traceback when head exits."""
    journal = tmp_path / "journal"

    async def claim_many() -> None:
        async with SqliteJournal(journal, synchronous="normal") as writer:
            await writer.begin_run()
            user = UserIdentity(
                identity_value=SECRET_PREFIX + "x" * 1000, local_ticket_reference="r"
            )
            claims = [
                writer.claim(
                    Fulfillment(key=f"order-{n}", request=ConsumeRequest.for_item(user, f"i{n}"))
                )
                for n in range(5000)
            ]
            await asyncio.gather(*claims)

    asyncio.run(claim_many())
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first row is written
    with os.fdopen(write_end, "wb") as closed_pipe:
        done = subprocess.run(
            [sys.executable, "-c", CLI, "journal", str(journal), "--export", "pending"],
            stdout=closed_pipe,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1
    assert done.stderr == "store-async journal: the export was cut short: stdout was closed\n"
