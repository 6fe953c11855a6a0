"""An open-model load generator on our own client, whose numbers can be trusted.

Calls start on a fixed schedule (a constant rate, then optional ramps), whatever the answers do;
each latency is measured from the call's *scheduled* start, so a stalled server shows up as the
quarter of calls it delayed, not as a few slow ones (no coordinated omission). Latencies go into
HdrHistogram histograms that merge exactly across processes and machines.

    from store_async.loadtest import LoadTest, run_load_test
    report = run_load_test(LoadTest(rate=300, duration=10))   # embedded emulator
    print(report["latency_ms"]["p99"], report["audit"])

Needs the ``loadtest`` extra (``pip install 'store-async[loadtest]'``: hdrhistogram). The command
line is ``store-async loadtest``; the guide is ``docs/guides/load-testing.md``.
"""

from store_async.loadtest.html import render_html
from store_async.loadtest.operations import OPERATIONS, LoadUser, Mix, OperationSpec, register
from store_async.loadtest.report import build_report, merge_reports
from store_async.loadtest.runner import LoadTest, run_load_test
from store_async.loadtest.schedule import Schedule, Stage

__all__ = [
    "OPERATIONS",
    "LoadTest",
    "LoadUser",
    "Mix",
    "OperationSpec",
    "Schedule",
    "Stage",
    "build_report",
    "merge_reports",
    "register",
    "render_html",
    "run_load_test",
]
