"""``store_async.loadtest``: the schedule, the mix, exact histogram merges, the report contract,
and whole runs through ``store-async loadtest`` against the embedded emulator (its own process),
audited against the emulator's ledger."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from store_async.errors import ValidationError
from store_async.loadtest import (
    OPERATIONS,
    Mix,
    OperationSpec,
    Schedule,
    Stage,
    merge_reports,
    register,
    render_html,
)
from store_async.loadtest.generator import outcome_class
from store_async.loadtest.recorder import Recorder

LAUNCH = "import sys; from store_async.cli import main; sys.exit(main())"
CONTRACT = {"calls", "achieved_rate", "target_rate", "duration_s", "latency_ms", "outcomes",
            "late_starts"}  # fmt: skip


def loadtest(*arguments: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, "loadtest", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={key: value for key, value in os.environ.items() if key != "STORE_ASYNC_ACCESS_TOKEN"},
    )


# -- the schedule --------------------------------------------------------------------------


def test_a_constant_rate_starts_calls_evenly() -> None:
    schedule = Schedule(300, 6)
    assert schedule.count == 1800
    assert schedule.duration == 6
    assert schedule.mean_rate == 300
    assert [schedule.time_of(n) for n in (0, 1, 300, 1799)] == [0, 1 / 300, 1.0, 1799 / 300]


def test_a_ramp_follows_the_linear_rate() -> None:
    # 2 s at 100/s, then 4 s ramping to 300/s: 200 + (100 + 300) / 2 * 4 = 1000 calls.
    schedule = Schedule(100, 2, [Stage(4, 300)])
    assert schedule.count == 1000
    assert schedule.duration == 6
    times = [schedule.time_of(n) for n in range(schedule.count)]
    assert times == sorted(times)
    assert times[200] == pytest.approx(2.0)
    # Calls within the ramp's second half: rate 200..300 over 2 s = 500 calls.
    assert sum(1 for t in times if t >= 4.0) == pytest.approx(500, abs=1)
    assert schedule.rate_at(4.0) == pytest.approx(200)


def test_processes_share_one_schedule_without_talking() -> None:
    schedule = Schedule(50, 2, [Stage(2, 0)])
    together = sorted(schedule.time_of(n) for n in range(schedule.count))
    shares = [schedule.time_of(n) for k in range(3) for n in range(k, schedule.count, 3)]
    assert sorted(shares) == together


@pytest.mark.parametrize(
    ("rate", "duration", "stages", "message"),
    [
        (0, 10, [], "starts no call"),
        (-1, 10, [], "rate must be a finite number >= 0"),
        (10, float("inf"), [], "duration must be a finite number >= 0"),
        (10, 1, [Stage(-1, 5)], "must be >= 0"),
    ],
)
def test_bad_schedules_are_validation_errors(
    rate: float, duration: float, stages: list[Stage], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule(rate, duration, stages)


def test_stages_parse_seconds_colon_rate() -> None:
    assert Stage.parse("30:500") == Stage(30, 500)
    for text in ("30", "a:b", "30-500"):
        with pytest.raises(ValidationError, match="SECONDS:RATE"):
            Stage.parse(text)


# -- operations ----------------------------------------------------------------------------


def test_a_mix_picks_operations_by_weight() -> None:
    mix = Mix.parse(["consume=3", "query"], seed=1)
    picks = [mix.pick().name for _ in range(4000)]
    assert picks.count("consume") == pytest.approx(3000, rel=0.05)
    assert set(picks) == {"consume", "query"}
    assert mix.key_kinds() == {"collections"}
    assert Mix.parse(["grant"]).key_kinds() == {"purchase"}
    assert Mix.parse([]).weights == {"consume": 1.0}


@pytest.mark.parametrize(
    ("texts", "message"),
    [(["teleport"], "unknown operation 'teleport'"), (["consume=0"], "must be > 0"),
     (["consume=x"], "NAME=WEIGHT")],
)  # fmt: skip
def test_bad_mixes_are_validation_errors(texts: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Mix.parse(texts)


def test_an_operation_is_one_registry_entry() -> None:
    async def call(store: Any, user: Any, tag: str) -> object:
        return None

    spec = register(OperationSpec("noop-for-test", call, "collections", False, "test"))
    try:
        assert Mix.parse(["noop-for-test"]).pick() is spec
        with pytest.raises(ValueError, match="already registered"):
            register(spec)
    finally:
        del OPERATIONS["noop-for-test"]


def test_outcome_classes_name_the_failure() -> None:
    from store_async.errors import (
        ConflictError,
        OutcomeUnknownError,
        ServiceUnavailableError,
        ThrottledError,
    )

    assert outcome_class(None) == "ok"
    assert outcome_class(ThrottledError("slow down")) == "throttled"
    assert outcome_class(ServiceUnavailableError("down")) == "unavailable"
    assert outcome_class(ConflictError("taken")) == "conflict"
    assert outcome_class(OutcomeUnknownError("unknown", tracking_id="k")) == "outcome_unknown"


# -- histograms: exact merges --------------------------------------------------------------


def test_merged_parts_give_the_percentiles_of_all_calls() -> None:
    generator = random.Random(3)
    latencies = [generator.lognormvariate(-4, 1.2) for _ in range(20_000)]  # seconds
    whole, parts = Recorder(), [Recorder(), Recorder(), Recorder()]
    for number, latency in enumerate(latencies):
        scheduled = number / 2000
        whole.record("consume|ok", scheduled, 0.0, latency)
        parts[number % 3].record("consume|ok", scheduled, 0.0, latency)
    merged = Recorder()
    for part in parts:  # through JSON, as between processes and machines
        merged.merge(Recorder.from_part(json.loads(json.dumps(part.to_part()))))
    for percentile in (50, 90, 99, 99.9, 100):
        assert merged.combined().get_value_at_percentile(
            percentile
        ) == whole.combined().get_value_at_percentile(percentile)
    assert merged.combined().get_total_count() == 20_000
    assert sorted(merged.seconds) == list(range(10))
    for second in range(10):
        assert (
            merged.seconds[second]["consume|ok"].get_total_count()
            == whole.seconds[second]["consume|ok"].get_total_count()
        )


def test_a_corrupt_part_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a load-test histogram part"):
        Recorder.from_part({"counters": {}, "overall": {"consume|ok": "@@@"}})
    with pytest.raises(ValidationError, match="is not a store-async-loadtest/1 report"):
        merge_reports([{"calls": 3}])
    with pytest.raises(ValidationError, match="nothing to merge"):
        merge_reports([])


# -- whole runs against the embedded emulator ----------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("loadtest")
    result = loadtest(
        "--rate", "60", "--duration", "2", "--stage", "1:120", "--processes", "2",
        "--users", "8", "--operation", "consume=3", "--operation", "query",
        "--operation", "grant", "--report", str(folder / "run.json"),
        "--html", str(folder / "run.html"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "run.json").read_text()), folder


@pytest.mark.slow
def test_a_mixed_two_process_run_meets_the_contract_and_the_ledger(
    mixed_run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = mixed_run
    assert set(report) >= CONTRACT
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    # 2 s at 60/s, then 1 s ramping to 120/s: 120 + 90 = 210 calls, all started.
    assert report["calls"] == 210
    assert report["target_rate"] == 70.0
    assert report["duration_s"] == 3.0
    assert report["processes"] == 2
    assert report["outcomes"] == {"ok": 210}
    operations = report["operations"]
    assert set(operations) == {"consume", "query", "grant"}
    assert sum(entry["calls"] for entry in operations.values()) == 210
    writes = operations["consume"]["calls"] + operations["grant"]["calls"]
    # The ledger: every successful write applied once, nothing applied twice.
    assert report["audit"] == {
        "successful_writes": writes,
        "applied": writes,
        "duplicates": 0,
        "requests": 210 + 2,  # and one warm-up query per process
        "ok": True,
    }
    client = report["client"]
    assert client["token_requests"] == 2  # one per process, at warm-up
    assert client["throttled_429"] == 0
    assert client["retries"] == 0
    assert client["cpu_us_per_call"] > 0
    assert [entry["second"] for entry in report["timeline"]] == [0, 1, 2]
    assert sum(entry["calls"] for entry in report["timeline"]) == 210
    assert [entry["target"] for entry in report["timeline"]][:2] == [60.0, 60.0]


@pytest.mark.slow
def test_reports_from_several_machines_merge_exactly(
    mixed_run: tuple[dict[str, Any], Path],
) -> None:
    report, folder = mixed_run
    result = loadtest(
        "merge", str(folder / "run.json"), str(folder / "run.json"),
        "--report", str(folder / "merged.json"), "--html", str(folder / "merged.html"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    merged = json.loads((folder / "merged.json").read_text())
    assert merged["calls"] == 2 * report["calls"]
    assert merged["outcomes"] == {"ok": 2 * report["calls"]}
    assert merged["target_rate"] == 2 * report["target_rate"]
    assert merged["latency_ms"]["p99"] == report["latency_ms"]["p99"]  # same calls twice
    assert merged["parts"] == 2
    assert merged["part_audits"] == [report["audit"]] * 2
    assert "latency-over-time" in (folder / "merged.html").read_text()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--duration", "1"], "--rate and --duration are required"),
        (["--rate", "5", "--duration", "1", "--operation", "teleport"], "unknown operation"),
        (["--rate", "0", "--duration", "1"], "starts no call"),
        (["--rate", "5", "--duration", "1", "--report", "/no/such/dir/r.json"], "cannot write"),
        (["merge"], "to merge reports"),
        (["merge", "/no/such/part.json"], "cannot read /no/such/part.json"),
    ],
)
def test_usage_errors_exit_1_before_any_work(arguments: list[str], message: str) -> None:
    from store_async.cli import main

    result = loadtest(*arguments, timeout=60)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert main  # the command is registered


def test_the_html_page_is_self_contained_svg() -> None:
    recorder = Recorder()
    for number in range(300):
        recorder.record("consume|ok", number / 100, 0.0, 0.002 + (number % 7) / 1000)
    recorder.counters["calls"] = 300
    from store_async.loadtest import build_report

    report = build_report(
        recorder, target_rate=100, duration_s=3, targets_by_second={0: 100, 1: 100, 2: 100},
        started_at=0.0, processes=1, operations={"consume": 1}, audit=None, target="test",
    )  # fmt: skip
    page = render_html(report)
    for plot in ("latency-over-time", "rate-over-time", "latency-by-percentile"):
        assert f'<svg id="{plot}"' in page
    assert page.count("<polyline") == 4 + 3 + 1
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page


@pytest.mark.slow
def test_consume_v8_is_one_registry_entry_when_the_client_has_it(tmp_path: Path) -> None:
    if "consume-v8" not in OPERATIONS:
        pytest.skip("ConsumeRequest.for_quantity (the v8 surface, issue 9) is not merged yet")
    result = loadtest(
        "--rate", "40", "--duration", "1", "--users", "3", "--operation", "consume-v8",
        "--report", str(tmp_path / "v8.json"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "v8.json").read_text())
    assert report["outcomes"] == {"ok": 40}
    assert report["audit"]["applied"] == report["audit"]["successful_writes"] == 40
    assert report["audit"]["ok"] is True


def test_secrets_stay_out_of_the_generator_spec_repr() -> None:
    from store_async.loadtest.generator import GeneratorSpec

    spec = GeneratorSpec(
        url="http://127.0.0.1:1", token="secret-token", users=(("secret-key", None, "ref"),),
        operations={"consume": 1}, rate=1, duration=1,
    )  # fmt: skip
    assert "secret" not in repr(spec)


def test_progress_shows_one_line_summed_over_processes() -> None:
    import io

    from store_async.loadtest.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream, Schedule(100, 10), processes=2)
    snapshot = {"second": 3, "started": 150, "in_flight": 4, "errors": 1, "late_starts": 0,
                "p99_ms": 12.5, "cpu": 0.25}  # fmt: skip
    progress.update({**snapshot, "index": 0})
    assert stream.getvalue() == ""  # waits for every process's snapshot of the second
    progress.update({**snapshot, "index": 1, "p99_ms": 20.0})
    progress.close()
    line = stream.getvalue()
    assert line.startswith("\r[   3/10 s] started 300 of 1,000  in flight 8  errors 2  late 0")
    assert "p99 20.0 ms  cpu 50%" in line
    assert line.endswith("\n")
    silent = Progress(None, Schedule(100, 10), processes=1)
    silent.update({**snapshot, "index": 0})
    silent.close()


def test_bad_key_files_and_bad_parts_exit_1_with_the_reason(tmp_path: Path) -> None:
    keys = tmp_path / "keys.jsonl"
    keys.write_text('{"collections": "k1"}\nnot json\n')
    result = loadtest("--rate", "5", "--duration", "1", "--keys", str(keys), timeout=60)
    assert result.returncode == 1
    assert f"{keys} line 2: expected" in result.stderr
    part = tmp_path / "part.json"
    part.write_text('{"calls": 3}')
    result = loadtest("merge", str(part), timeout=60)
    assert result.returncode == 1
    assert "part 1 is not a store-async-loadtest/1 report" in result.stderr
    assert "Traceback" not in result.stderr


def test_per_second_targets_count_the_calls_due_in_each_second() -> None:
    schedule = Schedule(100, 2, [Stage(4, 300), Stage(1.5, 0)])
    times = [schedule.time_of(n) for n in range(schedule.count)]
    for second in range(8):
        expected = sum(1 for t in times if second <= t < second + 1)
        due = schedule.count_before(second + 1) - schedule.count_before(second)
        assert abs(due - expected) <= 1, (second, due, expected)
    assert schedule.count_before(0) == 0
    assert schedule.count_before(100) == schedule.count
