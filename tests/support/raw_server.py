"""TCP servers for answers no well-behaved HTTP server would give (cut bodies, lying lengths,
bogus status lines, answers nobody asked for on an idle keep-alive connection): the emulator's
``RawAnswer`` covers what aiohttp can still send. :class:`RawServer` reads one request per
connection; :class:`KeepAliveServer` serves many per connection, each answer scripted by the
test."""

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


class RawRequest:
    """One request read by :class:`KeepAliveServer`: its connection, head and body."""

    def __init__(self, connection: RawConnection, head: bytes, body: bytes) -> None:
        self.connection = connection
        self.head = head
        self.body = body


class RawConnection:
    """One client connection of a :class:`KeepAliveServer`, answered by the test's handler.

    After :meth:`stray` the connection is *poisoned*, as if a proxy had answered a request it
    then forgot: requests read on it afterwards are recorded in ``ignored`` and never
    answered, never handed to the handler (so never applied).
    """

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.poisoned = False
        self.ignored: list[RawRequest] = []

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def stray(self, data: bytes) -> None:
        """Write an answer nobody asked for and poison the connection. On loopback the bytes
        are in the client's socket buffer when this returns."""
        self.poisoned = True
        await self.write(data)


class KeepAliveServer:
    """An HTTP/1.1 server that serves many requests per connection (keep-alive) and lets the
    test script each answer: ``handle(request)`` writes it (or not) on ``request.connection``.

    Requests are read one after the other per connection; ``handle`` runs as its own task, so
    it may hold an answer while later requests (on other connections) are read.
    """

    def __init__(self, handle: Callable[[RawRequest], Awaitable[None]]) -> None:
        self.handle = handle
        self.connections: list[RawConnection] = []
        self.requests: list[RawRequest] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = RawConnection(len(self.connections) + 1, writer)
        self.connections.append(connection)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = RawRequest(connection, head, await reader.readexactly(length))
                if connection.poisoned:
                    connection.ignored.append(request)
                    continue
                self.requests.append(request)
                task = asyncio.create_task(self.handle(request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            connection.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()
