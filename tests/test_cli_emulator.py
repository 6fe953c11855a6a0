"""``store-async emulator`` as a real subprocess: URL and token on stdout, stops on a signal."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import pytest

LAUNCH = "import sys; from store_async.cli import main; sys.exit(main())"
TRACKING = "0f8fad5b-d9cb-469f-a165-70867728950e"


@asynccontextmanager
async def emulator_process(*options: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCH,
        "emulator",
        "--port",
        "0",
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def first_lines(process: asyncio.subprocess.Process) -> tuple[str, str]:
    assert process.stdout is not None
    url = await asyncio.wait_for(process.stdout.readline(), 30)
    token = await asyncio.wait_for(process.stdout.readline(), 30)
    return url.decode().strip(), token.decode().strip()


async def consume(url: str, token: str, ssl: object = None) -> int:
    body = {
        "beneficiary": {
            "identityType": "b2b",
            "identityValue": "cli-user",
            "localTicketReference": "r",
        },
        "itemId": "never-seeded-item",
        "trackingId": TRACKING,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v6.0/collections/consume",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ssl=ssl if ssl is not None else True,
        ) as answer,
    ):
        return answer.status


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_answers_a_consume_from_another_process_and_stops_on_a_signal(
    stop_signal: signal.Signals,
) -> None:
    async with emulator_process("--token", "my-dev-token", "--seed", "3") as process:
        url, token = await first_lines(process)
        assert url.startswith("http://127.0.0.1:")
        assert token == "my-dev-token"
        assert await consume(url, token) == 204  # auto-created on first consume
        assert await consume(url, token) == 204  # a replay
        assert await consume(url, "wrong-token") == 401
        process.send_signal(stop_signal)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
    assert "seed 3" in log
    assert "stopped after 3 requests, 0 faults, 1 applied" in log
    assert "my-dev-token" not in log


async def test_tls_prints_an_https_url_and_the_ca_path() -> None:
    import ssl

    async with emulator_process("--tls") as process:
        url, token = await first_lines(process)
        assert url.startswith("https://127.0.0.1:")
        assert token.startswith("emulator-dev-")
        assert process.stderr is not None
        ca_path = ""
        while not ca_path:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line, "stderr closed before the CA path was printed"
            if "CA certificate" in line:
                ca_path = line.rsplit(" ", 1)[1].strip()
        context = ssl.create_default_context(cafile=ca_path)
        assert await consume(url, token, ssl=context) == 204
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LAUNCH,
            "emulator",
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert out == b""
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--fault-rate", "2"], "must be within 0..1"), (["--port", "x"], "not a whole number")],
)
def test_bad_options_are_usage_errors(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from store_async.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["emulator", *option])
    assert exited.value.code == 1  # usage error: 2 would mean "some failed"
    assert message in capsys.readouterr().err
