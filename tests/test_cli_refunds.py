"""``store-async refunds sync`` / ``export`` end to end: real subprocesses, a real Azurite, the
emulator (its SAS route and control plane) in a background thread, real SQLite.

The crash test puts a small forwarding proxy between the CLI and Azurite. The proxy counts the
queue requests and SIGKILLs the CLI at chosen ones: after a receive was answered by Azurite but
before the CLI got it (messages hidden, nothing recorded), and at a delete (the batch committed,
some of its messages not deleted). No kill depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.azurite import Azurite, azurite  # noqa: F401 - the fixture
from tests.test_cli_fulfill import TOKEN, EmulatorThread

T = TypeVar("T")
CLI = "import sys; from store_async.cli import main; sys.exit(main())"
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class QueueProxy:
    """Forwards HTTP to Azurite from its own loop thread; kills a process at a chosen request.

    ``kill_at = ("receive", n, "after")`` kills the target once Azurite answered the n-th
    receive (before the answer is passed on); ``("delete", n, "before")`` kills it when the
    n-th delete arrives (before Azurite sees it). Counters restart with :meth:`arm`.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self.kill_at: tuple[str, int, str] | None = None
        self.target: subprocess.Popen[bytes] | None = None
        self.killed = False
        self.signum = signal.SIGKILL
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> QueueProxy:
        self._thread.start()
        self.url = self._call(self._start)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, function: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    def arm(
        self,
        target: subprocess.Popen[bytes],
        kill_at: tuple[str, int, str] | None,
        signum: int = signal.SIGKILL,
    ) -> None:
        def arm() -> None:
            self.counts.clear()
            self.target, self.kill_at, self.killed = target, kill_at, False
            self.signum = signum

        self._loop.call_soon_threadsafe(arm)

    async def _start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def _maybe_kill(self, kind: str, when: str) -> None:
        if self.kill_at == (kind, self.counts[kind], when) and self.target is not None:
            os.kill(self.target.pid, self.signum)
            self.killed = True

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        kind = "other"
        if request.path.endswith("/messages") and request.method == "GET":
            kind = "peek" if "peekonly" in request.query else "receive"
        elif request.method == "DELETE" and "/messages/" in request.path:
            kind = "delete"
        self.counts[kind] += 1
        self._maybe_kill(kind, "before")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as answer:
            body = await answer.read()
            self._maybe_kill(kind, "after")
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=answer.status, body=body, headers=out)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=300
    )


def sync_command(emulator: EmulatorThread, journal: Path | str, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-c", CLI, "refunds", "sync", "--journal", str(journal)),
        *("--endpoint", emulator.emulator.url, "--token", TOKEN, "--no-progress", *extra),
    ]


def control(emulator: EmulatorThread, document: dict[str, Any]) -> dict[str, Any]:
    """``POST /_emulator/refunds``, as another process would."""
    request = urllib.request.Request(
        f"{emulator.emulator.url}/_emulator/refunds",
        data=orjson.dumps(document),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result: dict[str, Any] = orjson.loads(answer.read())
    return result


def journal_events(journal: Path) -> int:
    with sqlite3.connect(journal) as connection:
        return int(connection.execute("SELECT count(*) FROM refund_events").fetchone()[0])


def export(journal: Path | str, *extra: str) -> list[dict[str, Any]]:
    done = cli("refunds", "export", "--journal", str(journal), *extra)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def queue(azurite: Azurite) -> tuple[Azurite, str]:  # noqa: F811
    return azurite, azurite.new_queue()


@pytest.mark.slow
def test_sigkilled_three_times_then_until_empty_records_every_event_exactly_once(
    queue: tuple[Azurite, str], tmp_path: Path
) -> None:
    server, name = queue
    journal = tmp_path / "refunds.db"
    with QueueProxy(f"http://127.0.0.1:{server.port}") as proxy:
        sas = server.sas_uri(name).replace(f"http://127.0.0.1:{server.port}", proxy.url)
        with EmulatorThread(refund_queue=sas) as emulator:
            issued = control(
                emulator,
                {"count": 360, "duplicates": 40, "base64urlShare": 0.25, "poison": 3, "seed": 7},
            )
            assert (issued["messages"], len(set(issued["eventIds"]))) == (403, 360)
            kills = [("receive", 3, "after"), ("delete", 5, "before"), ("delete", 70, "before")]
            command = sync_command(emulator, journal, "--visibility-timeout", "3")
            recorded: list[int] = []
            for kill_at in kills:
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                proxy.arm(process, kill_at)
                assert process.wait(timeout=120) == -signal.SIGKILL, kill_at
                assert proxy.killed
                recorded.append(journal_events(journal))
            hidden = server.count(name)
            proxy.arm(process, None)
            final = subprocess.run(
                [*command, "--until-empty"], capture_output=True, text=True, timeout=300
            )
    summary = final.stdout.strip()
    assert final.returncode == (2 if " 0 rejected" not in summary else 0), final.stderr
    assert summary.endswith("queue drained")
    events = export(journal)
    ids = [event["id"] for event in events]
    assert sorted(ids) == sorted(issued["eventIds"])  # exactly the 360 ids, each once
    assert len(ids) == len(set(ids)) == 360
    rejected = export(journal, "--rejected")
    assert len(rejected) == 3
    assert server.count(name) == 0
    by_id = {event["id"]: event for event in events}
    assert all(set(event) >= {"id", "source", "type", "data"} for event in by_id.values())
    # Each run got further: the first kill lost only hidden messages, the others hit batches
    # that were committed but not wholly deleted (their copies came back as duplicates).
    assert recorded[0] > 0
    assert recorded == sorted(recorded)
    assert recorded[-1] < 360
    print(
        f"403 messages (360 events, 40 duplicates, 3 poison); killed at {kills}, "
        f"events recorded after each kill: {recorded}; "
        f"{hidden} messages left before --until-empty; final: {summary}; "
        f"export: {len(ids)} events, {len(set(ids))} distinct; rejected: {len(rejected)}"
    )


def test_sync_exit_codes_and_export_filters(queue: tuple[Azurite, str], tmp_path: Path) -> None:
    server, name = queue
    journal = tmp_path / "refunds.db"
    with EmulatorThread(refund_queue=server.sas_uri(name)) as emulator:
        events = [
            {"id": f"e-{n}", "data": {"orderId": "o", "lineItemId": f"l-{n}", "productId": "p",
                                      "eventState": state}}
            for n, state in enumerate(["Revoked", "Return", "ChargebackReversal", "Odd"])
        ]  # fmt: skip
        control(emulator, {"events": events, "duplicates": 2, "seed": 3})
        clean = cli(*sync_command(emulator, journal)[3:])
        assert clean.returncode == 0, clean.stderr
        assert clean.stdout.startswith(
            f"refunds sync: 6 messages from http://127.0.0.1:{server.port}/devstoreaccount1/{name}?"
        )
        assert "4 new events, 2 duplicates, 0 rejected; 6 deleted; queue drained" in clean.stdout
        assert "sig=<redacted>" in clean.stdout
        control(emulator, {"poison": 2})
        poisoned = cli(*sync_command(emulator, journal)[3:])
        assert poisoned.returncode == 2, poisoned.stderr
        assert "0 new events, 0 duplicates, 2 rejected; 2 deleted" in poisoned.stdout
    exported = {event["id"]: event for event in export(journal)}
    assert exported == {event["id"]: event for event in events}  # as received: "Return" kept
    assert [e["id"] for e in export(journal, "--state", "returned")] == ["e-1"]
    several = export(journal, "--state", "Revoked", "--state", "Odd")
    assert sorted(e["id"] for e in several) == ["e-0", "e-3"]
    assert len(export(journal, "--unhandled")) == 4
    rejected = export(journal, "--rejected")
    assert sorted(r["text"] for r in rejected) == [
        "PHJlZnVuZD5ub3QgSlNPTjwvcmVmdW5kPg==",  # base64 of "<refund>not JSON</refund>"
        "this is not base64 at all!",
    ]
    assert sorted(r["reason"].split(" (")[0] for r in rejected) == [  # (orjson's words)
        "the decoded message is not JSON",
        "the message is not base64 or base64url text",
    ]


def test_configuration_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    with EmulatorThread() as emulator:  # no refund queue: the Store answers 400
        not_onboarded = cli(*sync_command(emulator, tmp_path / "r.db")[3:])
    assert not_onboarded.returncode == 1
    assert not_onboarded.stderr.startswith("store-async refunds: the refund queue is not set up")
    assert "Traceback" not in not_onboarded.stderr
    missing = cli("refunds", "export", "--journal", str(tmp_path / "none.db"))
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        f"store-async refunds: no refund journal at {tmp_path / 'none.db'}",
    )
    usage = cli("refunds", "sync")
    assert usage.returncode == 1
    assert "--journal" in usage.stderr
    bad_number = cli("refunds", "sync", "--journal", "x", "--visibility-timeout", "0")
    assert bad_number.returncode == 1


def test_the_emulator_command_serves_a_refund_queue(
    queue: tuple[Azurite, str], tmp_path: Path
) -> None:
    server, name = queue
    sas = server.sas_uri(name)
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "emulator", "--port", "0", "--token", TOKEN,
         "--refund-queue", sas],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert process.stdout.readline().strip() == TOKEN
        request = urllib.request.Request(
            f"{url}/v8.0/b2b/clawback/sastoken", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            document = orjson.loads(answer.read())
        assert document["uri"] == sas
        assert len(document["expiresOn"]) == len("2022-12-09T02:13Z")
        issue = urllib.request.Request(
            f"{url}/_emulator/refunds", data=b'{"count": 6, "bundles": 1, "seed": 1}'
        )
        with urllib.request.urlopen(issue, timeout=30) as answer:
            issued = orjson.loads(answer.read())
        assert (issued["messages"], len(issued["bundleKeys"])) == (6, 6)
        assert server.count(name) == 6
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0


def test_messages_a_dead_reader_left_hidden_make_sync_exit_3_until_they_are_back(
    queue: tuple[Azurite, str], tmp_path: Path
) -> None:
    server, name = queue
    journal = tmp_path / "refunds.db"
    with EmulatorThread(refund_queue=server.sas_uri(name)) as emulator:
        control(emulator, {"count": 5, "seed": 4})
        # A reader that "dies" holding all five: received for 600 s, never deleted.
        from azure.storage.queue import QueueClient

        with QueueClient.from_connection_string(server.connection_string, name) as client:
            held = list(client.receive_messages(messages_per_page=32, visibility_timeout=600))
        assert len(held) == 5
        plain = cli(*sync_command(emulator, journal)[3:])
        assert plain.returncode == 3, plain.stderr
        assert "0 messages" in plain.stdout
        assert plain.stdout.strip().endswith("queue stopped before empty")
        waited = cli(*sync_command(emulator, journal, "--until-empty", "--max-wait", "0")[3:])
        assert waited.returncode == 3, waited.stderr
        # The dead reader's messages come back (here: made visible at once) and are recorded.
        with QueueClient.from_connection_string(server.connection_string, name) as client:
            for message in held:
                client.update_message(message, visibility_timeout=0)
        done = cli(*sync_command(emulator, journal, "--until-empty")[3:])
        assert done.returncode == 0, done.stderr
        assert "5 new events" in done.stdout
    assert len(export(journal)) == 5
    assert server.count(name) == 0


def test_sigterm_stops_after_the_current_batch_with_exit_3(
    queue: tuple[Azurite, str], tmp_path: Path
) -> None:
    server, name = queue
    journal = tmp_path / "refunds.db"
    with QueueProxy(f"http://127.0.0.1:{server.port}") as proxy:
        sas = server.sas_uri(name).replace(f"http://127.0.0.1:{server.port}", proxy.url)
        with EmulatorThread(refund_queue=sas) as emulator:
            control(emulator, {"count": 100, "seed": 5})
            process = subprocess.Popen(
                sync_command(emulator, journal), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            # SIGTERM when the second batch's first delete arrives: that batch is finished
            # (recorded and deleted), and no further batch is received.
            proxy.arm(process, ("delete", 33, "before"), signal.SIGTERM)
            out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    assert out.decode().startswith("refunds sync: 64 messages")
    assert "64 new events" in out.decode()
    assert "64 deleted; queue stopped before empty" in out.decode()
    assert proxy.counts["receive"] == 2
    assert journal_events(journal) == 64
    assert server.count(name) == 36


def test_the_control_plane_refuses_bad_requests_with_400(tmp_path: Path) -> None:
    with EmulatorThread() as emulator:
        for body, reason in (
            (b"[1]", "JSON object"),
            (b'{"count": 1}', "no refund queue"),
            (b'{"count": 1, "bundles": 1}', "three generated events"),
            (b"not json", "JSON"),
        ):
            request = urllib.request.Request(
                f"{emulator.emulator.url}/_emulator/refunds", data=body
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=30)
            assert caught.value.code == 400
            assert reason in orjson.loads(caught.value.read())["error"]


def test_progress_is_drawn_on_a_terminal_and_not_in_a_pipe(
    queue: tuple[Azurite, str], tmp_path: Path
) -> None:
    server, name = queue
    with EmulatorThread(refund_queue=server.sas_uri(name)) as emulator:
        control(emulator, {"count": 40, "seed": 6})
        command = [c for c in sync_command(emulator, tmp_path / "r.db") if c != "--no-progress"]
        controller, terminal = pty.openpty()
        # A terminal 24 x 100 (a new pty is 0 x 0, where tqdm has no room to draw).
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=terminal, timeout=120)
            os.close(terminal)
            drawn = b""
            with contextlib.suppress(OSError):  # EIO once everything is read
                while chunk := os.read(controller, 65536):
                    drawn += chunk
        finally:
            os.close(controller)
        assert done.returncode == 0
        assert b"refunds:" in drawn
        assert b"40msg" in drawn.replace(b" ", b"")
        control(emulator, {"count": 2, "seed": 8})
        piped = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0
    assert piped.stderr == ""
