"""The JSON report: a contract (outside tests read it), built from exactly merged histograms.

Contract fields: ``calls``, ``achieved_rate``, ``target_rate``, ``duration_s``, ``latency_ms``
(``p50``, ``p90``, ``p99``, ``p999``, ``max``), ``outcomes`` (class -> count), ``late_starts``.
Everything else (per-operation breakdowns, per-second timeline, client CPU, event-loop lag,
token requests, 429s, the ledger audit, the encoded histograms) may grow.

Every latency is measured from the call's *scheduled* start. ``achieved_rate`` is calls over the
longer of the schedule and the time the last call actually started: a generator that fell behind
shows a lower rate, never a flattering one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from hdrh.histogram import HdrHistogram

from store_async.errors import ValidationError
from store_async.loadtest.recorder import PART_FORMAT, Recorder, new_histogram

__all__ = ["build_report", "merge_reports"]

PERCENTILES: Final = (
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.0,
    97.0, 98.0, 99.0, 99.5, 99.7, 99.8, 99.9, 99.95, 99.97, 99.99, 99.995, 99.999, 100.0,
)  # fmt: skip


def _ms(microseconds: float) -> float:
    return round(microseconds / 1000, 3)


def latency_summary(histogram: HdrHistogram) -> dict[str, float]:
    """``p50``, ``p90``, ``p99``, ``p999``, ``max`` and ``mean`` in milliseconds."""
    if histogram.get_total_count() == 0:
        return dict.fromkeys(("p50", "p90", "p99", "p999", "max", "mean"), 0.0)
    return {
        "p50": _ms(histogram.get_value_at_percentile(50)),
        "p90": _ms(histogram.get_value_at_percentile(90)),
        "p99": _ms(histogram.get_value_at_percentile(99)),
        "p999": _ms(histogram.get_value_at_percentile(99.9)),
        "max": _ms(histogram.get_max_value()),
        "mean": _ms(histogram.get_mean_value()),
    }


def build_report(
    recorder: Recorder,
    *,
    target_rate: float,
    duration_s: float,
    targets_by_second: Mapping[int, float],
    started_at: float,
    processes: int,
    operations: Mapping[str, float],
    audit: Mapping[str, Any] | None,
    target: str,
) -> dict[str, Any]:
    """The report of one run (or of merged runs)."""
    counters = recorder.counters
    calls = int(counters["calls"])
    combined = recorder.combined()
    outcomes: Counter[str] = Counter()
    per_operation: dict[str, dict[str, Any]] = {}
    for key, histogram in sorted(recorder.overall.items()):
        operation, _, outcome = key.partition("|")
        count = histogram.get_total_count()
        outcomes[outcome] += count
        entry = per_operation.setdefault(operation, {"calls": 0, "outcomes": {}})
        entry["calls"] += count
        entry["outcomes"][outcome] = count
    for operation, entry in per_operation.items():
        keys = [key for key in recorder.overall if key.partition("|")[0] == operation]
        entry["latency_ms"] = latency_summary(recorder.combined(keys))
        ok = recorder.overall.get(f"{operation}|ok")
        entry["ok_latency_ms"] = latency_summary(ok if ok is not None else new_histogram())
    dispatch = max(duration_s, float(counters.get("dispatch_s", 0.0)))
    cpu = float(counters["cpu_s"])
    timeline = []
    seconds = sorted(set(recorder.seconds) | set(targets_by_second))
    for second in seconds:
        histograms = recorder.seconds.get(second, {})
        all_calls, ok_calls = new_histogram(2), new_histogram(2)
        errors = 0
        for key, histogram in histograms.items():
            all_calls.add(histogram)
            if key.endswith("|ok"):
                ok_calls.add(histogram)
            else:
                errors += histogram.get_total_count()
        summary = latency_summary(all_calls)
        timeline.append(
            {
                "second": second,
                "target": round(targets_by_second.get(second, 0.0), 3),
                "calls": all_calls.get_total_count(),
                "errors": errors,
                "late_starts": recorder.late_by_second.get(second, 0),
                "latency_ms": {name: summary[name] for name in ("p50", "p90", "p99", "max")},
            }
        )
    return {
        "format": PART_FORMAT,
        "target": target,
        "calls": calls,
        "achieved_rate": round(calls / dispatch, 3) if dispatch > 0 else 0.0,
        "target_rate": round(target_rate, 3),
        "duration_s": round(duration_s, 3),
        "latency_ms": latency_summary(combined),
        "outcomes": dict(sorted(outcomes.items())),
        "late_starts": int(counters["late_starts"]),
        "operations": per_operation,
        "mix": dict(operations),
        "processes": processes,
        "started_at": started_at,
        "start_lag_ms": latency_summary(recorder.start_lag),
        "loop_lag_ms": latency_summary(recorder.loop_lag),
        "client": {
            "cpu_s": round(cpu, 3),
            "cpu_us_per_call": round(cpu / calls * 1e6, 1) if calls else 0.0,
            "max_in_flight": int(counters["max_in_flight"]),
            "attempts": int(counters["attempts"]),
            "retries": max(0, int(counters["attempts"]) - calls),
            "token_requests": int(counters["token_requests"]),
            "throttled_429": int(counters["throttled_429"]),
            "retry_after_s": round(float(counters["retry_after_s"]), 3),
            "backoff_s": round(float(counters["backoff_s"]), 3),
            "drain_cancelled": int(counters["drain_cancelled"]),
            "wall_s": round(float(counters.get("wall_s", 0.0)), 3),
            "warmup_calls": int(counters.get("warmup_calls", 0)),
        },
        "percentiles": [
            [p, _ms(combined.get_value_at_percentile(p)) if calls else 0.0] for p in PERCENTILES
        ],
        "timeline": timeline,
        "audit": dict(audit) if audit is not None else None,
        "histograms": recorder.to_part(),
    }


def merge_reports(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from the reports of runs made side by side (several machines).

    Histograms merge exactly; per-second data is aligned on each run's ``started_at``; the
    target rates add up; audits are kept per part (only each run's own emulator can audit it).

    :raises ValidationError: a document is not a load-test report.
    """
    if not documents:
        raise ValidationError("nothing to merge: give at least one report")
    for number, document in enumerate(documents):
        if not isinstance(document, Mapping) or document.get("format") != PART_FORMAT:
            raise ValidationError(f"part {number + 1} is not a {PART_FORMAT} report")
    earliest = min(float(document["started_at"]) for document in documents)
    merged = Recorder()
    targets: dict[int, float] = {}
    for document in documents:
        shift = round(float(document["started_at"]) - earliest)
        merged.merge(Recorder.from_part(document["histograms"]), second_shift=shift)
        for entry in document.get("timeline", []):
            second = int(entry["second"]) + shift
            targets[second] = targets.get(second, 0.0) + float(entry.get("target", 0.0))
    mix: Counter[str] = Counter()
    for document in documents:
        mix.update(document.get("mix", {}))
    report = build_report(
        merged,
        target_rate=sum(float(document["target_rate"]) for document in documents),
        duration_s=max(float(document["duration_s"]) for document in documents),
        targets_by_second=targets,
        started_at=earliest,
        processes=sum(int(document.get("processes", 1)) for document in documents),
        operations=dict(mix),
        audit=None,
        target="merged",
    )
    report["parts"] = len(documents)
    report["part_audits"] = [document.get("audit") for document in documents]
    return report
