"""The command line's contract with scripts (issue 13): exit codes on every command, --version,
-q/-v, stdin input, --report validated first and --report -, --ca-file, and messages that say
what is wrong. Real emulator (in a thread, or a subprocess), real SQLite, real sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from store_async.cli import COMMANDS, main
from store_async.emulator import FaultKind, FaultPlan
from store_async.fulfillment import JournalReader, RowState
from tests.test_cli_emulator import consume, emulator_process
from tests.test_cli_fulfill import (
    CLI,
    SECRET_PREFIX,
    TOKEN,
    EmulatorThread,
    item_line,
    write_input,
)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process: exit code (argparse's included), stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# -- exit codes: 1 for every usage error, on every command -------------------------------------

# One bad value per command (argparse's type check), beside the unknown flag.
BAD_VALUES = {
    "demo": ["--count", "0"],
    "emulator": ["--port", "x"],
    "fulfill": ["in.jsonl", "--journal", "j", "--concurrency", "0"],
    "journal": ["j", "--limit", "-1"],
    "key-info": ["k", "--at", "yesterday"],
}


# The positional arguments each command requires (so that the unknown flag is the only error).
REQUIRED = {"fulfill": ["in.jsonl", "--journal", "j"], "journal": ["j"], "key-info": ["k"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_flag_exits_1_on_every_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, command, *REQUIRED.get(command, []), "--no-such-flag")
    assert (code, out) == (1, "")
    assert err.startswith("usage: store-async ")
    if command in BAD_VALUES:  # commands added later may require arguments this test lacks
        assert "unrecognized arguments: --no-such-flag" in err


@pytest.mark.parametrize("command", sorted(BAD_VALUES))
def test_a_bad_argument_exits_1_on_every_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, command, *BAD_VALUES[command])
    assert (code, out) == (1, "")
    assert f"store-async {command}: error: argument " in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
        (["--bogus", "demo"], "unrecognized arguments: --bogus"),
        (["-q", "-v", "demo"], "argument -v/--verbose: not allowed with argument -q/--quiet"),
    ],
)
def test_top_level_usage_errors_exit_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(capsys, *args)
    assert code == 1
    assert message in err


def test_help_still_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert "exit codes: 0 done, 1 usage or configuration error, 2 some failed" in out


def test_a_command_runs_with_the_collectors_threshold_raised_and_main_restores_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Hundreds of calls in flight make CPython's default threshold (700) cost a fifth of the
    loop: the CLI, an application, raises it while a command runs, then puts it back (main()
    runs many times in one test process; a library user's process is none of its business)."""
    import gc
    import importlib

    from store_async.cli import GC_THRESHOLD

    seen: list[tuple[int, int, int]] = []
    module = importlib.import_module(COMMANDS["journal"][0])
    monkeypatch.setattr(module, "run", lambda args: seen.append(gc.get_threshold()) or 0)
    before = gc.get_threshold()
    assert before[0] != GC_THRESHOLD
    assert main(["journal", str(tmp_path / "orders.journal")]) == 0
    assert seen == [(GC_THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before


# -- --version ----------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from store_async import __version__

    code, out, err = run_main(capsys, "--version")
    assert (code, out, err) == (0, f"store-async {__version__}\n", "")


def test_version_imports_no_http_stack() -> None:
    probe = (
        "import sys; from store_async.cli import main\n"
        "try: main(['--version'])\n"
        "except SystemExit as exit: code = exit.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'azure', 'cattrs'})\n"
        "print(code, heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 []"


# -- fulfill: rejected lines, stdin, --report, messages -----------------------------------------


@pytest.fixture
def emulator() -> EmulatorThread:
    with EmulatorThread() as running:
        yield running  # type: ignore[misc]


def fulfill(emulator: EmulatorThread, source: str, journal: Path, *extra: str) -> list[str]:
    return [
        "fulfill",
        source,
        "--journal",
        str(journal),
        "--endpoint",
        emulator.emulator.url,
        "--token",
        TOKEN,
        "--sync",
        "normal",
        "--no-progress",
        *extra,
    ]


def test_a_file_whose_only_problem_is_rejected_lines_exits_4(
    emulator: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(item_line(1) + b"{not json\n" + item_line(2))
    code, out, err = run_main(capsys, *fulfill(emulator, str(source), tmp_path / "j"))
    assert code == 4
    expected = "invalid JSON: unexpected character, expected a string key at column 2"
    assert err == f"rejected line 2: {expected}\n"
    assert out.splitlines()[0].startswith(
        "3 fulfillments: 2 done, 0 already done, 0 failed (0 in earlier runs), 0 pending, "
        "0 duplicate lines, 1 rejected line, in "
    )
    assert out.splitlines()[1] == (
        "malformed lines were skipped: fix them and run the same command again"
    )
    assert emulator.sync(lambda: emulator.emulator.ledger.total) == 2


def test_input_from_stdin(emulator: EmulatorThread, tmp_path: Path) -> None:
    lines = b"".join(item_line(n) for n in range(1, 21))
    journal = tmp_path / "j"
    done = subprocess.run(
        [sys.executable, "-c", CLI, *fulfill(emulator, "-", journal)],
        input=lines,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("20 fulfillments: 20 done,")
    with JournalReader(journal) as reader:
        assert reader.counts()[RowState.DONE] == 20
        assert sorted(row.line for row in reader.rows((RowState.DONE,))) == list(range(1, 21))
    assert emulator.sync(lambda: emulator.emulator.ledger.total) == 20


def test_report_dash_writes_json_to_stdout_and_the_summary_to_stderr(
    emulator: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    write_input(source, 3)
    code, out, err = run_main(
        capsys, *fulfill(emulator, str(source), tmp_path / "j", "--report", "-")
    )
    assert code == 0
    document = orjson.loads(out)  # the whole of stdout is the report
    assert (document["exitCode"], document["counts"]["done"]) == (0, 3)
    assert err.startswith("3 fulfillments: 3 done,")


@pytest.mark.parametrize("where", ["missing-folder/report.json", "."])
def test_an_unwritable_report_is_refused_before_any_work(
    where: str, emulator: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, journal = tmp_path / "in.jsonl", tmp_path / "j"
    write_input(source, 3)
    report = str(tmp_path / where)
    code, out, err = run_main(capsys, *fulfill(emulator, str(source), journal, "--report", report))
    assert (code, out) == (1, "")
    reason = "No such file or directory" if "missing" in where else "--report is a directory"
    assert err == f"store-async fulfill: {reason}: {report}\n"
    assert not journal.exists()
    assert emulator.sync(lambda: sum(emulator.emulator.stats.requests.values())) == 0


def test_a_directory_as_input_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "fulfill", str(tmp_path), "--journal", str(tmp_path / "j"))
    assert (code, err) == (
        1,
        f"store-async fulfill: {tmp_path} is a directory; give a JSON Lines file "
        "(or - for standard input)\n",
    )


def test_a_line_that_is_not_utf8_says_so(
    emulator: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    latin1 = '{"key": "café"}\n'.encode("latin-1")
    source.write_bytes(item_line(1) + latin1)
    code, _, err = run_main(capsys, *fulfill(emulator, str(source), tmp_path / "j"))
    assert code == 4
    assert err == "rejected line 2: not UTF-8: byte 0xe9 at byte 13 (save the file as UTF-8)\n"
    assert "surrogates" not in err


def test_token_help_warns_about_the_process_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "fulfill", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "prefer the STORE_ASYNC_ACCESS_TOKEN environment variable: an argument is visible" in (
        flat
    )
    assert "to other local users in `ps`" in flat


# -- -q / -v: the library is quiet unless asked -------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "after", "shown"),
    [("-v", False, True), ("--verbose", True, True), (None, False, False), ("-q", True, False)],
)
def test_retry_logs_show_only_with_verbose(
    flag: str | None, after: bool, shown: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503]}, retry_after=0.0)
    with EmulatorThread(faults=plan) as running:
        source = tmp_path / "in.jsonl"
        write_input(source, 1)
        flags = [flag] if flag else []
        command = fulfill(running, str(source), tmp_path / "j")
        # Before the command name or after it: both work.
        arguments = [*command, *flags] if after else [*flags, *command]
        code, _, err = run_main(capsys, *arguments)
    assert code == 0
    retry_lines = [line for line in err.splitlines() if "retrying consume" in line]
    if shown:
        assert len(retry_lines) == 1
        assert retry_lines[0].startswith("store-async: DEBUG store_async: retrying consume ")
        assert "status=503" in retry_lines[0]
        assert SECRET_PREFIX not in err
    else:
        assert err == ""


# -- TLS: --ca-file, or SSL_CERT_FILE with DefaultAzureCredential and the emulator's authority --


def test_ca_file_trusts_a_tls_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmulatorThread(tls=True) as running:
        source = tmp_path / "in.jsonl"
        write_input(source, 2)
        ca = running.emulator.ca_file
        code, out, _ = run_main(
            capsys, *fulfill(running, str(source), tmp_path / "j", "--ca-file", ca)
        )
        assert code == 0
        assert out.startswith("2 fulfillments: 2 done,")
        assert running.sync(lambda: running.emulator.ledger.total) == 2
        # Without it the system trust store refuses the emulator's throw-away CA: nothing done.
        code, out, _ = run_main(capsys, *fulfill(running, str(source), tmp_path / "j2"))
        assert code != 0
        assert " 0 done," in out


def test_a_ca_file_that_is_not_pem_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, bogus = tmp_path / "in.jsonl", tmp_path / "ca.pem"
    write_input(source, 1)
    bogus.write_text("not a certificate\n")
    args = ("fulfill", str(source), "--journal", str(tmp_path / "j"), "--ca-file", str(bogus))
    code, _, err = run_main(capsys, *args)
    assert (code, err) == (
        1,
        f"store-async fulfill: --ca-file {bogus}: not a PEM CA certificate bundle\n",
    )


@pytest.mark.parametrize("trust", ["SSL_CERT_FILE", "--ca-file"])
def test_default_azure_credential_from_azure_variables_against_the_emulator(
    trust: str, tmp_path: Path
) -> None:
    """What docs/guides/quickstart.md documents: AZURE_* variables, the emulator as authority."""
    with EmulatorThread(tls=True) as running:
        emulator = running.emulator
        source, journal = tmp_path / "in.jsonl", tmp_path / "j"
        write_input(source, 3)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AZURE_", "STORE_ASYNC_", "SSL_CERT_"))
        }
        env.update(
            AZURE_TENANT_ID=emulator.tenant_id,
            AZURE_CLIENT_ID=emulator.client_id,
            AZURE_CLIENT_SECRET=emulator.client_secret,
            AZURE_AUTHORITY_HOST=emulator.authority,
        )
        extra = ["--ca-file", emulator.ca_file] if trust == "--ca-file" else []
        if trust == "SSL_CERT_FILE":
            env["SSL_CERT_FILE"] = emulator.ca_file
        command = [sys.executable, "-c", CLI, "fulfill", str(source), "--journal", str(journal)]
        command += ["--endpoint", emulator.url, "--no-progress", *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("3 fulfillments: 3 done,")
        assert running.sync(lambda: (emulator.tokens_issued, emulator.ledger.total)) == (1, 3)
        assert emulator.client_secret not in done.stdout + done.stderr


# -- emulator: --json, and a client hanging up -------------------------------------------------


async def test_emulator_json_gives_url_token_and_keys_on_one_line() -> None:
    async with emulator_process("--json", "--key-for", "user-1", "--strict-keys") as process:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        document = orjson.loads(first)
        assert sorted(document) == sorted(
            ["url", "token", "tenantId", "clientId", "clientSecret", "authority", "caFile",
             "seed", "storeIdKeys"]
        )  # fmt: skip
        assert document["url"].startswith("http://127.0.0.1:")
        assert document["caFile"] is None
        keys = document["storeIdKeys"]["user-1"]
        assert sorted(keys) == ["collections", "purchase"]
        # The minted collections key is one this --strict-keys emulator accepts.
        body = {
            "beneficiary": {
                "identityType": "b2b",
                "identityValue": keys["collections"],
                "localTicketReference": "r",
            },
            "itemId": "auto-item",
            "trackingId": "0f8fad5b-d9cb-469f-a165-70867728950e",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{document['url']}/v6.0/collections/consume",
                data=orjson.dumps(body),
                headers={
                    "Authorization": f"Bearer {document['token']}",
                    "Content-Type": "application/json",
                },
            ) as answer,
        ):
            assert answer.status == 204, await answer.text()
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)
        assert process.returncode == 0


def test_key_for_without_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "emulator", "--key-for", "u")
    assert (code, err) == (1, "store-async emulator: --key-for needs --json\n")


async def test_a_client_hanging_up_mid_request_is_one_line_not_a_traceback() -> None:
    async with emulator_process() as process:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        token = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        port = int(url.rsplit(":", 1)[1])
        # Headers promise a body that never comes; then the client resets the connection.
        head = (
            "POST /v6.0/collections/consume HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 500\r\n\r\n{"
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await writer.drain()
        # A full round trip on another connection: the server has read the headers by then.
        assert await consume(url, token) == 204
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()  # linger 0: an RST, as a killed client sends
        # The reset is queued before this second round trip's packets: handled by then.
        assert await consume(url, token) == 204
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
        del reader
    lines = err.decode().splitlines()
    assert "Traceback (most recent call last):" not in lines
    hang_ups = [line for line in lines if "hung up" in line]
    assert hang_ups == [
        "store-async emulator: a client (127.0.0.1) hung up mid-request: Connection reset by peer"
    ]


# -- messages: plurals, integer counters ---------------------------------------------------------


async def test_one_attempt_is_singular() -> None:
    from store_async import ConsumeRequest, OutcomeUnknownError, RetryPolicy, StoreClient
    from store_async.emulator import StoreEmulator
    from store_async.models import UserIdentity

    plan = FaultPlan(script={"consume": [FaultKind.DROP_AFTER_COMMIT]})
    async with StoreEmulator(faults=plan, auto_create=True) as emulator:
        user = UserIdentity(identity_value="u", local_ticket_reference="r")
        request = ConsumeRequest.for_item(user, "item-1")
        async with StoreClient(
            emulator.credential(), endpoints=emulator.endpoints, retry=RetryPolicy(attempts=1)
        ) as store:
            with pytest.raises(OutcomeUnknownError) as raised:
                await store.consume(request)
    assert raised.value.attempts == 1
    assert "outcome unknown after 1 attempt (stopped by 1 attempt);" in str(raised.value)


async def test_progress_counters_are_integers_not_engineering_notation() -> None:
    import io

    from store_async.fulfillment import FulfillmentStats
    from store_async.fulfillment.progress import ProgressBar

    stats = FulfillmentStats(done=20_000, already_done=5, failed=100_000, pending=2)
    output = io.StringIO()
    async with ProgressBar(lambda: stats, file=output, enabled=True):
        pass
    final = output.getvalue().rsplit("\r", 1)[-1]
    assert final.startswith("120007 lines [")
    assert " lines/s, " in final
    assert final.rstrip().endswith("done=20005, pending=2, failed=100000, rejected=0, in_flight=0]")
