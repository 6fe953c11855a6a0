"""A self-contained HTML page of a load-test report: inline SVG plots, no script, no files.

Three plots a person would rather look at than read: latency over the run (p50, p90, p99 and
max per second of the schedule, log scale: a stall shows as a ramp of late answers), calls per
second against the target, and the latency-by-percentile curve of the whole run (HdrHistogram's
"nines" axis). Then the summary, outcomes and per-operation tables.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["render_html"]

_WIDTH: Final = 900
_HEIGHT: Final = 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 130, 30, 45
_COLOURS: Final = {
    "p50": "#2b8a3e",
    "p90": "#1971c2",
    "p99": "#e8590c",
    "max": "#c92a2a",
    "calls": "#1971c2",
    "target": "#868e96",
    "errors": "#c92a2a",
    "latency": "#5f3dc4",
}

Series = tuple[str, Sequence[tuple[float, float]]]


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _plot(
    element_id: str,
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    log_y: bool,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> str:
    points = [point for _, values in series for point in values]
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    x_min = min((x for x, _ in points), default=0.0)
    x_max = max((x for x, _ in points), default=1.0)
    if x_max <= x_min:
        x_max = x_min + 1
    if log_y:
        positive = [y for _, y in points if y > 0] or [1.0]
        y_min = 10 ** math.floor(math.log10(min(positive)))
        y_max = 10 ** math.ceil(math.log10(max(positive)))
        if y_max <= y_min:
            y_max = y_min * 10

        def scale_y(y: float) -> float:
            value = math.log10(max(y, y_min)) - math.log10(y_min)
            return _TOP + plot_h - value / (math.log10(y_max) - math.log10(y_min)) * plot_h

        y_ticks = []
        decade = y_min
        while decade <= y_max * 1.0001:
            y_ticks.append(decade)
            decade *= 10
    else:
        y_min, y_max = 0.0, max((y for _, y in points), default=1.0) * 1.1 or 1.0

        def scale_y(y: float) -> float:
            return _TOP + plot_h - (y - y_min) / (y_max - y_min) * plot_h

        step = 10 ** math.floor(math.log10(y_max / 5)) if y_max > 0 else 1
        while y_max / step > 8:
            step *= 2
        y_ticks = [step * n for n in range(int(y_max / step) + 1)]

    def scale_x(x: float) -> float:
        return _LEFT + (x - x_min) / (x_max - x_min) * plot_w

    parts = [
        f'<svg id="{element_id}" class="plot" xmlns="http://www.w3.org/2000/svg" '
        f'width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#adb5bd"/>',
        f'<text x="{_WIDTH / 2}" y="18" text-anchor="middle" class="plot-title">'
        f"{html.escape(title)}</text>",
    ]
    for tick in y_ticks:
        y = scale_y(tick)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e9ecef"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    if x_ticks is None:
        span = x_max - x_min
        step = max(1.0, 10 ** math.floor(math.log10(span / 5)) if span > 0 else 1.0)
        while span / step > 10:
            step *= 2
        x_ticks = []
        tick = math.ceil(x_min / step) * step
        while tick <= x_max + 1e-9:
            x_ticks.append((tick, _fmt(tick)))
            tick += step
    for tick, label in x_ticks:
        x = scale_x(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#e9ecef"/>'
            f'<text x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 6}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(16 {_TOP + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for number, (name, values) in enumerate(series):
        colour = _COLOURS.get(name, "#495057")
        coordinates = " ".join(f"{scale_x(x):.1f},{scale_y(y):.1f}" for x, y in values)
        dashes = ' stroke-dasharray="6 4"' if name == "target" else ""
        parts.append(
            f'<polyline class="series series-{html.escape(name)}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dashes} points="{coordinates}"/>'
        )
        legend_y = _TOP + 14 + number * 18
        parts.append(
            f'<line x1="{_WIDTH - _RIGHT + 12}" x2="{_WIDTH - _RIGHT + 36}" y1="{legend_y - 4}" '
            f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{_WIDTH - _RIGHT + 42}" y="{legend_y}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _nines(percentile: float, last: float) -> float:
    """HdrHistogram's x axis: 90 % -> 1, 99 % -> 2, 99.9 % -> 3..."""
    if percentile >= 100:
        return last
    return -math.log10(1 - percentile / 100)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] = ()) -> str:
    cells = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    head = f"<thead><tr>{cells}</tr></thead>" if header else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The page, as one string (write it to ``report.html``)."""
    timeline = report.get("timeline", [])
    latency_series = [
        (name, [(float(t["second"]), float(t["latency_ms"][name])) for t in timeline if t["calls"]])
        for name in ("p50", "p90", "p99", "max")
    ]
    rate_series = [
        ("target", [(float(t["second"]), float(t["target"])) for t in timeline]),
        ("calls", [(float(t["second"]), float(t["calls"])) for t in timeline]),
        ("errors", [(float(t["second"]), float(t["errors"])) for t in timeline]),
    ]
    finite = [p for p, _ in report.get("percentiles", []) if p < 100]
    last = _nines(max(finite), 0.0) + 0.5 if finite else 1.0
    curve = [(_nines(float(p), last), float(ms)) for p, ms in report.get("percentiles", [])]
    labels = ("0%", "90%", "99%", "99.9%", "99.99%", "99.999%")
    nines_ticks: list[tuple[float, str]] = [
        (float(n), label) for n, label in enumerate(labels) if n <= last
    ]
    nines_ticks.append((last, "max"))
    latency = report.get("latency_ms", {})
    client = report.get("client", {})
    summary = [
        ("target", report.get("target", "")),
        ("calls", f"{report.get('calls', 0):,}"),
        ("target rate", f"{report.get('target_rate', 0):,.1f} /s"),
        ("achieved rate", f"{report.get('achieved_rate', 0):,.1f} /s"),
        ("duration", f"{report.get('duration_s', 0):,.1f} s"),
        ("late starts", f"{report.get('late_starts', 0):,}"),
        ("processes", report.get("processes", 1)),
        *(
            (f"latency {name}", f"{latency.get(name, 0):,.2f} ms")
            for name in ("p50", "p90", "p99", "p999", "max")
        ),
        ("client CPU per call", f"{client.get('cpu_us_per_call', 0):,.1f} µs"),
        ("event-loop lag p99", f"{report.get('loop_lag_ms', {}).get('p99', 0):,.2f} ms"),
        ("token requests", client.get("token_requests", 0)),
        ("429 answers", client.get("throttled_429", 0)),
        ("seconds honouring Retry-After", client.get("retry_after_s", 0)),
        ("retries", client.get("retries", 0)),
    ]
    audit = report.get("audit")
    if audit:
        summary.append(
            (
                "ledger audit",
                f"{'OK' if audit.get('ok') else 'FAILED'}: {audit.get('applied')} applied, "
                f"{audit.get('successful_writes')} successful writes, "
                f"{audit.get('duplicates')} duplicates",
            )
        )
    outcomes = sorted(report.get("outcomes", {}).items())
    operations = [
        (
            name,
            f"{entry['calls']:,}",
            ", ".join(f"{k} {v:,}" for k, v in sorted(entry["outcomes"].items())),
            *(f"{entry['latency_ms'][p]:,.2f}" for p in ("p50", "p90", "p99", "p999", "max")),
        )
        for name, entry in sorted(report.get("operations", {}).items())
    ]
    title = f"store-async load test: {report.get('target_rate', 0):,.0f}/s"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font:14px system-ui,sans-serif;margin:24px;color:#212529}"
            "svg{display:block;margin:12px 0}svg text{font:12px system-ui,sans-serif;"
            "fill:#495057}.plot-title{font-weight:600;font-size:14px}"
            "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #dee2e6;"
            "padding:3px 10px;text-align:left}th{background:#f1f3f5}</style>",
            "</head><body>",
            f"<h1>{html.escape(title)}</h1>",
            "<p>Latency is measured from each call's <em>scheduled</em> start (open model).</p>",
            _plot(
                "latency-over-time",
                "Latency by second of the schedule (ms, log scale)",
                latency_series,
                x_label="second of the run (by scheduled start)",
                y_label="latency (ms)",
                log_y=True,
            ),
            _plot(
                "rate-over-time",
                "Calls per second: started vs target",
                rate_series,
                x_label="second of the run",
                y_label="calls / s",
                log_y=False,
            ),
            _plot(
                "latency-by-percentile",
                "Latency by percentile, whole run (ms, log scale)",
                [("latency", curve)],
                x_label="percentile",
                y_label="latency (ms)",
                log_y=True,
                x_ticks=nines_ticks,
            ),
            "<h2>Summary</h2>",
            _table(summary),
            "<h2>Outcomes</h2>",
            _table(outcomes, ("class", "calls")),
            "<h2>Operations</h2>",
            _table(
                operations,
                ("operation", "calls", "outcomes", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max"),
            ),
            "</body></html>",
        ]
    )
