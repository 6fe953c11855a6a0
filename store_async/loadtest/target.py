"""The system under test: the embedded emulator in its own process, or any endpoint.

The embedded emulator runs in a **spawned** process, so its handlers never share the
generator's event loop or its CPU time slices with the generator's own work. The generator
talks to it over loopback exactly as to a remote service, and to its control plane
(``/_emulator/...``) to mint Store ID keys and read the ledger for the final audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import urllib.error
import urllib.request
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Final

from store_async.errors import StoreError

__all__ = ["ControlPlane", "EmbeddedEmulator"]

_START_TIMEOUT: Final = 60.0


class ControlPlane:
    """A small synchronous client of an emulator's ``/_emulator/...`` routes."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raise StoreError(
                f"the emulator's control plane answered HTTP {error.code} to {method} {path}"
            ) from None
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or type(error).__name__
            raise StoreError(f"no emulator control plane at {self.url}: {reason}") from None

    def available(self) -> bool:
        """Whether the endpoint has a control plane (it is one of our emulators)."""
        try:
            self._call("GET", "stats")
        except StoreError:
            return False
        return True

    def mint_key(self, user_id: str, kind: str) -> str:
        """A Store ID key the emulator accepts."""
        return str(self._call("POST", "keys", {"userId": user_id, "kind": kind})["key"])

    def ledger(self) -> dict[str, Any]:
        """``{"requests", "applied", "duplicates", ...}``."""
        document = self._call("GET", "ledger")
        if not isinstance(document, dict):
            raise StoreError("the emulator's ledger answer is not a JSON object")
        return document


def _serve(connection: Connection, strict_keys: bool) -> None:  # pragma: no cover - child process
    asyncio.run(_serve_until_told(connection, strict_keys))


async def _serve_until_told(connection: Connection, strict_keys: bool) -> None:  # pragma: no cover
    from store_async.emulator import StoreEmulator

    async with StoreEmulator(auto_create=True, strict_keys=strict_keys) as emulator:
        connection.send((emulator.url, emulator.dev_token))
        told = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(connection.fileno(), told.set)  # "stop", or the parent went away
        await told.wait()
        loop.remove_reader(connection.fileno())


class EmbeddedEmulator:
    """``with EmbeddedEmulator() as (url, token):`` an emulator in a spawned process."""

    def __init__(self, *, strict_keys: bool = True) -> None:
        self._strict_keys = strict_keys
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, strict_keys), name="store-async-emulator", daemon=True
        )
        self._child = child

    def __enter__(self) -> tuple[str, str]:
        self._process.start()
        self._child.close()
        if not self._connection.poll(_START_TIMEOUT):
            self._stop()
            raise StoreError("the embedded emulator did not start within 60 s")
        try:
            url, token = self._connection.recv()
        except EOFError:
            self._stop()
            raise StoreError("the embedded emulator process ended before it started") from None
        return str(url), str(token)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.send("stop")
        self._process.join(10)
        if self._process.is_alive():  # pragma: no cover - a wedged child
            self._process.terminate()
            self._process.join(5)
        self._connection.close()
