"""``--user-rate`` on ``fulfill`` and ``demo``, ``--user-limit`` on ``emulator``: the contract
(Store default against Microsoft's hosts, off against an emulator) and clear usage errors."""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import orjson
import pytest

from store_async.cli import demo, emulator, fulfill
from store_async.fulfillment import FulfillmentStats
from store_async.fulfillment.progress import ProgressBar
from store_async.pacing import STORE_USER_RATE, UserRate
from tests.test_cli_fulfill import EmulatorThread, fulfill_command, item_line


def parsed(configure: object, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)  # type: ignore[operator]
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), STORE_USER_RATE),  # Microsoft's hosts: the Store's limit
        (("--endpoint", "http://127.0.0.1:1"), None),  # an emulator: off
        (("--user-rate", "20/2"), UserRate(20, 2.0)),
        (("--user-rate", "20/2", "--endpoint", "http://127.0.0.1:1"), UserRate(20, 2.0)),
        (("--user-rate", "off"), None),
    ],
)
def test_fulfill_user_rate_contract(argv: tuple[str, ...], expected: UserRate | None) -> None:
    args = parsed(fulfill.configure, "in.jsonl", "--journal", "j", *argv)
    assert fulfill._user_rate(args) == expected


def test_a_bad_user_rate_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parsed(fulfill.configure, "in.jsonl", "--journal", "j", "--user-rate", "fast")
    assert exited.value.code == 1  # fulfill's usage errors exit 1 (2 means "some failed")
    assert "a user rate is 'OPS/SECONDS' (e.g. '200/300'), got 'fast'" in capsys.readouterr().err


def test_demo_and_emulator_take_rates() -> None:
    args = parsed(demo.configure, "--user-rate", "20/2", "--user-limit", "20/2")
    assert args.user_rate == args.user_limit == UserRate(20, 2.0)
    assert parsed(demo.configure).user_rate is None
    assert parsed(emulator.configure, "--user-limit", "20/2").user_limit == (20, 2.0)
    with pytest.raises(SystemExit):
        parsed(emulator.configure, "--user-limit", "20")


def test_fulfill_paces_a_hot_user_end_to_end(tmp_path: Path) -> None:
    """A real ``store-async fulfill`` process against an emulator limiting 4 per 0.5 s."""
    source, report_path = tmp_path / "in.jsonl", tmp_path / "report.json"
    with open(source, "wb") as file:
        for n in range(12):
            file.write(
                item_line(n, beneficiary={"identityValue": "hot", "localTicketReference": "r"})
            )
    with EmulatorThread(user_limit=(4, 0.5)) as running:
        paced = subprocess.run(
            fulfill_command(
                running,
                source,
                tmp_path / "j",
                "--user-rate",
                "4/0.5",
                "--report",
                str(report_path),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        throttled = running.sync(lambda: running.emulator.stats.answers[("consume", 429)])
        applied = running.sync(lambda: running.emulator.ledger.total)
    assert paced.returncode == 0, paced.stderr
    report = orjson.loads(report_path.read_bytes())
    assert report["counts"]["done"] == 12
    assert report["pacing"]["usersParked"] >= 1
    assert report["pacing"]["throttled"] <= throttled <= 2
    assert applied == 12
    assert "pacing: users parked" in paced.stdout


def test_fulfill_against_an_endpoint_is_unpaced_by_default(tmp_path: Path) -> None:
    source, report_path = tmp_path / "in.jsonl", tmp_path / "report.json"
    with open(source, "wb") as file:
        for n in range(12):
            file.write(
                item_line(n, beneficiary={"identityValue": "hot", "localTicketReference": "r"})
            )
    with EmulatorThread() as running:
        done = subprocess.run(
            fulfill_command(running, source, tmp_path / "j", "--report", str(report_path)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(report_path.read_bytes())["pacing"] == {"throttled": 0, "usersParked": 0}
    assert "pacing:" not in done.stdout


async def test_a_paced_bar_shows_parked_users_and_429s() -> None:
    stats = FulfillmentStats(done=3, parked_users=2, throttled=1)
    output = io.StringIO()
    async with ProgressBar(lambda: stats, file=output, enabled=True, paced=True):
        pass
    assert output.getvalue().rstrip().endswith("in_flight=0, parked=2, 429s=1]")
