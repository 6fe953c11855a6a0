"""A whole load test: target, users, generator processes, progress, audit, report."""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Final, TextIO

from store_async.errors import StoreError, ValidationError
from store_async.loadtest.generator import GeneratorSpec, run_generator
from store_async.loadtest.operations import OPERATIONS, Mix
from store_async.loadtest.progress import Progress
from store_async.loadtest.recorder import Recorder
from store_async.loadtest.report import build_report
from store_async.loadtest.schedule import Schedule, Stage
from store_async.loadtest.target import ControlPlane, EmbeddedEmulator

__all__ = ["LoadTest", "run_load_test"]

_START_LEAD: Final = 0.5
"""Seconds between telling the generators the start time and the start itself."""


@dataclass(frozen=True, kw_only=True)
class LoadTest:
    """What to run. See ``docs/guides/load-testing.md``.

    :param rate: calls per second (the constant part of the schedule).
    :param duration: seconds at ``rate``; ``stages`` ramp on from there.
    :param operations: operation name -> weight (``{"consume": 1}`` by default).
    :param endpoint: base URL of the service; ``None``: an embedded emulator in its own process.
    :param token: bearer access token for ``endpoint`` (else azure-identity's default credential).
    :param users: simulated users (Store ID keys minted by the emulator when it is the target).
    :param keys: ``(collections key, purchase key or None)`` per user, for a real endpoint.
    :param processes: generator processes, each with its own loop and client.
    :param in_flight_cap: calls in flight at most per process; a start that waits for it is late.
    :param late_ms: a call starting later than this after its scheduled instant is a late start.
    :param connections: pooled connections per process (0: up to the in-flight cap).
    """

    rate: float
    duration: float
    stages: tuple[Stage, ...] = ()
    operations: dict[str, float] = field(default_factory=lambda: {"consume": 1.0})
    endpoint: str | None = None
    token: str | None = None
    users: int = 100
    keys: tuple[tuple[str, str | None], ...] = ()
    processes: int = 1
    in_flight_cap: int = 10_000
    late_ms: float = 10.0
    connections: int = 0
    seed: int = 0
    drain_seconds: float = 60.0

    def check(self) -> Schedule:
        """The schedule; ``ValidationError`` for any bad setting."""
        schedule = Schedule(self.rate, self.duration, self.stages)
        Mix(self.operations)
        for name, value, low in (
            ("users", self.users, 1),
            ("processes", self.processes, 1),
            ("in_flight_cap", self.in_flight_cap, 1),
            ("connections", self.connections, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValidationError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (math.isfinite(self.late_ms) and self.late_ms >= 0):
            raise ValidationError(f"late_ms must be >= 0, got {self.late_ms}")
        return schedule


def _users(test: LoadTest, control: ControlPlane | None) -> tuple[tuple[str, str | None, str], ...]:
    kinds = Mix(test.operations).key_kinds()
    if test.keys:
        if "purchase" in kinds and any(purchase is None for _, purchase in test.keys):
            raise ValidationError("grant needs a purchase key for every user in the key file")
        return tuple(
            (key, purchase, f"loadtest-user-{n}") for n, (key, purchase) in enumerate(test.keys)
        )
    users = []
    for number in range(test.users):
        user_id = f"loadtest-user-{number}"
        if control is None:  # an opaque user id: accepted by a non-strict emulator or a stub
            users.append((user_id, user_id if "purchase" in kinds else None, user_id))
            continue
        collections = control.mint_key(user_id, "collections")
        purchase = control.mint_key(user_id, "purchase") if "purchase" in kinds else None
        users.append((collections, purchase, user_id))
    return tuple(users)


def _targets_by_second(schedule: Schedule) -> dict[int, float]:
    """Scheduled calls in each second of the run."""
    return {
        second: float(schedule.count_before(second + 1) - schedule.count_before(second))
        for second in range(math.ceil(schedule.duration))
    }


def quiet_library_logs() -> None:
    """Keep the client's log records off stderr unless the application configured logging.

    Without a handler, Python's last-resort handler would print every WARNING record (one per
    unsettled call) over the progress line and the summary.
    """
    logger = logging.getLogger("store_async")
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(logging.NullHandler())


def _worker(connection: Connection, spec: GeneratorSpec) -> None:  # pragma: no cover - child
    quiet_library_logs()
    try:
        connection.send(("ready", None))
        start_at = connection.recv()
        recorder = asyncio.run(
            run_generator(
                spec, start_at=start_at, on_second=lambda s: connection.send(("second", s))
            )
        )
        connection.send(("part", recorder.to_part()))
    except KeyboardInterrupt:
        pass
    except BaseException as error:  # report it; StoreError messages carry no secret
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def _run_processes(
    specs: Sequence[GeneratorSpec], progress: Progress, stack: ExitStack
) -> tuple[Recorder, float]:
    context = multiprocessing.get_context("spawn")
    connections: list[Connection] = []
    processes = []
    for spec in specs:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker, args=(child, spec), name=f"store-async-loadtest-{spec.index}"
        )
        process.start()
        child.close()
        connections.append(parent)
        processes.append(process)

    def stop_all() -> None:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)

    stack.callback(stop_all)
    for connection in connections:  # every process imported everything and built its client
        message = connection.recv() if connection.poll(120) else ("error", "did not start")
        if message[0] != "ready":
            raise StoreError(f"a generator process failed to start: {message[1]}")
    start_at = time.time() + _START_LEAD
    for connection in connections:
        connection.send(start_at)
    merged = Recorder()
    open_connections = set(connections)
    while open_connections:
        for ready in wait(list(open_connections)):
            assert isinstance(ready, Connection)
            try:
                kind, payload = ready.recv()
            except EOFError:
                open_connections.discard(ready)
                continue
            if kind == "second":
                progress.update(payload)
            elif kind == "part":
                merged.merge(Recorder.from_part(payload))
                open_connections.discard(ready)
            else:
                raise StoreError(f"a generator process failed: {payload}")
    if len(open_connections) == 0 and merged.counters["calls"] == 0 and specs:
        raise StoreError("the generator processes ended without a report")
    return merged, start_at


def run_load_test(
    test: LoadTest,
    *,
    progress_stream: TextIO | None = None,
    credential_factory: Callable[[], Any] | None = None,
    on_target: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``test`` to the end and return its report (see :mod:`store_async.loadtest.report`).

    :param progress_stream: where live progress goes (a terminal); ``None``: nowhere.
    :param credential_factory: makes an azure-identity credential for ``endpoint`` when there
        is no token, in each generator process (``DefaultAzureCredential``, the class).
    :param on_target: told the target's base URL once it is known.
    :raises ValidationError: a bad setting.
    :raises StoreError: the target or a generator process failed.
    """
    schedule = test.check()
    with ExitStack() as stack:
        if test.endpoint is None:
            url, token = stack.enter_context(EmbeddedEmulator(strict_keys=True))
            control: ControlPlane | None = ControlPlane(url)
            target = "embedded emulator"
        else:
            url, token = test.endpoint, test.token  # type: ignore[assignment]
            control = ControlPlane(url)
            if not control.available():
                control = None
            target = url
            if token is None and credential_factory is None:
                raise ValidationError("a target endpoint needs a token or a credential factory")
        if on_target is not None:
            on_target(url)
        users = _users(test, control)
        ledger_before = control.ledger() if control is not None else None
        tag = f"{os.getpid()}-{int(time.time() * 1000)}"
        specs = [
            GeneratorSpec(
                url=url,
                token=token,
                users=users,
                operations=dict(test.operations),
                rate=test.rate,
                duration=test.duration,
                stages=tuple((stage.duration, stage.rate) for stage in test.stages),
                index=index,
                processes=test.processes,
                in_flight_cap=test.in_flight_cap,
                late_seconds=test.late_ms / 1000,
                connections=test.connections,
                seed=test.seed,
                tag=tag,
                drain_seconds=test.drain_seconds,
                credential_factory=credential_factory,
            )
            for index in range(test.processes)
        ]
        progress = Progress(progress_stream, schedule, processes=test.processes)
        if test.processes == 1:
            start_at = time.time() + _START_LEAD
            recorder = asyncio.run(
                run_generator(specs[0], start_at=start_at, on_second=progress.update)
            )
        else:
            recorder, start_at = _run_processes(specs, progress, stack)
        progress.close()
        audit = None
        if control is not None and ledger_before is not None:
            audit = _audit(recorder, ledger_before, control.ledger(), test)
    return build_report(
        recorder,
        target_rate=schedule.mean_rate,
        duration_s=schedule.duration,
        targets_by_second=_targets_by_second(schedule),
        started_at=start_at,
        processes=test.processes,
        operations=test.operations,
        audit=audit,
        target=target,
    )


def _audit(
    recorder: Recorder, before: dict[str, Any], after: dict[str, Any], test: LoadTest
) -> dict[str, Any]:
    """Successful writes against the ledger: each one applied once, nothing applied twice."""
    writes = {name for name in test.operations if OPERATIONS[name].writes}
    successful = sum(
        histogram.get_total_count()
        for key, histogram in recorder.overall.items()
        if key.endswith("|ok") and key.partition("|")[0] in writes
    )
    applied = int(after.get("applied", 0)) - int(before.get("applied", 0))
    duplicates = after.get("duplicates", {})
    return {
        "successful_writes": successful,
        "applied": applied,
        "duplicates": len(duplicates) if isinstance(duplicates, dict) else duplicates,
        "requests": int(after.get("requests", 0)) - int(before.get("requests", 0)),
        "ok": applied == successful and not duplicates,
    }


def main_stream() -> TextIO | None:
    """Standard error when it is a terminal (live progress), else ``None``."""
    return sys.stderr if sys.stderr.isatty() else None
