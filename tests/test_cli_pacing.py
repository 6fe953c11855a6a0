"""``--user-rate`` on ``fulfill`` and ``demo``, ``--user-limit`` on ``emulator``: the contract
(Store default against Microsoft's hosts, off against an emulator) and clear usage errors."""

from __future__ import annotations

import argparse

import pytest

from store_async.cli import demo, emulator, fulfill
from store_async.pacing import STORE_USER_RATE, UserRate


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
