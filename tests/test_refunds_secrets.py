"""No SAS signature in any log, repr, error, journal or CLI output, even from servers that echo it.

The echo server plays both sides: the Store's SAS route hands out a SAS URI pointing back at it,
and as the "queue" it refuses every request with a 403 whose body and headers repeat the request
URL (signature included). A second mode makes the SAS route itself fail with the URI in its
error message.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from store_async import StaticTokenCredential, StoreClient
from store_async.endpoints import Endpoints
from store_async.errors import InvalidRequestError, RefundQueueError, StoreError
from store_async.refunds import RefundFeed, RefundQueue, RefundSync, SqliteRefundJournal

SECRET = "U2lnbmF0dXJlVGhhdE11c3ROb3RMZWFr"  # the signature; also checked URL-decoded
CLI = "import sys; from store_async.cli import main; sys.exit(main())"


class EchoServer:
    def __init__(self, *, sas_fails: bool = False) -> None:
        self.sas_fails = sas_fails
        self.queue_requests = 0

    async def __aenter__(self) -> EchoServer:
        app = web.Application()
        app.router.add_get("/v8.0/b2b/clawback/sastoken", self._sas)
        app.router.add_route("*", "/devstoreaccount1/{tail:.*}", self._queue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    @property
    def sas_uri(self) -> str:
        return f"{self.url}/devstoreaccount1/refunds?sv=2021-08-06&sp=rp&se=2099-01-01&sig={SECRET}"

    async def _sas(self, request: web.Request) -> web.Response:
        if self.sas_fails:
            message = f"Bad queue {self.sas_uri}"
            body = {"code": "BadRequest", "message": message,
                    "innererror": {"code": "Bad", "message": message}}  # fmt: skip
            return web.json_response(body, status=400)
        return web.json_response({"expiresOn": "2099-01-01T00:00Z", "uri": self.sas_uri})

    async def _queue(self, request: web.Request) -> web.Response:
        self.queue_requests += 1
        echoed = escape(f"{self.url}{request.path_qs}")
        assert SECRET in echoed  # the client really sent it here
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
            f"<Message>Refused {echoed}</Message>"
            f"<AuthenticationErrorDetail>sig={SECRET} for {echoed}</AuthenticationErrorDetail>"
            "</Error>"
        )
        headers = {"x-ms-error-code": "AuthenticationFailed", "x-echo": f"{request.path_qs}"}
        return web.Response(status=403, text=body, content_type="application/xml", headers=headers)


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with EchoServer() as server:
        yield server


def assert_clean(*texts: object) -> None:
    for text in texts:
        shown = str(text)
        assert SECRET not in shown, shown
        assert "U2lnbmF0dXJl" not in shown, shown


async def test_nothing_shows_the_signature_when_the_queue_echoes_it(
    echo: EchoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, aiohttp's, Azure's
    credential = StaticTokenCredential("token")
    async with (
        StoreClient(credential, endpoints=Endpoints.single(echo.url)) as store,
        SqliteRefundJournal(tmp_path / "refunds.db") as journal,
    ):
        sas = await store.get_refund_queue_sas()
        assert sas.uri == echo.sas_uri
        async with RefundQueue(store) as queue:
            with pytest.raises(RefundQueueError) as caught:
                await queue.receive()
            shown_queue = (repr(queue), str(queue), repr(queue.sas), str(queue.sas))
        with pytest.raises(RefundQueueError) as from_sync:
            async with RefundQueue(store) as queue:
                await RefundSync(queue, journal).run()
        with pytest.raises(RefundQueueError) as from_feed:
            async for _ in RefundFeed(store, journal):
                pass
    assert echo.queue_requests == 6  # each operation: once, then once more with a new SAS
    for error in (caught.value, from_sync.value, from_feed.value):
        assert error.status == 403
        assert error.__cause__ is None
        assert error.__context__ is None
        assert_clean(str(error), repr(error), error.args, vars(error))
    assert_clean(*shown_queue, repr(sas), str(sas), sas.redacted_uri)
    assert "sig=<redacted>" in repr(sas)
    assert caplog.records  # Azure did log the requests...
    assert_clean(caplog.text, *(record.getMessage() for record in caplog.records))  # ...redacted
    assert_clean((tmp_path / "refunds.db").read_bytes())


async def test_an_error_from_the_sas_route_that_echoes_the_uri_is_redacted() -> None:
    async with (
        EchoServer(sas_fails=True) as echo,
        StoreClient(StaticTokenCredential("token"), endpoints=Endpoints.single(echo.url)) as store,
    ):
        with pytest.raises(InvalidRequestError) as caught:
            await store.get_refund_queue_sas()
    error = caught.value
    assert error.service_error is not None
    assert error.service_error.inner_error is not None
    assert "sig=<redacted>" in error.service_error.inner_error.message  # type: ignore[operator]
    assert_clean(str(error), repr(error), error.args, error.service_error, vars(error))


async def test_a_failing_sas_route_with_5xx_echo_is_redacted_too() -> None:
    async def five_hundred(request: web.Request) -> web.Response:
        return web.json_response({"message": f"boom ?sig={SECRET}"}, status=501)

    app = web.Application()
    app.router.add_get("/v8.0/b2b/clawback/sastoken", five_hundred)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with StoreClient(
            StaticTokenCredential("t"), endpoints=Endpoints.single(url)
        ) as store:
            with pytest.raises(StoreError) as caught:
                await store.get_refund_queue_sas()
    finally:
        await runner.cleanup()
    assert caught.value.status == 501
    assert "boom ?sig=<redacted>" in str(caught.value)
    assert_clean(str(caught.value), vars(caught.value))


async def test_the_cli_never_prints_the_signature(echo: EchoServer, tmp_path: Path) -> None:
    # A subprocess of its own; awaited, so this loop keeps serving it.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "refunds", "sync", "--journal", str(tmp_path / "r.db"),
        "--endpoint", echo.url, "--token", "token", "--no-progress",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 1
    assert stderr.startswith("store-async refunds: refund queue receive: HTTP 403"), stderr
    assert_clean(stdout, stderr)
