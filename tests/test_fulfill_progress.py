"""The progress bar: exact line counts, and a final draw with the run's exact counters."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from store_async.fulfillment import FulfillmentStats
from store_async.fulfillment.progress import ProgressBar, count_lines


@pytest.mark.parametrize(
    ("content", "lines"),
    [(b"", 0), (b"a\n", 1), (b"a\nb", 2), (b"a\n\nb\n", 3), (b"x" * (3 << 20) + b"\ny", 2)],
)
def test_count_lines(tmp_path: Path, content: bytes, lines: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    assert count_lines(path) == lines


async def test_the_bar_ends_with_the_exact_counters() -> None:
    stats = FulfillmentStats(done=7, already_done=3, failed=1, pending=2, rejected=4)
    output = io.StringIO()
    async with ProgressBar(lambda: stats, file=output, enabled=True) as bar:
        bar.write("rejected line 3: invalid JSON")
    text = output.getvalue()
    assert "rejected line 3: invalid JSON\n" in text
    final = text.rsplit("\r", 1)[-1]
    assert final.startswith("17 lines ")
    assert final.rstrip().endswith("done=10, pending=2, failed=1, rejected=4, in_flight=0]")


async def test_a_disabled_bar_only_writes_lines() -> None:
    output = io.StringIO()
    async with ProgressBar(FulfillmentStats, file=output, enabled=False) as bar:
        bar.write("rejected line 1: missing field 'key'")
    assert output.getvalue() == "rejected line 1: missing field 'key'\n"
