"""``--loop asyncio|uvloop|auto``: the one place the CLI picks its event loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

from store_async.cli import _loop
from store_async.emulator import StoreEmulator
from store_async.errors import ValidationError
from store_async.fulfillment import JournalReader, RowState

TOKEN = "test-token-loop"
CLI = "import sys; from store_async.cli import main; sys.exit(main())"


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.mark.parametrize(("choice", "module"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_the_chosen_loop_runs_the_command(choice: str, module: str) -> None:
    pytest.importorskip("uvloop", reason="the speed extra is not installed (.ci/run installs it)")
    assert _loop.run(_loop_module(), choice) == module


def test_auto_takes_uvloop_when_installed_and_asyncio_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("uvloop", reason="the speed extra is not installed (.ci/run installs it)")
    assert _loop.run(_loop_module(), "auto") == "uvloop"
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: import fails
    assert _loop.run(_loop_module(), "auto") == "asyncio"


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    main = _loop_module()
    with pytest.raises(ValidationError, match=r"pip install 'store-async\[speed\]'"):
        _loop.run(main, "uvloop")
    assert main.cr_frame is None  # closed, never started: no "never awaited" warning


async def test_fulfill_runs_on_uvloop(tmp_path: Path) -> None:
    pytest.importorskip("uvloop", reason="the speed extra is not installed (.ci/run installs it)")
    source, journal = tmp_path / "input.jsonl", tmp_path / "journal.sqlite"
    source.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "key": f"order-{n}",
                    "beneficiary": {"identityValue": f"user-{n % 3}", "localTicketReference": "r"},
                    "itemId": f"item-{n}",
                }
            )
            + b"\n"
            for n in range(50)
        )
    )
    emulator = StoreEmulator(auto_create=True, dev_token=TOKEN)
    await emulator.start()
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", CLI, "fulfill", str(source), "--journal", str(journal)),
            *("--endpoint", emulator.url, "--token", TOKEN, "--no-progress", "--loop", "uvloop"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert (process.returncode, stderr) == (0, b"")
        with JournalReader(journal) as reader:
            assert reader.counts()[RowState.DONE] == 50
        assert (emulator.ledger.total, emulator.ledger.duplicates()) == (50, {})
    finally:
        await emulator.stop()


def test_an_unknown_loop_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from store_async.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--loop", "trio"])
    assert exited.value.code == 1  # the CLI contract: a usage error exits 1
    assert "invalid choice: 'trio'" in capsys.readouterr().err
