"""A stray answer must never settle another request (issue 15 item 4, docs/design.md rule 8).

A server or proxy that writes an answer nobody asked for on an idle keep-alive connection must
not have it read as the answer of the next request sent on that pooled connection: that request
would count as done while it never reached the server (a lost purchase). Real sockets, a
hostile HTTP/1.1 server (:class:`~tests.support.raw_server.KeepAliveServer`), the real client
and the real ``store-async fulfill`` command with its SQLite journal.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from store_async import (
    ConsumeRequest,
    Endpoints,
    RetryPolicy,
    StaticTokenCredential,
    StoreClient,
    UserIdentity,
)
from store_async.fulfillment import JournalReader, RowState
from tests.support.raw_server import KeepAliveServer, RawRequest

TOKEN = "stale-connection-token"
USER = UserIdentity(identity_value="opaque-user-1", local_ticket_reference="ref-1")
STRAY_204 = b"HTTP/1.1 204 No Content\r\nMS-CorrelationId: stray\r\n\r\n"
STRAY_FULL = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMS-CorrelationId: stray\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)
CLI = "import sys; from store_async.cli import main; sys.exit(main())"


def answer_204(key: str) -> bytes:
    """The server's own answer: its correlation id is the request's tracking id."""
    return f"HTTP/1.1 204 No Content\r\nMS-CorrelationId: {key}\r\n\r\n".encode()


def tracking_id(request: RawRequest) -> str:
    key: str = orjson.loads(request.body)["trackingId"]
    return key


def applying(applied: list[str]) -> Callable[[RawRequest], Awaitable[None]]:
    """A well-behaved handler: apply the consume (record its key), answer 204 at once."""

    async def handle(request: RawRequest) -> None:
        key = tracking_id(request)
        applied.append(key)
        await request.connection.write(answer_204(key))

    return handle


@pytest.mark.parametrize("stray", [STRAY_204, STRAY_FULL], ids=["bare-204", "full-answer"])
async def test_a_stray_answer_on_an_idle_connection_does_not_settle_the_next_consume(
    stray: bytes,
) -> None:
    applied: list[str] = []
    first_request = ConsumeRequest.for_item(USER, "item-1")
    second_request = ConsumeRequest.for_item(USER, "item-2")
    async with (
        KeepAliveServer(applying(applied)) as server,
        StoreClient(StaticTokenCredential(TOKEN), endpoints=Endpoints.single(server.url)) as store,
    ):
        first = await store.consume(first_request)
        (idle,) = server.connections
        await idle.stray(stray)  # the connection is idle in the client's pool
        second = await store.consume(second_request)
    # Both consumes reached the server, and each answer is the server's answer to it.
    assert applied == [first_request.tracking_id, second_request.tracking_id]
    assert (first.correlation_id, second.correlation_id) == (
        first_request.tracking_id,
        second_request.tracking_id,
    )
    # The poisoned connection was dropped before anything was sent on it: one attempt, on a
    # new connection; nothing was written to the poisoned one.
    assert second.attempts == 1
    assert len(server.connections) == 2
    assert idle.ignored == []


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """The server's FIN is in the socket but not yet read: the connection is dropped before
    sending, not reused and failed as *maybe applied* (no resend needed)."""
    applied: list[str] = []
    requests = [ConsumeRequest.for_item(USER, f"item-{n}") for n in (1, 2)]
    async with (
        KeepAliveServer(applying(applied)) as server,
        StoreClient(StaticTokenCredential(TOKEN), endpoints=Endpoints.single(server.url)) as store,
    ):
        await store.consume(requests[0])
        (idle,) = server.connections
        idle.writer.close()
        await idle.writer.wait_closed()
        second = await store.consume(requests[1])
    assert applied == [request.tracking_id for request in requests]
    assert second.attempts == 1


async def test_a_stray_before_a_resend_does_not_settle_the_resend() -> None:
    """The retry path takes its connection from the same pool: a 503, then a resend that must
    not read the stray on the other, idle connection."""
    applied: list[str] = []
    held: list[RawRequest] = []
    both = asyncio.Event()

    async def handle(request: RawRequest) -> None:
        if len(held) < 2:
            held.append(request)
            if len(held) == 2:
                both.set()
            return
        await applying(applied)(request)

    policy = RetryPolicy(backoff_base=0.001, backoff_cap=0.001)
    async with (
        KeepAliveServer(handle) as server,
        StoreClient(
            StaticTokenCredential(TOKEN), endpoints=Endpoints.single(server.url), retry=policy
        ) as store,
    ):
        requests = [ConsumeRequest.for_item(USER, f"item-{n}") for n in (1, 2)]
        calls = [asyncio.create_task(store.consume(request)) for request in requests]
        await both.wait()
        first, second = held
        applied.append(tracking_id(first))
        await first.connection.write(answer_204(tracking_id(first)))
        one = await calls[requests.index(_request_of(requests, first))]
        await first.connection.stray(STRAY_204)  # idle in the pool, taken first (FIFO)
        await second.connection.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
        )
        other = await calls[requests.index(_request_of(requests, second))]
    assert sorted(applied) == sorted(request.tracking_id for request in requests)
    assert one.correlation_id == tracking_id(first)
    assert other.correlation_id == tracking_id(second)
    assert other.attempts == 2
    assert first.connection.ignored == []


def _request_of(requests: list[ConsumeRequest], raw: RawRequest) -> ConsumeRequest:
    (match,) = [request for request in requests if request.tracking_id == tracking_id(raw)]
    return match


async def _journal_done(journal: Path, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` rows of the journal are done: the client has read their answers and
    released their connections to the pool (it journals after the call returns). Polled: the
    journal is the only sign a separate ``fulfill`` process gives of what it has read, and
    only a stray written *after* that read tests the pool (one written before it is caught
    by aiohttp when the connection is released)."""

    def done() -> bool:
        if not journal.exists():
            return False
        with JournalReader(journal) as reader:
            return reader.counts()[RowState.DONE] >= count

    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if await asyncio.to_thread(done):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} rows not done in the journal within {timeout} s")


async def test_fulfill_never_marks_a_row_done_on_a_stray_answer(tmp_path: Path) -> None:
    """``store-async fulfill``, two rows, two connections: row A is answered; once the
    journal has it done (its connection is idle in the pool), the server writes a stray 204 on
    that connection, then answers row B with a 503. B's resend takes the idle connection first
    (the pool is first in, first out): it must not read the stray as B's answer."""
    applied: list[str] = []
    held: list[RawRequest] = []
    source, journal = tmp_path / "in.jsonl", tmp_path / "journal.sqlite"
    source.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "key": f"order-{n}",
                    "beneficiary": {
                        "identityValue": f"opaque-user-{n}",
                        "localTicketReference": f"ref-{n}",
                    },
                    "itemId": f"item-{n}",
                }
            )
            + b"\n"
            for n in (1, 2)
        )
    )
    choreography: list[asyncio.Task[None]] = []

    async def play() -> None:
        first, second = held
        applied.append(tracking_id(first))
        await first.connection.write(answer_204(tracking_id(first)))
        await _journal_done(journal, 1)
        await first.connection.stray(STRAY_204)
        await second.connection.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
        )

    async def handle(request: RawRequest) -> None:
        if len(held) < 2:
            held.append(request)
            if len(held) == 2:  # both rows in flight, on two connections
                choreography.append(asyncio.create_task(play()))
            return
        await applying(applied)(request)

    async with KeepAliveServer(handle) as server:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", CLI, "fulfill", str(source), "--journal", str(journal)),
            *("--endpoint", server.url, "--token", TOKEN, "--concurrency", "2"),
            *("--sync", "normal", "--no-progress"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        await asyncio.gather(*choreography)
        poisoned = held[0].connection
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith("2 fulfillments: 2 done, 0 already done, 0 failed")
    with JournalReader(journal) as reader:
        rows = list(reader.rows())
    keys = sorted(row.request.idempotency_key for row in rows)
    assert {row.state for row in rows} == {RowState.DONE}
    # Every row's consume reached the server exactly once; none was settled by the stray.
    assert sorted(applied) == keys
    assert len(set(applied)) == 2
    assert poisoned.ignored == []


# -- the guard's contract with aiohttp ------------------------------------------------------


def test_aiohttp_internals_the_guard_relies_on_are_still_there() -> None:
    """The guard overrides ``BaseConnector._get`` (private): if aiohttp renames it or changes
    its signature, or drops ``ResponseHandler.should_close``, this fails loudly, not the
    guard silently."""
    import inspect

    from aiohttp.client_proto import ResponseHandler

    from store_async._connector import PoolGuardConnector

    signature = inspect.signature(aiohttp.BaseConnector._get)
    assert list(signature.parameters) == ["self", "key", "traces"]
    assert inspect.iscoroutinefunction(aiohttp.BaseConnector._get)
    assert isinstance(ResponseHandler.should_close, property)
    assert "_get" in vars(PoolGuardConnector)


async def test_the_guard_sees_bytes_the_loop_has_not_read_yet() -> None:
    """``holds_unread_bytes`` looks at the kernel's socket buffer too, not only at what the
    event loop has already parsed: bytes that arrived in the same loop turn count."""
    from store_async._connector import PoolGuardConnector, holds_unread_bytes

    applied: list[str] = []
    async with KeepAliveServer(applying(applied)) as server:
        connector = PoolGuardConnector()
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(server.url, data=b'{"trackingId": "k"}') as response:
                assert response.status == 204
            (conns,) = connector._conns.values()
            ((protocol, _),) = conns
            assert not holds_unread_bytes(protocol)
            await server.connections[0].stray(STRAY_204)
            assert holds_unread_bytes(protocol)  # in the socket, not yet read by the loop
