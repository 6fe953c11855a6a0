"""Secrets echoed by a server stay secret (issue 15 item 6, docs/design.md "Secrets").

A hostile server (:class:`~tests.support.raw_server.KeepAliveServer`) answers every request
with an error that quotes it: the request head (``Authorization: Bearer <token>``) and body
(the Store ID key) verbatim, the token percent-encoded (a proxy quoting a URL), the key in a
JSON echo as .NET's default encoder writes it (``+`` as ``\\u002B``, ``/`` as ``\\/``), the
token cut short (a length-limited echo), a SAS URL's ``sig=``. The secrets are grepped for,
exactly, in every place a failure is shown or stored, and the useful rest of the message is
asserted to be still there.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from store_async import (
    ConsumeRequest,
    Endpoints,
    InvalidRequestError,
    OutcomeUnknownError,
    RetryPolicy,
    StaticTokenCredential,
    StoreClient,
    UserIdentity,
)
from store_async.errors import StoreError
from tests.support.emulator import emulator
from tests.support.postgres import PostgresServer
from tests.support.raw_server import KeepAliveServer, RawRequest

TOKEN = "sec+ret/Token=" + "A1b2C3d4E5f6G7h8" * 3  # "+ / =": every encoding differs
KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.user+key/" + "Zz9Yy8Xx7Ww6" * 4
SIGNATURE = "Zm9vYmFyU2lnbmF0dXJl%2Bxyz%3D"
SAS_URL = f"https://acct.queue.core.windows.net/refunds?sv=2021-08-06&sig={SIGNATURE}&se=2030"
USER = UserIdentity(identity_value=KEY, local_ticket_reference="ref-1")
CLI = "import sys; from store_async.cli import main; sys.exit(main())"
SECRETS = (
    TOKEN,
    KEY,
    TOKEN[:14],
    KEY[:14],
    quote(TOKEN, safe=""),
    "Zm9vYmFyU2lnbmF0dXJl",
)
"""Exact strings that must appear nowhere: the secrets, their first 14 characters (any
cut-short echo), the encoded token, the SAS signature."""


def dotnet_json(text: str) -> str:
    """``text`` as .NET's default ``System.Text.Json`` encoder writes it inside a string."""
    return orjson.dumps(text).decode()[1:-1].replace("+", "\\u002B").replace("/", "\\/")


def echo_body(request: RawRequest) -> bytes:
    """A ServiceError body whose every part quotes the request in another way."""
    head = request.head.decode("latin-1")
    body = request.body.decode()
    return orjson.dumps(
        {
            "code": "BadRequest",
            "message": f"Request rejected by the gateway: {head.strip()} {body}",
            "source": "https://gateway.example/log?auth=" + quote(f"Bearer {TOKEN}", safe=""),
            "innererror": {
                "code": "InvalidParameter",
                "message": f"Bad beneficiary in {dotnet_json(body)}; token began {TOKEN[:20]}",
                "data": [f"queue={SAS_URL}", {"request": body}],
            },
        }
    )


def echoing(status: int, reason: str) -> KeepAliveServer:
    async def handle(request: RawRequest) -> None:
        body = echo_body(request)
        await request.connection.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"MS-CorrelationId: corr-1234\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    return KeepAliveServer(handle)


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked"


def all_text(error: BaseException) -> str:
    """Everything an error shows or keeps: str, repr, args, attributes, chained errors."""
    parts = [str(error), repr(error), repr(error.args), repr(vars(error))]
    if isinstance(error, StoreError) and error.service_error is not None:
        parts.append(repr(error.service_error))
    if isinstance(error, OutcomeUnknownError) and error.last_error is not None:
        parts.append(all_text(error.last_error))
    return "\n".join(parts)


def client(url: str, **options: object) -> StoreClient:
    return StoreClient(StaticTokenCredential(TOKEN), endpoints=Endpoints.single(url), **options)  # type: ignore[arg-type]


def test_the_scrubber_removes_each_echoed_form_and_keeps_the_rest() -> None:
    from store_async._secrets import scrub_text

    text = f"a {TOKEN} b {quote(TOKEN, safe='')} c {dotnet_json(KEY)} d {KEY[:30]}... e {SAS_URL} f"
    scrubbed = scrub_text(text, [TOKEN, KEY])
    assert_clean(scrubbed)
    assert scrubbed == (
        "a <redacted> b <redacted> c <redacted> d <redacted>... e "
        "https://acct.queue.core.windows.net/refunds?sv=2021-08-06&sig=<redacted>&se=2030 f"
    )
    assert scrub_text("nothing secret here, sig", [TOKEN]) == "nothing secret here, sig"
    # A value under MIN_SECRET characters is no credential: not looked for (no mangled text).
    assert scrub_text("AuthenticationTokenInvalid", ["u", "Token"]) == "AuthenticationTokenInvalid"
    assert scrub_text("key=abcdefgh.", ["abcdefgh"]) == "key=<redacted>."


async def test_an_echoed_request_leaves_no_secret_in_the_error() -> None:
    async with echoing(400, "Bad Request") as server, client(server.url) as store:
        with pytest.raises(InvalidRequestError) as raised:
            await store.consume(ConsumeRequest.for_item(USER, "item-1"))
    error = raised.value
    assert_clean(all_text(error))
    # The useful rest is still there.
    assert str(error).startswith("HTTP 400: Bad beneficiary in ")
    assert "token began <redacted>" in str(error)
    assert (error.status, error.code, error.inner_code, error.correlation_id) == (
        400,
        "BadRequest",
        "InvalidParameter",
        "corr-1234",
    )
    assert error.service_error is not None
    assert error.service_error.message is not None
    assert error.service_error.message.startswith("Request rejected by the gateway: POST ")
    assert "Authorization: Bearer <redacted>" in error.service_error.message
    assert error.service_error.source == "https://gateway.example/log?auth=Bearer%20<redacted>"
    assert error.service_error.inner_error is not None
    assert error.service_error.inner_error.data[0] == "queue=" + SAS_URL.replace(
        SIGNATURE, "<redacted>"
    )


async def test_an_unsettled_call_and_the_debug_log_keep_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(backoff_base=0.001, backoff_cap=0.001)
    async with (
        echoing(503, "Service Unavailable") as server,
        client(server.url, retry=policy) as store,
    ):
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(ConsumeRequest.for_item(USER, "item-1"), attempts=3)
    assert len(server.requests) == 3
    assert_clean(all_text(raised.value))
    assert "HTTP 503: Bad beneficiary in " in all_text(raised.value)
    assert caplog.records  # the retries were logged at DEBUG
    assert_clean(caplog.text + "\n".join(repr(r.args) + repr(r.exc_info) for r in caplog.records))


async def test_a_sas_signature_echoed_by_the_refund_queue_sas_call_is_scrubbed() -> None:
    async def handle(request: RawRequest) -> None:
        body = orjson.dumps(
            {"code": "Conflict", "message": f"the queue {SAS_URL} is being rotated"}
        )
        await request.connection.write(
            b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async with KeepAliveServer(handle) as server, client(server.url) as store:
        with pytest.raises(StoreError) as raised:
            await store.get_refund_queue_sas()
    assert_clean(all_text(raised.value))
    assert "&sig=<redacted>&se=2030 is being rotated" in str(raised.value)


def _input(path: Path) -> None:
    path.write_bytes(
        orjson.dumps(
            {
                "key": "order-1",
                "beneficiary": {"identityValue": KEY, "localTicketReference": "ref-1"},
                "itemId": "item-1",
            }
        )
        + b"\n"
    )


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_fulfill_its_report_and_the_sqlite_journal_keep_no_secret(tmp_path: Path) -> None:
    source, journal, report = tmp_path / "in.jsonl", tmp_path / "j.sqlite", tmp_path / "r.json"
    _input(source)
    async with echoing(400, "Bad Request") as server:
        code, output = await _run(
            *("fulfill", str(source), "--journal", str(journal), "--report", str(report)),
            *("--endpoint", server.url, "--token", TOKEN, "--sync", "normal", "--no-progress"),
        )
        assert code == 2, output
        summary_code, summary = await _run("journal", str(journal))
        json_code, summary_json = await _run("journal", str(journal), "--json")
    assert (summary_code, json_code) == (0, 0)
    for text in (output, report.read_text(), summary, summary_json):
        assert_clean(text)
        assert "InvalidRequestError" in text or "HTTP 400" in text
    assert "HTTP 400: Bad beneficiary in " in output
    assert "HTTP 400: Bad beneficiary in " in summary  # the journal shows the error text
    assert "HTTP 400: Bad beneficiary in " in summary_json
    assert "HTTP 400: Bad beneficiary in " in report.read_text()
    with sqlite3.connect(journal) as db:
        columns = db.execute(
            "SELECT error_type, error_status, error_code, error_inner_code, error_message "
            "FROM fulfillments"
        ).fetchall()
    ((error_type, status, error_code, inner_code, message),) = columns
    assert (error_type, status, error_code, inner_code) == (
        "InvalidRequestError",
        400,
        "BadRequest",
        "InvalidParameter",
    )
    assert_clean(message)
    assert message.startswith("HTTP 400: Bad beneficiary in ")


async def test_the_postgres_journal_keeps_no_secret(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    import asyncpg

    source = tmp_path / "in.jsonl"
    _input(source)
    env = postgres_server.env()
    async with echoing(400, "Bad Request") as server:
        code, output = await _run(
            *("fulfill", str(source), "--journal", postgres_dsn, "--endpoint", server.url),
            *("--token", TOKEN, "--no-progress"),
            env=env,
        )
        assert code == 2, output
        _, summary = await _run("journal", postgres_dsn, "--json", env=env)
    assert_clean(output + summary)
    assert "HTTP 400: Bad beneficiary in " in output
    assert "HTTP 400: Bad beneficiary in " in summary
    connection = await asyncpg.connect(postgres_dsn, password=postgres_server.password)
    try:
        rows = await connection.fetch(
            "SELECT error_code, error_message FROM store_async_fulfillments"
        )
    finally:
        await connection.close()
    ((error_code, message),) = [tuple(row) for row in rows]
    assert error_code == "BadRequest"
    assert_clean(message)
    assert message.startswith("HTTP 400: Bad beneficiary in ")


async def test_a_malformed_answer_quoting_the_token_leaves_it_out_of_the_transport_error() -> None:
    """aiohttp's own error text quotes a malformed status line: a server that echoes the
    request there puts the token in a ``TransportError`` (and its chained aiohttp error)."""

    async def handle(request: RawRequest) -> None:
        head = request.head.split(b"\r\n")
        (authorization,) = [line for line in head if line.lower().startswith(b"authorization")]
        await request.connection.write(b"HTTP/1.1 2000 " + authorization + b"\r\n\r\n")

    policy = RetryPolicy(backoff_base=0.001, backoff_cap=0.001)
    async with KeepAliveServer(handle) as server, client(server.url, retry=policy) as store:
        with pytest.raises(OutcomeUnknownError) as raised:
            await store.consume(ConsumeRequest.for_item(USER, "item-1"), attempts=2)
    error = raised.value
    assert error.last_error is not None
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [error, error.last_error]
    while todo:
        item = todo.pop()
        if item is not None and item not in chain:
            chain.append(item)
            todo += [item.__cause__, item.__context__]
    assert any(type(item).__module__.startswith("aiohttp") for item in chain)
    for item in chain:
        assert_clean(all_text(item) if isinstance(item, StoreError) else repr(item) + str(item))
    assert "Bearer <redacted>" in str(error.last_error)


async def test_a_key_renewal_echoed_keeps_neither_the_token_nor_the_key() -> None:
    """The renewal carries the access token in its body (``serviceTicket``) with the key."""
    async with emulator() as emu:
        old_key = emu.mint_store_id_key("user-1", "purchase")
    async with echoing(400, "Bad Request") as server, client(server.url) as store:
        with pytest.raises(InvalidRequestError) as raised:
            await store.renew_store_id_key(old_key)
    (request,) = server.requests
    assert TOKEN.encode() in request.body
    assert old_key.encode() in request.body
    text = all_text(raised.value)
    assert_clean(text)
    for fragment in (old_key, old_key[-20:], old_key.split(".")[1][:14]):
        assert fragment not in text
    assert str(raised.value).startswith("HTTP 400: Bad beneficiary in ")


@pytest.mark.parametrize("verbosity", [(), ("-v",)], ids=["default", "verbose"])
def test_a_failing_credential_shows_a_typed_message_not_its_own_text(
    tmp_path: Path, verbosity: tuple[str, ...]
) -> None:
    """``fulfill`` with azure-identity's ``DefaultAzureCredential`` whose token request fails
    (a wrong client secret, against the emulator's Entra ID endpoint over TLS): the output
    names the failure by type; azure-identity's own text (its warning log, the service's
    ``AADSTS`` description, which may quote the request) stays out of it."""
    import os
    import subprocess

    from tests.test_cli_fulfill import EmulatorThread

    wrong_secret = "wrong-secret-" + "Qq7Rr8Ss9Tt0" * 3
    source, journal, report = tmp_path / "in.jsonl", tmp_path / "j.sqlite", tmp_path / "r.json"
    _input(source)
    with EmulatorThread(tls=True) as running:
        emulator = running.emulator
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AZURE_", "STORE_ASYNC_", "SSL_CERT_"))
        }
        env.update(
            AZURE_TENANT_ID=emulator.tenant_id,
            AZURE_CLIENT_ID=emulator.client_id,
            AZURE_CLIENT_SECRET=wrong_secret,
            AZURE_AUTHORITY_HOST=emulator.authority,
        )
        command = [sys.executable, "-c", CLI, "fulfill", str(source), "--journal", str(journal)]
        command += ["--endpoint", emulator.url, "--no-progress", "--ca-file", emulator.ca_file]
        command += ["--report", str(report), *verbosity]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr + report.read_text()
    assert wrong_secret not in output
    assert wrong_secret[:14] not in output
    assert "AADSTS" not in output, output
    assert "DefaultAzureCredential failed" not in output, output
    assert "(ClientAuthenticationError)" in output, output
