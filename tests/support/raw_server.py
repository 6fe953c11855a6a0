"""A TCP server for answers no well-behaved HTTP server would give (cut bodies, lying lengths,
bogus status lines): the emulator's ``RawAnswer`` covers what aiohttp can still send."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

RawReply = Callable[[asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server that reads one HTTP request per connection and runs ``reply(writer)``:
    for answers no well-behaved HTTP server would give (cut bodies, lying lengths)."""

    def __init__(self, reply: RawReply) -> None:
        self.reply = reply
        self.requests = 0
        self.bytes_written = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            await self.reply(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()
