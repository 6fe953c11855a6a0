"""A throw-away PostgreSQL server for the tests: started once per session, on loopback.

The machine's PostgreSQL binaries (``initdb``, ``pg_ctl``) make a cluster in a temporary
directory and serve it on 127.0.0.1 on a free port; ``fsync`` is off (durability across power
loss is PostgreSQL's job, not under test here). PostgreSQL refuses to run as root, so under root
the server runs as the ``postgres`` user. The superuser has a random password and TCP
connections need it (``scram-sha-256``), so the tests exercise the real password path and can
check that it never leaks. Each test gets a fresh database (:func:`postgres_dsn`).

Without the binaries the tests that need them are skipped with the reason, except on CI
(``CI=true``), where they fail: CI must not pass without having run them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

__all__ = ["PostgresServer", "postgres_dsn", "postgres_server"]

_SERVICE_USER = "postgres"


@attrs.frozen
class PostgresServer:
    """Where the test server listens. DSNs carry no password: it travels in ``PGPASSWORD``."""

    host: str
    port: int
    user: str
    password: str
    _databases: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), eq=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        """The environment a client process needs (the password, never on a command line)."""
        return {**os.environ, "PGPASSWORD": self.password}

    def new_database(self) -> str:
        name = f"test_{next(self._databases)}_{secrets.token_hex(3)}"
        _psql(self, f"CREATE DATABASE {name}")
        return name


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed on CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


def _as_service_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", _SERVICE_USER, "--", *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _psql(server: PostgresServer, sql: str) -> None:
    """Run one statement with asyncpg in a fresh loop (the session fixture has no loop)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(
            host=server.host, port=server.port, user=server.user, password=server.password,
            database="postgres",
        )  # fmt: skip
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server for the session; stop it and delete its files at the end."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed (pip install 'store-async[postgres]')")
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("initdb/pg_ctl are not on PATH nor in /usr/lib/postgresql/*/bin")
    assert initdb is not None
    assert pg_ctl is not None
    if os.geteuid() == 0:
        try:
            service = pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            _unavailable(f"running as root and there is no {_SERVICE_USER!r} user to run it as")
    root = Path(tempfile.mkdtemp(prefix="store-async-pg-"))
    data, password_file = root / "data", root / "password"
    password = secrets.token_urlsafe(18)
    password_file.write_text(password)
    if os.geteuid() == 0:
        for path in (root, password_file):
            os.chown(path, service.pw_uid, service.pw_gid)
    os.chmod(password_file, 0o600)
    user = _SERVICE_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    port = _free_port()
    started = False
    try:
        subprocess.run(
            _as_service_user([
                initdb, "-D", str(data), "-U", user, "--pwfile", str(password_file),
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
            ]),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        password_file.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_service_user(
                [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start"]
            ),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        started = True
        yield PostgresServer(host="127.0.0.1", port=port, user=user, password=password)
    except subprocess.CalledProcessError as error:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        _unavailable(f"{error.cmd[0]} failed: {error.stderr or error.stdout}{log[-2000:]}")
    finally:
        if started:
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(
                    _as_service_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                    check=True, capture_output=True,
                )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A DSN (without password) of a new, empty database; ``PGPASSWORD`` is set for the test."""
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    return postgres_server.dsn(postgres_server.new_database())
