"""The connection pool's guard: a pooled connection that holds unread bytes is never reused.

HTTP/1.1 pairs answers with requests by order alone. An answer nobody asked for (a second
``204`` from a broken proxy, a duplicate answer, any byte at all) written on an idle keep-alive
connection would be read as the answer of the next request sent on it: that request would count
as done although it never reached the server, and a journal would mark a purchase done that was
never consumed (docs/design.md rule 8).

aiohttp (3.14) closes a connection that holds unread bytes when it is *released* to the pool
(``ResponseHandler.should_close``), but not when it is *taken* from the pool: bytes that arrive
while it is idle are read as the next request's answer. :class:`PoolGuardConnector` checks at
take time, at the last moment before the request is written:

- what the event loop has already read and buffered (``should_close``: a parsed message, a
  tail, an error), and
- what the kernel holds and the loop has not read yet (a non-blocking ``poll`` of the socket:
  readable means bytes or the peer's FIN, both reasons not to reuse).

A connection that fails either check is closed and the next pooled one is tried (else a new
one is opened). Bytes that arrive *after* the request is written cannot be told apart from its
answer by any HTTP/1.1 client; the check makes that window as small as it can be.

The guard overrides a private aiohttp method, ``BaseConnector._get`` (a coroutine taking
``(key, traces)`` and returning a ``Connection`` or ``None``, since aiohttp 3.11; the dependency
is pinned to ``>=3.11,<4``): ``tests/test_stale_connections.py`` fails loudly if its shape
changes. It costs one ``poll`` system call per reused connection. The defect is aiohttp's
(reported upstream as aio-libs/aiohttp#13656 for buffered answers; the bytes still in the socket
and the FIN are this module's additions): drop this class once aiohttp checks at take time.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection

__all__ = ["PoolGuardConnector", "holds_unread_bytes"]

_POLLIN = select.POLLIN


def holds_unread_bytes(protocol: ResponseHandler) -> bool:
    """Whether an idle pooled connection must not be reused: it holds bytes nobody asked
    for (read by the loop or still in the socket), or its peer closed it, or it is closing.
    """
    if protocol.should_close:
        return True
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:  # a transport without a socket (none of aiohttp's): cannot look
        return False
    fd = sock.fileno()
    if fd < 0:
        return True
    # A fresh poll object per check: the pool may be used from several threads' loops.
    poller = select.poll()
    poller.register(fd, _POLLIN)
    return bool(poller.poll(0))


class PoolGuardConnector(aiohttp.TCPConnector):
    """An :class:`aiohttp.TCPConnector` that never hands out a pooled connection holding
    unread bytes (see the module docstring). Same arguments as ``TCPConnector``."""

    async def _get(self, key: Any, traces: list[Any]) -> Connection | None:
        while True:
            connection = await super()._get(key, traces)
            if connection is None:
                return None
            protocol = connection.protocol
            if protocol is None or not holds_unread_bytes(protocol):
                return connection
            connection.close()  # closes the connection and gives its slot back
