"""The minimal consume server the benchmarks measure against, run in its own process.

Shared by ``bench_consume.py``, ``bench_consume_v8.py`` and ``bench_fulfillment.py`` (run as
scripts, so this directory is on ``sys.path``), so they measure against exactly the same server:
v6 consume answers 204, v8 consume 200 with its balance record (the body is parsed to echo ids).
"""

from __future__ import annotations

import asyncio
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
