"""``store-async loadtest``: an open-model load test with trustworthy latencies.

    store-async loadtest --rate 300 --duration 30 --report run.json --html run.html
    store-async loadtest --endpoint URL --token T --rate 1000 --duration 60 --processes 2
    store-async loadtest merge part1.json part2.json --report all.json --html all.html

Without ``--endpoint`` the target is an embedded emulator started in its own process; its
ledger audits the run at the end (applied = successful writes, no duplicates). The JSON report's
contract fields are ``calls``, ``achieved_rate``, ``target_rate``, ``duration_s``,
``latency_ms`` (``p50``, ``p90``, ``p99``, ``p999``, ``max``), ``outcomes`` and ``late_starts``.

Exit codes: 0 done (and the audit held, when there was one), 1 usage or configuration,
2 some calls failed or the audit failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import orjson

from store_async.cli._arguments import integer, real

__all__ = ["configure", "run"]

TOKEN_VARIABLE = "STORE_ASYNC_ACCESS_TOKEN"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=real(0.0), metavar="R", help="calls per second")
    parser.add_argument(
        "--duration", type=real(0.0), metavar="S", help="seconds at --rate (before any --stage)"
    )
    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="S:R",
        help="then ramp linearly to R calls/s over S seconds (repeatable)",
    )
    parser.add_argument(
        "--operation",
        action="append",
        default=[],
        metavar="NAME[=WEIGHT]",
        help="operation mix, repeatable: consume (default), query, grant, ...",
    )
    parser.add_argument(
        "--endpoint", metavar="URL", help="target base URL (default: an embedded emulator)"
    )
    parser.add_argument(
        "--token",
        help=f"bearer access token for --endpoint (or set {TOKEN_VARIABLE}; arguments show in "
        "ps, prefer the variable); default: azure-identity's DefaultAzureCredential",
    )
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help='Store ID keys for a real endpoint: JSON lines {"collections": K, "purchase": K}',
    )
    parser.add_argument(
        "--users",
        type=integer(1),
        default=100,
        help="simulated users (100), keys minted by the emulator when it is the target",
    )
    parser.add_argument(
        "--processes", type=integer(1, 64), default=1, help="generator processes (1)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=integer(1),
        default=10_000,
        metavar="N",
        help="calls in flight per process at most (10000); waiting for it is a late start",
    )
    parser.add_argument(
        "--late-ms",
        type=real(0.0),
        default=10.0,
        metavar="MS",
        help="a call starting this much after its scheduled instant is a late start (10)",
    )
    parser.add_argument(
        "--connections",
        type=integer(0),
        default=0,
        metavar="N",
        help="pooled connections per process (0: up to --max-in-flight)",
    )
    parser.add_argument("--seed", type=int, default=0, help="operation mix seed (0)")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report ('-': stdout)")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.add_argument(
        "parts",
        nargs="*",
        metavar="merge PART.json",
        help="'merge' followed by reports to merge (histograms add exactly)",
    )


def _fail(message: str) -> int:
    print(f"store-async loadtest: {message}", file=sys.stderr)
    return 1


def _read_keys(path: str) -> tuple[tuple[str, str | None], ...]:
    keys = []
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                collections = entry["collections"]
                purchase = entry.get("purchase")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                from store_async.errors import ValidationError

                raise ValidationError(
                    f'{path} line {number}: expected {{"collections": KEY, "purchase": KEY}}'
                ) from None
            keys.append((str(collections), None if purchase is None else str(purchase)))
    return tuple(keys)


def run(args: argparse.Namespace) -> int:
    from store_async.loadtest import (
        LoadTest,
        Mix,
        Stage,
        merge_reports,
        render_html,
        run_load_test,
    )
    from store_async.loadtest.runner import quiet_library_logs

    quiet_library_logs()

    if args.parts:
        if args.parts[0] != "merge" or len(args.parts) < 2:
            return _fail("extra arguments; to merge reports: loadtest merge PART.json ...")
        documents = []
        for path in args.parts[1:]:
            try:
                with open(path, "rb") as file:
                    documents.append(orjson.loads(file.read()))
            except OSError as error:
                return _fail(f"cannot read {path}: {error.strerror}")
            except orjson.JSONDecodeError:
                return _fail(f"{path} is not JSON")
        report = merge_reports(documents)
    else:
        if args.rate is None or args.duration is None:
            return _fail("--rate and --duration are required")
        token = args.token or os.environ.get(TOKEN_VARIABLE)
        factory: Any = None
        if args.endpoint and token is None:
            from azure.identity.aio import DefaultAzureCredential

            factory = DefaultAzureCredential  # made in each generator's own loop
        test = LoadTest(
            rate=args.rate,
            duration=args.duration,
            stages=tuple(Stage.parse(text) for text in args.stage),
            operations=Mix.parse(args.operation).weights,
            endpoint=args.endpoint,
            token=token if args.endpoint else None,
            users=args.users,
            keys=_read_keys(args.keys) if args.keys else (),
            processes=args.processes,
            in_flight_cap=args.max_in_flight,
            late_ms=args.late_ms,
            connections=args.connections,
            seed=args.seed,
        )
        test.check()
        _check_writable(args.report, args.html)
        stream = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
        report = run_load_test(test, progress_stream=stream, credential_factory=factory)
    _print_summary(report)
    if args.report:
        data = orjson.dumps(report, option=orjson.OPT_INDENT_2)
        if args.report == "-":
            sys.stdout.buffer.write(data + b"\n")
            sys.stdout.flush()
        else:
            with open(args.report, "wb") as file:
                file.write(data)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as file:
            file.write(render_html(report))
    audit = report.get("audit")
    failed = any(name != "ok" for name in report["outcomes"]) or (audit and not audit["ok"])
    return 2 if failed else 0


def _check_writable(*paths: str | None) -> None:
    """Fail before a long run, not after it, when a report cannot be written."""
    from store_async.errors import ValidationError

    for path in paths:
        if path and path != "-":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise ValidationError(f"cannot write {path}: no writable folder {folder}")


def _print_summary(report: dict[str, Any]) -> None:
    latency = report["latency_ms"]
    client = report["client"]
    lines = [
        f"target:        {report['target']}",
        f"calls:         {report['calls']:,} ({report['achieved_rate']:,.1f}/s achieved, "
        f"{report['target_rate']:,.1f}/s target, {report['duration_s']:,.1f} s)",
        f"late starts:   {report['late_starts']:,}",
        "latency (ms):  "
        + ", ".join(f"{name} {latency[name]:,.2f}" for name in ("p50", "p90", "p99", "p999")),
        f"max latency:   {latency['max']:,.2f} ms",
        "outcomes:      " + ", ".join(f"{k} {v:,}" for k, v in report["outcomes"].items()),
        f"client:        {client['cpu_us_per_call']:,.0f} µs CPU per call, loop lag p99 "
        f"{report['loop_lag_ms']['p99']:,.2f} ms, {client['token_requests']} token requests, "
        f"{client['throttled_429']} 429s ({client['retry_after_s']:,.1f} s honouring "
        f"Retry-After), {client['retries']} retries",
    ]
    audit = report.get("audit")
    if audit:
        lines.append(
            f"ledger audit:  {'OK' if audit['ok'] else 'FAILED'} ({audit['applied']:,} applied, "
            f"{audit['successful_writes']:,} successful writes, {audit['duplicates']} duplicates)"
        )
    # With --report - the JSON owns stdout; the summary goes to stderr.
    print("\n".join(lines), file=sys.stderr)
