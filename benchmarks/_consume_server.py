"""The minimal consume server the benchmarks measure against, run in its own process.

Shared by ``bench_consume.py`` and ``bench_fulfillment.py`` (run as scripts, so this directory is
on ``sys.path``), so both measure against exactly the same server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

PATH = "/v6.0/collections/consume"


def serve(port_queue: Any) -> None:
    """The server process: 204 for every consume (the body is read, like a real server)."""

    async def consume(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, consume)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())
