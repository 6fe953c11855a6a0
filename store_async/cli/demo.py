"""``store-async demo``: exactly-once under fire, on one machine, in seconds.

Starts the emulator in this process with seeded faults (connections reset, answers lost after
the commit, 500/503/429, slow answers), seeds ``--count`` consumables, and fulfills them all
with the :class:`~store_async.fulfillment.Fulfiller` over the real
:class:`~store_async.StoreClient` and a temporary SQLite journal, ``--concurrency``
workers. Rows whose outcome is unknown when retries end stay pending in the journal; the demo
then runs the fulfiller again over the same input, as an operator would rerun
``store-async fulfill``, and the journal resends them under their original tracking ids. Then it
audits the emulator's ledger:

- **consumed exactly once**: the request's tracking id was applied once and its item is consumed;
- **duplicates**: a tracking id applied more than once;
- **lost**: an item left unconsumed, or a request that ended in a definite error.

It prints retries by failure kind, the faults injected, throughput and p50/p99 latency, and
exits 1 unless exactly-once held for every consumable.

With ``--journal postgresql://...`` the journal is that PostgreSQL database and ``--workers``
fleet workers (:class:`~store_async.fulfillment.fleet.FleetWorker`, each with its own
connection pool and worker id, in this process) share it, leasing users as separate processes
or machines would (the demo's keys carry a random prefix, so the database may hold other rows).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from store_async.cli._arguments import integer, real, user_rate
from store_async.cli._loop import add_loop_option
from store_async.cli._loop import run as run_loop

if TYPE_CHECKING:
    from store_async import StoreClient
    from store_async.emulator import FaultKind, Ledger, StoreEmulator
    from store_async.fulfillment import FailedRow, Fulfillment, FulfillmentReport
    from store_async.instrumentation import AttemptFinished, ClientHooks
    from store_async.models import ConsumeRequest, ConsumeResult

__all__ = ["Audit", "audit", "configure", "run"]

MAX_ROUNDS = 10
"""Fulfiller runs (the first and its reruns) before rows still pending count as lost."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_loop_option(parser)
    parser.add_argument("--count", type=integer(1), default=10_000, help="consumables (10000)")
    parser.add_argument(
        "--fault-rate",
        type=real(0.0, 1.0),
        default=0.1,
        metavar="R",
        help="probability of an injected fault per request (0.1)",
    )
    parser.add_argument("--seed", type=int, default=None, help="fault seed (random when absent)")
    parser.add_argument(
        "--concurrency", type=integer(1), default=64, help="concurrent consumes (64)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: on a terminal)"
    )
    parser.add_argument(
        "--journal",
        metavar="DSN",
        help="postgresql://user@host/db: a PostgreSQL journal shared by --workers fleet "
        "workers (default: a temporary SQLite journal); password in PGPASSWORD",
    )
    parser.add_argument(
        "--workers", type=integer(1), default=2, help="fleet workers with --journal DSN (2)"
    )
    parser.add_argument(
        "--user-limit",
        type=user_rate,
        default=None,
        metavar="OPS/SECONDS",
        help="the emulator limits each user like the Store (e.g. 20/2); default: no limit",
    )
    parser.add_argument(
        "--user-rate",
        type=user_rate,
        default=None,
        metavar="OPS/SECONDS",
        help="the fulfiller paces each user to this rate (e.g. 20/2); default: off",
    )


@dataclass
class Audit:
    """The verdict, from the emulator's ledger (the ground truth) and the client's results."""

    count: int
    exactly_once: int = 0
    duplicates: int = 0
    lost: int = 0
    pending: int = 0
    """Journal rows still unsettled after the last rerun."""
    failed_requests: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.exactly_once == self.count
            and self.duplicates == 0
            and self.lost == 0
            and self.pending == 0
        )


def audit(
    requests: list[ConsumeRequest], failed: set[str], ledger: Ledger, consumed_by: dict[str, str]
) -> Audit:
    """Check every request against the ledger.

    ``failed`` holds the tracking ids whose calls ended in a definite error; ``consumed_by``
    maps each request's tracking id to the key that consumed its item (absent: unconsumed).
    """
    verdict = Audit(count=len(requests))
    verdict.duplicates = len(ledger.duplicates())
    for request in requests:
        key = request.idempotency_key
        applied = ledger.applied(key)
        if key in failed or consumed_by.get(key) != key or applied == 0:
            verdict.lost += 1
            verdict.failed_requests.append(key)
        elif applied == 1:
            verdict.exactly_once += 1
    return verdict


@dataclass
class _Run:
    """What the client saw."""

    latencies: list[float] = field(default_factory=list)
    attempts: int = 0
    failed_attempts: Counter[str] = field(default_factory=Counter)
    resubmitted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    throttled: int = 0
    """429s the fulfiller saw (per-user pacing parks the user and resends later)."""
    users_parked: int = 0

    def record(self, event: AttemptFinished) -> None:
        """Client hook: one attempt ended."""
        self.attempts += 1
        if event.error is not None:
            kind = event.error.kind.value
            cause = f"HTTP {event.status}" if event.status else type(event.error).__name__
            self.failed_attempts[f"{kind} ({cause})"] += 1


class _TimedClient:
    """Wraps the client for the fulfiller, recording each consume call's latency."""

    def __init__(self, store: StoreClient, run: _Run, update: Callable[[int], object]) -> None:
        self._store = store
        self._run = run
        self._update = update

    async def consume(self, request: ConsumeRequest) -> ConsumeResult:
        started = time.perf_counter()
        try:
            result = await self._store.consume(request)
        finally:
            self._run.latencies.append(time.perf_counter() - started)
        self._update(1)
        return result


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from tqdm import tqdm

    from store_async import StoreClient
    from store_async.emulator import FaultPlan, StoreEmulator
    from store_async.fulfillment import Fulfillment
    from store_async.instrumentation import ClientHooks
    from store_async.models import ConsumeRequest, UserIdentity

    plan = FaultPlan(rate=args.fault_rate, seed=args.seed, retry_after=0.0, slow_seconds=0.05)
    run = _Run()
    limit = args.user_limit
    user_limit = (limit.ops, limit.seconds) if limit is not None else None
    async with StoreEmulator(faults=plan, user_limit=user_limit) as emulator:
        users = max(1, min(1000, args.count // 10))
        requests, items = [], {}
        for number in range(args.count):
            user = f"demo-user-{number % users}"
            item = emulator.add_consumable(user, f"demo-gems-{number % 5}")
            beneficiary = UserIdentity(identity_value=user, local_ticket_reference=user)
            request = ConsumeRequest.for_item(beneficiary, item.item_id)
            requests.append(request)
            items[request.idempotency_key] = item
        print(
            f"store-async demo: {args.count} consumables for {users} users, fault rate "
            f"{args.fault_rate:.0%}, seed {emulator.fault_seed}, concurrency {args.concurrency}",
            file=out,
        )
        out.flush()
        hooks = ClientHooks(on_attempt_end=run.record)
        # disable=None: a bar on a terminal only, so logs and pipes stay clean.
        progress = tqdm(
            total=args.count,
            unit=" consumes",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=True if args.no_progress or args.quiet else None,
        )
        started = time.perf_counter()
        prefix = f"demo-{uuid.uuid4().hex[:8]}" if args.journal else "demo"
        work = [
            Fulfillment.of(request, key=f"{prefix}-order-{n}") for n, request in enumerate(requests)
        ]
        if args.journal:
            async with StoreClient(
                emulator.credential(), endpoints=emulator.endpoints, hooks=hooks
            ) as store:
                timed = _TimedClient(store, run, progress.update)
                report, pending = await _fleet_rounds(args, timed, work, run)
        else:
            report, pending = await _sqlite_rounds(args, emulator, hooks, progress, work, run)
        elapsed = time.perf_counter() - started
        progress.close()
        run.failed = {row.idempotency_key: str(row.failure) for row in report.failures}
        failed = set(run.failed)
        consumed_by = {key: item.consumed_by for key, item in items.items() if item.consumed_by}
        verdict = audit(requests, failed, emulator.ledger, consumed_by)
        verdict.pending = pending
        faults = emulator.stats.faults_by_kind("consume")
    _report(out, verdict, run, faults, elapsed)
    return 0 if verdict.ok else 1


async def _fleet_rounds(
    args: argparse.Namespace, timed: _TimedClient, work: list[Fulfillment], run: _Run
) -> tuple[FulfillmentReport, int]:
    """``--workers`` fleet workers on one PostgreSQL journal, rerun while rows are pending."""
    from store_async.fulfillment.fleet import FleetWorker
    from store_async.fulfillment.postgres_journal import PostgresJournal

    failures: list[FailedRow] = []
    pending = 0
    for round_number in range(MAX_ROUNDS):
        journals = [
            PostgresJournal(args.journal, worker_id=f"demo-worker-{n + 1}", retry_after=0.0)
            for n in range(args.workers)
        ]
        try:
            for journal in journals:
                await journal.open()
            reports = await asyncio.gather(
                *(
                    FleetWorker(timed, journal, concurrency=args.concurrency, poll=0.05).run(work)
                    for journal in journals
                )
            )
        finally:
            for journal in journals:
                await journal.close()
        if round_number:
            run.resubmitted += sum(r.report.done + r.report.failed for r in reports)
        failures = [row for r in reports for row in r.report.failures]
        pending = reports[-1].journal["pending"]
        if not pending:
            break
    report = reports[-1].report
    return attrs.evolve(report, failures=tuple(failures)), pending


async def _sqlite_rounds(
    args: argparse.Namespace,
    emulator: StoreEmulator,
    hooks: ClientHooks,
    progress: Any,
    work: list[Fulfillment],
    run: _Run,
) -> tuple[FulfillmentReport, int]:
    from store_async import StoreClient
    from store_async.fulfillment import Fulfiller, SqliteJournal

    with tempfile.TemporaryDirectory(prefix="store-async-demo-") as folder:
        async with (
            StoreClient(emulator.credential(), endpoints=emulator.endpoints, hooks=hooks) as store,
            SqliteJournal(Path(folder) / "demo.journal") as journal,
        ):
            timed = _TimedClient(store, run, progress.update)
            for round_number in range(MAX_ROUNDS):
                fulfiller = Fulfiller(
                    timed, journal, concurrency=args.concurrency, user_rate=args.user_rate
                )
                report = await fulfiller.run(work)
                run.throttled += report.throttled
                run.users_parked += report.users_parked
                if round_number:
                    run.resubmitted += report.done + report.failed
                if not report.pending:
                    break
    return report, report.pending


def _report(
    out: TextIO, verdict: Audit, run: _Run, faults: Counter[FaultKind], elapsed: float
) -> None:
    retries = run.attempts - len(run.latencies)
    failed_attempts = ", ".join(f"{name} {n}" for name, n in sorted(run.failed_attempts.items()))
    injected = ", ".join(
        f"{kind.value} {n}" for kind, n in sorted(faults.items(), key=lambda pair: pair[0].value)
    )
    lines = [
        f"consumed exactly once: {verdict.exactly_once} / {verdict.count}",
        f"duplicates:            {verdict.duplicates}",
        f"lost:                  {verdict.lost}",
        f"still pending:         {verdict.pending}",
        f"attempts:              {run.attempts} ({retries} retries, "
        f"{run.resubmitted} resent from the journal after an unknown outcome)",
        f"failed attempts:       {failed_attempts or 'none'}",
        f"faults injected:       {injected or 'none'}",
        f"pacing:                users parked {run.users_parked} times, "
        f"{run.throttled} answers 429 seen by the fulfiller",
        f"throughput:            {verdict.count / elapsed:,.0f} consumes/s ({elapsed:.1f} s)",
        f"latency:               p50 {_percentile(run.latencies, 0.50) * 1000:.1f} ms, "
        f"p99 {_percentile(run.latencies, 0.99) * 1000:.1f} ms",
    ]
    for key in verdict.failed_requests[:5]:
        lines.append(f"  lost: tracking id {key}: {run.failed.get(key, 'never settled')}")
    lines.append("exactly-once: OK" if verdict.ok else "exactly-once: FAILED")
    print("\n".join(lines), file=out)


def run(args: argparse.Namespace) -> int:
    return run_loop(_demo(args, sys.stdout), args.loop)
