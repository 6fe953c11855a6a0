"""The HTML report, opened in headless Chromium (Debian's ``chromium``), renders its plots.

The report is made by a real run (``store-async loadtest`` against the embedded emulator). A copy
of the page gets a small script that measures every plotted line with ``getBBox()`` and writes
the sizes into the DOM, which ``--dump-dom`` then prints: a plot that did not render as SVG has
no geometry. The report itself carries no script. Outside CI a missing Chromium skips these
tests (with the reason); on CI (``CI=true``) it fails them, as ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

LAUNCH = "import sys; from store_async.cli import main; sys.exit(main())"
PLOTS = ("latency-over-time", "rate-over-time", "latency-by-percentile")
MEASURE = """<script>
const boxes = {};
for (const svg of document.querySelectorAll("svg.plot")) {
  boxes[svg.id] = [...svg.querySelectorAll("polyline")].map((line) => {
    const box = line.getBBox();
    return [line.getAttribute("class"), Math.round(box.width), Math.round(box.height)];
  });
}
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify(boxes);
document.body.appendChild(out);
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing on CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _browse(chromium: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="store-async-chromium-") as profile:
        return subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                *arguments,
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, "loadtest", "--rate", "80", "--duration", "2",
         "--users", "4", "--html", str(folder / "report.html"), "--no-progress"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "report.html"


@pytest.mark.slow
def test_chromium_renders_every_plot_with_real_geometry(report_page: Path) -> None:
    chromium = _chromium()
    page = report_page.read_text(encoding="utf-8")
    assert "<script" not in page
    measured_page = report_page.with_name("measured.html")
    measured_page.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    result = _browse(chromium, "--dump-dom", measured_page.as_uri())
    assert result.returncode == 0, result.stderr
    found = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.S)
    assert found is not None, result.stdout[:2000]
    boxes = json.loads(found.group(1).replace("&quot;", '"'))
    assert set(boxes) == set(PLOTS)
    assert [name for name, _, _ in boxes["latency-over-time"]] == [
        f"series series-{p}" for p in ("p50", "p90", "p99", "max")
    ]
    for plot in PLOTS:
        for name, width, height in boxes[plot]:
            if name != "series series-errors":  # no errors: a flat line along the axis
                assert width > 100, (plot, name, width)
                assert height >= 0
    # The latency-by-percentile curve rises: its box has height.
    assert boxes["latency-by-percentile"][0][2] > 10


@pytest.mark.slow
def test_chromium_screenshots_the_page(report_page: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    result = _browse(
        chromium, f"--screenshot={shot}", "--window-size=1200,1600", report_page.as_uri()
    )
    assert result.returncode == 0, result.stderr
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
