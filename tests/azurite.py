"""A real Azurite queue server for the refund tests (``azurite-queue``, in memory, telemetry off).

Where the binary comes from, in order: ``$AZURITE_QUEUE``; ``azurite-queue`` on ``PATH``; the
cache directory ``$STORE_ASYNC_AZURITE_DIR`` (default ``~/.cache/store_async/azurite``), where it
is installed with ``npm install azurite`` when npm is present. Without npm the tests that need it
are skipped with the reason, except on CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ACCOUNT: Final = "devstoreaccount1"
# Azurite's published development account key (documented by Microsoft; not a secret).
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_VERSION: Final = "3"
_READY: Final = "successfully listens on"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "store_async" / "azurite"
    return Path(os.environ.get("STORE_ASYNC_AZURITE_DIR", default))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Azurite is required on CI: {reason}")
    pytest.skip(f"needs Azurite (a real Azure Storage queue server): {reason}")


def find_azurite() -> str:
    """The ``azurite-queue`` executable, installing it into the cache directory if needed."""
    given = os.environ.get("AZURITE_QUEUE")
    if given:
        return given
    on_path = shutil.which("azurite-queue")
    if on_path:
        return on_path
    cached = cache_dir() / "node_modules" / ".bin" / "azurite-queue"
    if cached.exists():
        return str(cached)
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed, so `npm install azurite` cannot run")
    cache_dir().mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-fund", "--no-audit", "--prefix", str(cache_dir()),
         f"azurite@{AZURITE_VERSION}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0 or not cached.exists():
        _unavailable(f"`npm install azurite` failed: {done.stderr.strip()[-500:]}")
    return str(cached)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Azurite:
    """One running ``azurite-queue`` process on 127.0.0.1."""

    def __init__(self) -> None:
        executable = find_azurite()
        self.port = _free_port()
        self._process = subprocess.Popen(
            [executable, "--queueHost", "127.0.0.1", "--queuePort", str(self.port),
             "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        seen = []
        for line in self._process.stdout:  # ends when the process exits
            seen.append(line)
            if _READY in line:
                break
        else:
            self._process.wait(10)
            raise RuntimeError(f"azurite-queue did not start: {''.join(seen)[-2000:]}")
        # Keep reading what it prints, so a full pipe never blocks the server.
        threading.Thread(target=self._process.stdout.read, daemon=True).start()
        self._queues = 0

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.account_url};"
        )

    def new_queue(self, prefix: str = "refunds") -> str:
        """Create a fresh queue; returns its name."""
        from azure.storage.queue import QueueClient

        self._queues += 1
        name = f"{prefix}-{os.getpid()}-{self._queues}"
        with QueueClient.from_connection_string(self.connection_string, name) as queue:
            queue.create_queue()
        return name

    def sas_uri(
        self, queue: str, *, permission: str = "raup", hours: float = 2.0, bad: bool = False
    ) -> str:
        """A SAS URI for ``queue`` (``bad``: with a signature the server refuses)."""
        from azure.storage.queue import QueueSasPermissions, generate_queue_sas

        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours)
        token = generate_queue_sas(
            ACCOUNT,
            queue,
            ACCOUNT_KEY,
            permission=QueueSasPermissions.from_string(permission),
            expiry=expiry,
        )
        if bad:
            token = token.replace("sig=", "sig=Zm9yZ2Vk")
        return f"{self.account_url}/{queue}?{token}"

    def count(self, queue: str) -> int:
        """Approximate messages in ``queue`` (hidden ones included)."""
        from azure.storage.queue import QueueClient

        with QueueClient.from_connection_string(self.connection_string, queue) as client:
            return int(client.get_queue_properties().approximate_message_count or 0)

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite()
    try:
        yield server
    finally:
        server.close()
