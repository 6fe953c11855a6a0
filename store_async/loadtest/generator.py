"""One generator process: start calls on schedule, never waiting for answers (the open model).

The dispatcher sleeps until a call's scheduled instant and starts it as a task; it never waits
for an answer, so a stalled server sees the load keep arriving, as real users would send it. A
call's latency is measured from its **scheduled** instant, not from when the loop got round to
starting it, so a late loop or a full in-flight cap shows up in the latencies (no coordinated
omission). Calls in flight are bounded only by a large cap; a start that waited for the cap or
for a late loop by more than ``late_seconds`` is counted in ``late_starts``, never skipped.

Beside the latencies: attempts, 429 answers and the seconds slept honouring ``Retry-After``
(from the client's hooks and its ``sleep``), access-token requests (a counting credential),
process CPU seconds, and event-loop lag (a 10 ms ticker).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from store_async import (
    AttemptFinished,
    ClientHooks,
    Endpoints,
    QueryRequest,
    RetryPolicy,
    StaticTokenCredential,
    StoreClient,
    UserIdentity,
)
from store_async.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResponseFormatError,
    ServiceUnavailableError,
    StoreError,
    ThrottledError,
    TransportError,
)
from store_async.loadtest.operations import LoadUser, Mix
from store_async.loadtest.recorder import Recorder, new_histogram
from store_async.loadtest.schedule import Schedule, Stage

__all__ = ["GeneratorSpec", "outcome_class", "run_generator"]

LOOP_TICK: Final = 0.01
"""The loop-lag ticker's period (seconds)."""

# Most specific first: OutcomeUnknownError before the classes it may wrap.
_OUTCOMES: Final[tuple[tuple[type[StoreError], str], ...]] = (
    (OutcomeUnknownError, "outcome_unknown"),
    (ThrottledError, "throttled"),
    (ServiceUnavailableError, "unavailable"),
    (RequestTimeoutError, "timeout"),
    (TransportError, "transport"),
    (ConflictError, "conflict"),
    (NotFoundError, "not_found"),
    (AuthenticationError, "auth"),
    (InvalidRequestError, "invalid"),
    (ResponseFormatError, "bad_response"),
)


def outcome_class(error: BaseException | None) -> str:
    """The outcome class of a call: ``ok``, ``throttled``, ``outcome_unknown``..."""
    if error is None:
        return "ok"
    for cls, name in _OUTCOMES:
        if isinstance(error, cls):
            return name
    return "error"


@dataclass(frozen=True, kw_only=True)
class GeneratorSpec:
    """Everything one generator process needs (picklable: it crosses to spawned processes)."""

    url: str
    token: str | None = field(repr=False)  # secrets stay out of reprs and tracebacks
    users: tuple[tuple[str, str | None, str], ...] = field(repr=False)
    """``(collections key or user id, purchase key, local ticket reference)`` per user."""
    operations: dict[str, float]
    rate: float
    duration: float
    stages: tuple[tuple[float, float], ...] = ()
    index: int = 0
    processes: int = 1
    in_flight_cap: int = 10_000
    late_seconds: float = 0.010
    connections: int = 0
    """Pooled connections at most (0: as many as calls in flight)."""
    seed: int = 0
    tag: str = "run"
    drain_seconds: float = 60.0
    credential_factory: Callable[[], Any] | None = None
    """Makes the azure-identity credential in the generator's own loop when there is no token
    (a class such as ``DefaultAzureCredential``: picklable, so it reaches spawned processes)."""

    def schedule(self) -> Schedule:
        return Schedule(self.rate, self.duration, [Stage(d, r) for d, r in self.stages])


class _CountingCredential:
    """Wraps a credential to count access-token requests (one per cache refresh)."""

    def __init__(self, inner: Any, counters: dict[str, float]) -> None:
        self._inner = inner
        self._counters = counters

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self._counters["token_requests"] += 1
        return await self._inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> _CountingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_last_status: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "store_async_loadtest_last_status", default=None
)


async def run_generator(
    spec: GeneratorSpec,
    *,
    start_at: float,
    on_second: Callable[[dict[str, Any]], None] | None = None,
) -> Recorder:
    """Run one generator's share of the schedule; returns what it measured.

    :param start_at: the run's start as ``time.time()`` (shared by every process).
    :param on_second: called once a second with a small progress snapshot.
    :raises StoreError: neither a token nor a credential factory was given.
    """
    recorder = Recorder()
    counters = recorder.counters
    schedule = spec.schedule()
    users = [
        LoadUser(UserIdentity(identity_value=key, local_ticket_reference=ref), purchase)
        for key, purchase, ref in spec.users
    ]
    mix = Mix(spec.operations, seed=spec.seed * 1_000_003 + spec.index)
    if spec.token is not None:
        credential: Any = StaticTokenCredential(spec.token)
    elif spec.credential_factory is not None:
        credential = spec.credential_factory()
    else:
        raise StoreError("a token or a credential factory is needed")
    counting = _CountingCredential(credential, counters)

    def attempt_ended(event: AttemptFinished) -> None:
        counters["attempts"] += 1
        _last_status.set(event.status)
        if event.status == 429:
            counters["throttled_429"] += 1

    async def sleep(seconds: float) -> None:
        # Between attempts: after a 429 this is time honouring Retry-After, else backoff.
        if _last_status.get() == 429:
            counters["retry_after_s"] += seconds
        else:
            counters["backoff_s"] += seconds
        await asyncio.sleep(seconds)

    cap = spec.in_flight_cap
    connections = spec.connections or cap
    client = StoreClient(
        counting,  # any AsyncTokenCredential-shaped object
        endpoints=Endpoints.single(spec.url),
        retry=RetryPolicy(),
        limit=connections,
        hooks=ClientHooks(on_attempt_end=attempt_ended),
        sleep=sleep,
    )
    loop = asyncio.get_running_loop()
    late_seconds = spec.late_seconds
    state = {"in_flight": 0, "done": 0, "errors": 0}
    slot_free = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    tag_prefix = f"{spec.tag}-{spec.index}"

    async def one_call(number: int, offset: float, due: float) -> None:
        started = loop.time()
        operation = mix.pick()
        user = users[number % len(users)]
        error: BaseException | None = None
        try:
            await operation.call(client, user, f"{tag_prefix}-{number}")
        except StoreError as failure:
            error = failure
        except asyncio.CancelledError:
            recorder.record(f"{operation.name}|cancelled", offset, started - due, loop.time() - due)
            counters["drain_cancelled"] += 1
            raise
        finally:
            state["in_flight"] -= 1
            slot_free.set()
        outcome = outcome_class(error)
        if error is not None:
            state["errors"] += 1
        state["done"] += 1
        recorder.record(f"{operation.name}|{outcome}", offset, started - due, loop.time() - due)

    async def tick_loop(stop: asyncio.Event) -> None:
        expected = loop.time() + LOOP_TICK
        lag = recorder.loop_lag
        while not stop.is_set():
            await asyncio.sleep(LOOP_TICK)
            now = loop.time()
            lag.record_value(max(1, int((now - expected) * 1e6)))
            expected = now + LOOP_TICK

    async def report_seconds(stop: asyncio.Event, t0: float) -> None:
        cpu_before, second = time.process_time(), 0
        window = new_histogram(2)
        while not stop.is_set():
            second += 1
            delay = t0 + second - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            cpu_now = time.process_time()
            if on_second is not None:
                window.reset()
                for key, histogram in recorder.seconds.get(second - 1, {}).items():
                    if key.endswith("|ok"):
                        window.add(histogram)
                on_second(
                    {
                        "index": spec.index,
                        "second": second,
                        "started": counters["calls"],
                        "done": state["done"],
                        "errors": state["errors"],
                        "in_flight": state["in_flight"],
                        "late_starts": counters["late_starts"],
                        "p99_ms": window.get_value_at_percentile(99) / 1000,
                        "cpu": cpu_now - cpu_before,
                    }
                )
            cpu_before = cpu_now

    stop = asyncio.Event()
    async with client:
        # Warm up before the clock starts: an access token, one pooled connection and the
        # client's first-call paths. A query, so the ledger audit sees no extra write.
        counters["warmup_calls"] = 1
        # A target that does not serve queries still warmed the token and the connection.
        with contextlib.suppress(StoreError):
            await client.query_products(
                QueryRequest(beneficiaries=(users[0].identity,), product_types=("Durable",)),
                attempts=1,
            )
        counters["attempts"] = counters["throttled_429"] = 0  # count the run's calls only
        # Share one wall-clock start across processes, then keep to the monotonic loop clock.
        t0 = loop.time() + (start_at - time.time())
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        cpu_start = time.process_time()
        helpers = [
            loop.create_task(tick_loop(stop)),
            loop.create_task(report_seconds(stop, t0)),
        ]
        time_of = schedule.time_of
        for number in range(spec.index, schedule.count, spec.processes):
            offset = time_of(number)
            due = t0 + offset
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while state["in_flight"] >= cap:
                slot_free.clear()
                await slot_free.wait()
            if loop.time() - due > late_seconds:
                counters["late_starts"] += 1
                recorder.late_by_second[int(offset)] += 1
            state["in_flight"] += 1
            counters["calls"] += 1
            if state["in_flight"] > counters["max_in_flight"]:
                counters["max_in_flight"] = state["in_flight"]
            task = loop.create_task(one_call(number, offset, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        counters["dispatch_s"] = loop.time() - t0
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=spec.drain_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        counters["cpu_s"] = time.process_time() - cpu_start
        counters["wall_s"] = loop.time() - t0
        stop.set()
        await asyncio.gather(*helpers)
    await credential.close()  # the client never closes a credential it did not create
    return recorder
