"""One attempt over real sockets: failure classification and bounded body reads."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from yarl import URL

from store_async import _transport as transport_module
from store_async._transport import AiohttpTransport, classify_exception
from store_async.emulator import FaultKind, FaultPlan
from store_async.errors import (
    FailureKind,
    InvalidRequestError,
    ResponseTooLargeError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
)
from tests.support.credentials import GOOD_TOKEN
from tests.support.emulator import emulator
from tests.support.raw_server import RawServer

TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)
HEADERS = {
    "Authorization": f"Bearer {GOOD_TOKEN}",
    "Content-Type": "application/json",
    "MS-CorrelationId": "corr-t-1",
}
USER = {"identityType": "b2b", "identityValue": "user-1", "localTicketReference": "r"}
BODY = orjson.dumps(
    {"beneficiary": USER, "itemId": "i", "trackingId": "6b9c3e1a-2d4f-4e5a-9b8c-7d6e5f4a3b2c"}
)
QUERY_BODY = orjson.dumps({"beneficiaries": [USER], "productTypes": ["Durable"]})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def consume_url(base: str) -> URL:
    return URL(f"{base}/v6.0/collections/consume")


async def post(
    session: aiohttp.ClientSession,
    url: URL,
    *,
    limit: int = 1024,
    client_timeout: aiohttp.ClientTimeout = TIMEOUT,
    body: bytes = BODY,
) -> tuple[int, bytes]:
    status, _headers, body = await transport_for(session, limit, client_timeout).send(
        "POST", url, HEADERS, body, client_timeout.total or 5.0
    )
    return status, body


def transport_for(
    session: aiohttp.ClientSession, limit: int, client_timeout: aiohttp.ClientTimeout = TIMEOUT
) -> AiohttpTransport:
    return AiohttpTransport(
        session,
        max_response_bytes=limit,
        attempt_timeout=client_timeout.total or 5.0,
        connect_timeout=client_timeout.connect or 2.0,
    )


async def test_204_returns_without_reading_a_body(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_read(*_args: object) -> bytes:
        raise AssertionError("a 204 must not be read")

    monkeypatch.setattr(transport_module, "_read_bounded", no_read)
    async with emulator() as store:
        status, headers, body = await transport_for(session, 10).send(
            "POST", consume_url(store.url), HEADERS, BODY, 5.0
        )
    assert (status, body) == (204, b"")
    assert headers["MS-CorrelationId"] == "corr-t-1"


async def test_error_statuses_become_typed_errors_with_correlation_headers(
    session: aiohttp.ClientSession,
) -> None:
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503, FaultKind.HTTP_429]}, retry_after=7)
    async with emulator(plan) as store:
        with pytest.raises(ServiceUnavailableError) as unavailable:
            await post(session, consume_url(store.url))
        with pytest.raises(ThrottledError) as throttled:
            await post(session, consume_url(store.url))
    assert unavailable.value.kind is FailureKind.MAYBE_APPLIED
    assert unavailable.value.correlation_id == "corr-t-1"
    assert unavailable.value.inner_code == "ServiceUnavailable"
    assert throttled.value.retry_after == 7.0
    assert throttled.value.kind is FailureKind.ANSWERED


async def test_connection_refused_is_not_sent(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError) as raised:
        await post(session, consume_url(f"http://127.0.0.1:{port}"))
    assert raised.value.kind is FailureKind.NOT_SENT
    assert raised.value.retryable


async def test_waiting_for_a_pooled_connection_past_connect_timeout_is_not_sent() -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        emulator(FaultPlan.always(FaultKind.HANG)) as store,
    ):
        busy = asyncio.create_task(post(session, consume_url(store.url)))
        await store.wait_for_hanging(1)  # the only connection is now taken
        with pytest.raises(TransportError) as raised:
            await post(
                session,
                consume_url(store.url),
                client_timeout=aiohttp.ClientTimeout(total=5, connect=0.05),
            )
        assert store.release_hanging() == 1
        assert (await busy)[0] == 204
    assert raised.value.kind is FailureKind.NOT_SENT
    assert "ConnectionTimeoutError" in str(raised.value)


async def test_a_timeout_after_sending_is_maybe_applied(session: aiohttp.ClientSession) -> None:
    async with emulator(FaultPlan.always(FaultKind.HANG)) as store:
        with pytest.raises(TransportError) as raised:
            await post(
                session,
                consume_url(store.url),
                client_timeout=aiohttp.ClientTimeout(total=0.1, connect=0.05),
            )
        assert store.stats.requests["consume"] == 1
    assert raised.value.kind is FailureKind.MAYBE_APPLIED


@pytest.mark.parametrize(
    ("fault", "seen"),
    [
        (FaultKind.RESET_BEFORE_COMMIT, "ClientOSError"),  # a TCP RST: "connection reset"
        (FaultKind.DROP_AFTER_COMMIT, "ServerDisconnectedError"),  # closed, no answer
    ],
)
async def test_a_dropped_connection_after_sending_is_maybe_applied(
    session: aiohttp.ClientSession, fault: FaultKind, seen: str
) -> None:
    async with emulator(FaultPlan(script={"consume": [fault]})) as store:
        with pytest.raises(TransportError) as raised:
            await post(session, consume_url(store.url))
    assert raised.value.kind is FailureKind.MAYBE_APPLIED
    assert seen in str(raised.value)


async def test_a_truncated_body_is_maybe_applied(session: aiohttp.ClientSession) -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"items":')
        await writer.drain()

    async with RawServer(cut) as server:
        with pytest.raises(TransportError) as raised:
            await post(session, URL(server.url + "/v6.0/collections/query"))
    assert raised.value.kind is FailureKind.MAYBE_APPLIED
    assert "ClientPayloadError" in str(raised.value)


async def test_an_announced_oversized_body_is_refused_without_reading_it(
    session: aiohttp.ClientSession,
) -> None:
    async def huge(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nMS-CV: cv.9\r\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()  # never sends the body: reading it would hang

    async with RawServer(huge) as server:
        with pytest.raises(ResponseTooLargeError) as raised:
            await post(session, URL(server.url + "/v6.0/collections/query"))
    assert raised.value.status == 200
    assert raised.value.cv == "cv.9"
    assert not raised.value.retryable
    assert "1000000000" in str(raised.value)


async def test_an_endless_chunked_body_is_cut_at_the_limit(session: aiohttp.ClientSession) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        while True:  # until the client hangs up
            writer.write(chunk)
            await writer.drain()

    async with RawServer(endless) as server:
        with pytest.raises(ResponseTooLargeError, match="stopped reading"):
            await post(session, URL(server.url + "/q"), limit=1024 * 1024)


async def test_a_compressed_body_is_bounded_by_its_decoded_size(
    session: aiohttp.ClientSession,
) -> None:
    bomb = gzip.compress(b"0" * 5_000_000)

    async def compressed(writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        writer.write(head.encode() + bomb)
        await writer.drain()

    async with RawServer(compressed) as server:
        assert len(bomb) < 1024 * 1024
        with pytest.raises(ResponseTooLargeError):
            await post(session, URL(server.url + "/q"), limit=1024 * 1024)


async def test_a_body_within_the_limit_is_returned_whole(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan.always(FaultKind.OVERSIZED, oversize_bytes=100_000)  # chunked
    async with emulator(plan) as store:
        status, body = await post(
            session, URL(store.url + "/v6.0/collections/query"), limit=1 << 20, body=QUERY_BODY
        )
    assert status == 200
    assert len(body) == 100_000


async def test_an_oversized_error_body_keeps_its_status(session: aiohttp.ClientSession) -> None:
    async def big_error(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10000000\r\n\r\n")
        await writer.drain()

    async with RawServer(big_error) as server:
        with pytest.raises(InvalidRequestError) as raised:
            await post(session, URL(server.url + "/q"))
    assert raised.value.status == 400


async def test_redirects_are_not_followed(session: aiohttp.ClientSession) -> None:
    async def redirect(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await writer.drain()

    async with RawServer(redirect) as server:
        with pytest.raises(StoreError) as raised:
            await post(session, URL(server.url + "/q"))
        assert server.requests == 1
    assert raised.value.status == 307
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (aiohttp.ConnectionTimeoutError(), FailureKind.NOT_SENT),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
                OSError(111, "refused"),
            ),
            FailureKind.NOT_SENT,
        ),
        (aiohttp.ServerDisconnectedError(), FailureKind.MAYBE_APPLIED),
        (aiohttp.SocketTimeoutError(), FailureKind.MAYBE_APPLIED),
        (TimeoutError(), FailureKind.MAYBE_APPLIED),
        (aiohttp.ClientOSError(104, "reset"), FailureKind.MAYBE_APPLIED),
        (aiohttp.ClientPayloadError("cut"), FailureKind.MAYBE_APPLIED),
        (ConnectionResetError(), FailureKind.MAYBE_APPLIED),
    ],
)
def test_classification_table(error: BaseException, kind: FailureKind) -> None:
    assert classify_exception(error) is kind


def _chain(error: BaseException) -> list[BaseException]:
    """The error and everything reachable from it by __cause__ / __context__."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen


async def test_a_malformed_answer_never_keeps_the_bearer_token_in_the_chained_error(
    session: aiohttp.ClientSession,
) -> None:
    async def bogus(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 2000 Bogus\r\nContent-Length: x\r\n\r\n")
        await writer.drain()

    async with RawServer(bogus) as server:
        with pytest.raises(TransportError) as raised:
            await post(session, consume_url(server.url))
    assert raised.value.kind is FailureKind.MAYBE_APPLIED
    chain = _chain(raised.value)
    assert any(isinstance(e, aiohttp.ClientResponseError) for e in chain)  # kept, for debugging
    for error in chain:
        assert GOOD_TOKEN not in repr(error)
        assert GOOD_TOKEN not in repr(error.args)
        assert GOOD_TOKEN not in repr(vars(error) if hasattr(error, "__dict__") else ())
