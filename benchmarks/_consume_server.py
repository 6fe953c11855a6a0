"""The minimal consume server the benchmarks measure against, run in its own process.

Shared by ``bench_consume.py``, ``bench_consume_v8.py`` and ``bench_fulfillment.py`` (run as
scripts, so this directory is on ``sys.path``), so they measure against exactly the same server:
v6 consume answers 204, v8 consume 200 with its balance record (the body is parsed to echo ids).

:func:`serve_raw` is a cheaper one (v6 consume only): an ``asyncio.Protocol`` that finds each
request's end and answers 204, ~55 µs of CPU per call against aiohttp.web's ~100. On a machine
whose few cores the client, the server and a journal's writer process share, a server that
takes less leaves the client side, which the benchmark measures, less disturbed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web

PATH = "/v6.0/collections/consume"
PATH_V8 = "/v8.0/collections/consume"


def serve(port_queue: Any) -> None:
    """The server process: 204 for every v6 consume, a v8 answer for every v8 consume."""

    async def consume(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def consume_v8(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        answer = {
            "newQuantity": 7,
            "itemId": "4b8fbb13127a41f299270ea668681c1d",
            "trackingId": body["trackingId"],
            "productId": body["productId"],
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, consume)
        app.router.add_post(PATH_V8, consume_v8)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_CONSUME = b"POST " + PATH.encode() + b" "


class _RawConsume(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one answer per whole request (head and ``Content-Length`` body):
    204 for a v6 consume, 404 for anything else."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer, start, answers = self._buffer, 0, []
        buffer += data
        while (end := buffer.find(b"\r\n\r\n", start)) >= 0:
            length = _CONTENT_LENGTH.search(buffer, start, end + 2)
            body_end = end + 4 + (int(length[1]) if length else 0)
            if len(buffer) < body_end:
                break
            answers.append(_NO_CONTENT if buffer.startswith(_CONSUME, start) else _NOT_FOUND)
            start = body_end
        del buffer[:start]
        if answers:
            assert self._transport is not None
            self._transport.write(b"".join(answers))


def serve_raw(port_queue: Any) -> None:
    """The cheaper server process: 204 for every v6 consume (see the module docstring)."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            _RawConsume, "127.0.0.1", 0, backlog=1024
        )
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())
