"""``FleetWorker``: one of many processes that share a PostgreSQL journal, exactly once.

Every worker runs the same loop, on any number of machines::

    input ──load (batches, idempotent by caller key)──▶ PostgreSQL journal
                                                            │ lease users (SKIP LOCKED)
    heartbeat ──renew leases──▶                             ▼
                               bounded queue ◀── leased rows
                                    │
                              N senders ──consume──▶ Store
                                    └──done / failed / unknown (+ release)──▶ journal

Loading and working overlap: rows are worked as soon as any process has loaded them. A worker
ends when its input is loaded and no row in the journal is workable (pending and not parked,
whether leased by someone or not), so every process of a fleet ends together, once all is
settled.

Safety does not depend on the leases: every row keeps the idempotency key it was loaded with,
so a row sent by two workers (one paused past its lease, say) is applied once by the Store.
The leases keep the work apart (one user's rows on one worker: no two workers race on one
balance) and stop a worker that lost its lease from recording anything: its marks are refused
by the journal, and it sends none of the rows it had queued under that lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import attrs

from store_async.errors import (
    AuthenticationError,
    FailureKind,
    OutcomeUnknownError,
    StoreError,
    ValidationError,
)
from store_async.fulfillment.fulfiller import ConsumeClient, Item
from store_async.fulfillment.journal import ClaimOutcome, FailureInfo, Fulfillment
from store_async.fulfillment.postgres_journal import Lease, LeasedRow, PostgresJournal
from store_async.fulfillment.report import (
    ExitCode,
    FailedRow,
    FulfillmentReport,
    FulfillmentStats,
)
from store_async.fulfillment.source import LineError
from store_async.models import ConsumeRequest, ConsumeResult

__all__ = ["FleetReport", "FleetStats", "FleetWorker"]


@attrs.define(kw_only=True)
class FleetStats(FulfillmentStats):
    """:class:`FulfillmentStats` plus the fleet's own counters."""

    loaded: int = 0
    """Lines this worker journaled first."""
    present: int = 0
    """Lines already journaled and pending (loaded by another worker, or left by a run)."""
    leases: int = 0
    """Users leased."""
    lost: int = 0
    """Leased rows not sent or not recorded because the lease was lost (another worker took
    the user after the lease expired)."""


@attrs.frozen(kw_only=True)
class FleetReport:
    """What one worker did, and where the whole journal stands when it ends."""

    worker_id: str
    report: FulfillmentReport
    """This worker's counts: ``done``/``failed`` are the rows it settled, ``already_*``,
    ``duplicates`` and ``rejected`` come from its loading; ``pending`` is the journal's."""
    journal: dict[str, int]
    """The journal's rows per state at the end (``pending``, ``done``, ``failed``, ``leased``,
    ``parked``)."""
    loaded: int
    present: int
    leases: int
    lost: int

    @property
    def exit_code(self) -> ExitCode:
        """``PENDING`` (3) if the journal still has pending rows or this worker was stopped;
        else ``FAILED`` (2) if the journal has failed rows or this worker rejected lines; else
        ``ALL_DONE`` (0): every row of the journal is done."""
        if self.journal.get("pending", 0) or not self.report.complete:
            return ExitCode.PENDING
        if self.journal.get("failed", 0) or self.report.rejected:
            return ExitCode.FAILED
        return ExitCode.ALL_DONE

    def to_dict(self) -> dict[str, Any]:
        document = self.report.to_dict()
        document["exitCode"] = int(self.exit_code)
        document["workerId"] = self.worker_id
        document["journal"] = dict(self.journal)
        document["fleet"] = {
            "loaded": self.loaded,
            "present": self.present,
            "leases": self.leases,
            "lost": self.lost,
        }
        return document

    def summary(self) -> str:
        report, journal = self.report, self.journal
        lines = [
            f"worker {self.worker_id}: loaded {self.loaded} lines ({self.present} already "
            f"pending, {report.already_done} already done, {report.already_failed} already "
            f"failed, {report.duplicates} duplicate, {report.rejected} rejected); settled "
            f"{report.done} done and {report.failed} failed under {self.leases} leases "
            f"({self.lost} rows given up with lost leases), in {report.elapsed:.1f}s",
            f"journal: {journal.get('done', 0)} done, {journal.get('failed', 0)} failed, "
            f"{journal.get('pending', 0)} pending ({journal.get('parked', 0)} parked after "
            f"repeated unknown outcomes, {journal.get('leased', 0)} leased)",
        ]
        if report.stop_reason:
            lines.append(f"stopped early: {report.stop_reason}")
        if journal.get("pending", 0) or not report.complete:
            lines.append("some fulfillments are not settled: run the same command again")
        return "\n".join(lines)


@attrs.define
class _Held:
    """A lease this worker holds: rows not yet settled, and until when it is surely valid."""

    user_id: int
    token: int
    remaining: int
    valid_until: float  # monotonic; conservative (measured from before the statement ran)
    lost: bool = False


class FleetWorker:
    """Load ``items`` into ``journal`` and work leases until the journal has no workable row.

    :param client: sends the consumes (a :class:`store_async.StoreClient`).
    :param journal: an open :class:`PostgresJournal`; its ``worker_id`` names this worker.
    :param concurrency: consume calls in flight at most.
    :param lease_seconds: how long a lease lasts without a heartbeat (renewed every third).
    :param grace: seconds in-flight calls get after :meth:`stop`.
    :param retry_failed: loading revives failed rows of the input (same idempotency keys).
    :param max_tries: unknown outcomes in a row after which a row is parked (left pending for
        a later run).
    :param poll: seconds between looks at the journal while other workers hold the work.
    :param load_batch: lines per loading transaction.
    :param on_rejected: called with each rejected line as it happens.
    :param max_listed: failures and rejections the report lists (counts are exact).
    :param auth_failure_limit: stop after this many authentication failures in a row.
    """

    def __init__(
        self,
        client: ConsumeClient,
        journal: PostgresJournal,
        *,
        concurrency: int = 64,
        lease_seconds: float = 30.0,
        grace: float = 30.0,
        retry_failed: bool = False,
        max_tries: int = 5,
        poll: float = 0.5,
        load_batch: int = 1000,
        on_rejected: Callable[[LineError], None] | None = None,
        max_listed: int = 1000,
        auth_failure_limit: int = 100,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if not lease_seconds > 0:
            raise ValidationError(f"lease_seconds must be > 0, not {lease_seconds!r}")
        if not isinstance(max_tries, int) or max_tries < 1:
            raise ValidationError(f"max_tries must be an int >= 1, not {max_tries!r}")
        self._client = client
        self._journal = journal
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds
        self._grace = grace
        self._retry_failed = retry_failed
        self._max_tries = max_tries
        self._poll = poll
        self._load_batch = load_batch
        self._on_rejected = on_rejected
        self._max_listed = max_listed
        self._auth_failure_limit = auth_failure_limit
        self.stats = FleetStats()
        self._failures: list[FailedRow] = []
        self._rejections: list[LineError] = []
        self._stop_reason: str | None = None
        self._auth_failures_in_a_row = 0
        self._held: dict[tuple[int, int], _Held] = {}  # by (user id, lease token)
        self._queue: asyncio.Queue[LeasedRow | None] = asyncio.Queue()
        self._marks: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        self._releases: list[tuple[int, int]] = []
        self._wake = asyncio.Event()  # wakes the lease loop: rows settled, lines loaded
        self._record_soon = asyncio.Event()
        self._finished = asyncio.Event()
        self._loaded = False
        self._rows_per_user = 32.0  # a running estimate, to size leases
        self._senders: list[asyncio.Task[None]] = []
        self._grace_timer: asyncio.TimerHandle | None = None
        self._running = False

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def stop(self, reason: str = "stopped on request") -> None:
        """Take no new work; give in-flight calls ``grace`` seconds, then cancel them (a second
        call cancels them at once). Their rows stay pending; the leases are released."""
        if not self._running:
            return
        if self._stop_reason is not None:
            self._cancel_senders()
            return
        self._begin_stop(reason)

    def _begin_stop(self, reason: str) -> None:
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        self._wake.set()
        for _ in self._senders:
            self._queue.put_nowait(None)
        self._grace_timer = asyncio.get_running_loop().call_later(self._grace, self._cancel_senders)

    def _cancel_senders(self) -> None:
        for task in self._senders:
            task.cancel()

    # -- the run ------------------------------------------------------------------------------

    async def run(self, items: AsyncIterable[Item] | Iterable[Item] = ()) -> FleetReport:
        """Load ``items`` (may be empty: a worker that only works) and work until the journal
        has no workable row, or :meth:`stop`.

        :raises JournalError: the journal failed (rows stay safe to resend).
        """
        if self._running:
            raise RuntimeError("this FleetWorker is already running")
        self._running = True
        started = time.monotonic()
        journal = self._journal
        try:
            await journal.begin_run(retry_failed=self._retry_failed)
            try:
                async with asyncio.TaskGroup() as group:
                    self._senders = [
                        group.create_task(self._send_rows()) for _ in range(self._concurrency)
                    ]
                    group.create_task(self._load(items))
                    group.create_task(self._lease_loop())
                    group.create_task(self._heartbeat())
                    group.create_task(self._record_loop())
                    await asyncio.gather(*self._senders, return_exceptions=True)
                    self._finished.set()
            except BaseExceptionGroup as errors:
                if len(errors.exceptions) == 1:
                    raise errors.exceptions[0] from None
                raise
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            # Whatever happened: record what is known and give the leases back at once.
            self._releases.extend((held.user_id, held.token) for held in self._held.values())
            self._held.clear()
            with contextlib.suppress(StoreError):
                await self._record()
            self._running = False
        counts = await journal.counts()
        stats = self.stats
        report = FulfillmentReport(
            done=stats.done,
            already_done=stats.already_done,
            failed=stats.failed,
            already_failed=stats.already_failed,
            pending=counts["pending"],
            duplicates=stats.duplicates,
            rejected=stats.rejected,
            complete=not self.stopping,
            stop_reason=self._stop_reason,
            elapsed=time.monotonic() - started,
            failures=tuple(sorted(self._failures, key=lambda row: row.line or 0)),
            rejections=tuple(sorted(self._rejections, key=lambda error: error.line or 0)),
        )
        return FleetReport(
            worker_id=journal.worker_id,
            report=report,
            journal=counts,
            loaded=stats.loaded,
            present=stats.present,
            leases=stats.leases,
            lost=stats.lost,
        )

    # -- loading ------------------------------------------------------------------------------

    async def _load(self, items: AsyncIterable[Item] | Iterable[Item]) -> None:
        batch: list[Fulfillment] = []
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    if self.stopping:
                        break
                    if (fulfillment := self._admit(item)) is not None:
                        batch.append(fulfillment)
                        if len(batch) >= self._load_batch:
                            await self._load_batch_of(batch)
                            batch = []
            else:
                for item in items:
                    if self.stopping:
                        break
                    if (fulfillment := self._admit(item)) is not None:
                        batch.append(fulfillment)
                        if len(batch) >= self._load_batch:
                            await self._load_batch_of(batch)
                            batch = []
            if batch and not self.stopping:
                await self._load_batch_of(batch)
        finally:
            if isinstance(items, AsyncIterable):
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()
        self._loaded = True
        self._wake.set()

    def _admit(self, item: Item) -> Fulfillment | None:
        if isinstance(item, Fulfillment):
            return item
        if isinstance(item, ConsumeRequest):
            return Fulfillment.of(item)
        if isinstance(item, LineError):
            self._reject(item)
            return None
        raise ValidationError(
            "FleetWorker.run takes Fulfillment, ConsumeRequest or LineError items, "
            f"not {type(item).__name__}"
        )

    async def _load_batch_of(self, batch: list[Fulfillment]) -> None:
        stats = self.stats
        claims = await self._journal.load(batch, mark_run=False)
        for fulfillment, claim in zip(batch, claims, strict=True):
            outcome = claim.outcome
            if outcome is ClaimOutcome.SEND:
                stats.loaded += 1
            elif outcome is ClaimOutcome.RESEND:
                stats.present += 1
            elif outcome is ClaimOutcome.ALREADY_DONE:
                stats.already_done += 1
            elif outcome is ClaimOutcome.ALREADY_FAILED:
                stats.already_failed += 1
                assert claim.request is not None
                assert claim.failure is not None
                self._list_failure(
                    fulfillment.key, fulfillment.line, claim.request, claim.failure, True
                )
            elif outcome is ClaimOutcome.DUPLICATE:
                stats.duplicates += 1
            else:
                self._reject(
                    LineError(
                        line=fulfillment.line or 0,
                        message=claim.detail or "conflict",
                        key=fulfillment.key,
                    )
                )
        self._wake.set()

    def _reject(self, error: LineError) -> None:
        self.stats.rejected += 1
        if len(self._rejections) < self._max_listed:
            self._rejections.append(error)
        if self._on_rejected is not None:
            self._on_rejected(error)

    def _list_failure(
        self,
        key: str,
        line: int | None,
        request: ConsumeRequest,
        failure: FailureInfo,
        previously: bool = False,
    ) -> None:
        if len(self._failures) < self._max_listed:
            self._failures.append(
                FailedRow(
                    key=key,
                    line=line,
                    idempotency_key=request.idempotency_key,
                    failure=failure,
                    previously=previously,
                )
            )

    # -- leasing ------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Keep about four rows per sender queued; end the senders when all is settled."""
        journal, target = self._journal, 4 * self._concurrency
        while not self.stopping:
            self._wake.clear()
            room = target - self._queue.qsize()
            if room >= self._concurrency:
                started = time.monotonic()
                # As many users as should fill the room, from the rows per user seen so far: a
                # user leased without rows is a lease wasted (and kept from other workers).
                users = max(1, min(64, -(-room // max(1, round(self._rows_per_user)))))
                leases = await journal.lease(
                    users=users, rows_per_user=room, seconds=self._lease_seconds
                )
                if leases:
                    with_rows = [len(lease.rows) for lease in leases if lease.rows]
                    if with_rows:
                        average = sum(with_rows) / len(with_rows)
                        self._rows_per_user = 0.7 * self._rows_per_user + 0.3 * average
                    self._take(leases, started + self._lease_seconds)
                    continue
                if (
                    self._loaded
                    and not self._held
                    and not self._has_records()
                    and not await journal.has_work()
                ):
                    break  # loaded, nothing held, nothing workable anywhere: done
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
        for _ in self._senders:
            self._queue.put_nowait(None)

    def _take(self, leases: list[Lease], valid_until: float) -> None:
        self.stats.leases += len(leases)
        for lease in leases:
            if not lease.rows:  # nothing workable after all: give it back now
                self._releases.append((lease.user_id, lease.token))
                continue
            self._held[lease.user_id, lease.token] = _Held(
                user_id=lease.user_id,
                token=lease.token,
                remaining=len(lease.rows),
                valid_until=valid_until,
            )
            for row in lease.rows:
                self._queue.put_nowait(row)

    async def _heartbeat(self) -> None:
        """Renew the held leases every third of their length; drop the ones lost."""
        interval = self._lease_seconds / 3
        while not self._finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), interval)
            live = [held for held in self._held.values() if not held.lost]
            if not live or self._finished.is_set():
                continue
            started = time.monotonic()
            still = await self._journal.renew({held.token for held in live}, self._lease_seconds)
            for held in live:
                if (held.user_id, held.token) in still:
                    held.valid_until = started + self._lease_seconds
                else:
                    held.lost = True

    # -- sending ------------------------------------------------------------------------------

    async def _send_rows(self) -> None:
        queue = self._queue
        while True:
            row = await queue.get()
            if row is None:
                return
            if queue.qsize() < 3 * self._concurrency:
                self._wake.set()  # time to lease more
            held = self._held.get((row.user_id, row.token))
            if held is None:
                continue
            if self.stopping:
                self.stats.pending += 1
                self._settled(held)
                continue
            if held.lost or time.monotonic() >= held.valid_until:
                # The lease may be another worker's by now: leave the row to it.
                held.lost = True
                self.stats.lost += 1
                self._settled(held)
                continue
            await self._send(row, held)

    async def _send(self, row: LeasedRow, held: _Held) -> None:
        # Marks go to ``self._marks`` as it is *after* the call: the recorder swaps the lists.
        stats, request = self.stats, row.request
        stats.in_flight += 1
        try:
            result: ConsumeResult = await self._client.consume(request)
        except OutcomeUnknownError as error:
            stats.pending += 1
            self._marks[2].append((row.key, row.token, error))
        except StoreError as error:
            if error.retryable or error.kind is FailureKind.MAYBE_APPLIED:
                stats.pending += 1  # not applied, or maybe: only a resend settles it
                self._marks[2].append((row.key, row.token, error))
            elif error.status is None:
                # Nothing was sent and no row will fare better (no credential, bad config).
                stats.pending += 1
                self._marks[2].append((row.key, row.token, error))
                if isinstance(error, AuthenticationError):
                    self._begin_stop(f"{error.message}: check the credential")
                else:
                    self._begin_stop(f"{error.message}: nothing was sent; check the configuration")
            else:
                stats.failed += 1
                self._marks[1].append((row.key, row.token, error))
                self._list_failure(row.key, row.line, request, FailureInfo.from_error(error))
                self._watch_authentication(error)
        except asyncio.CancelledError:
            stats.pending += 1  # stays pending in the journal: the next lease resends it
            raise
        else:
            stats.done += 1
            self._auth_failures_in_a_row = 0
            self._marks[0].append((row.key, row.token, result))
        finally:
            stats.in_flight -= 1
            self._settled(held)

    def _settled(self, held: _Held) -> None:
        """One row of ``held`` has its answer: release the lease with its last mark."""
        held.remaining -= 1
        if held.remaining == 0:
            del self._held[held.user_id, held.token]
            self._releases.append((held.user_id, held.token))
            self._record_soon.set()

    def _watch_authentication(self, error: StoreError) -> None:
        if not isinstance(error, AuthenticationError):
            self._auth_failures_in_a_row = 0
            return
        self._auth_failures_in_a_row += 1
        if self._auth_failures_in_a_row >= self._auth_failure_limit:
            self._begin_stop(
                f"{self._auth_failures_in_a_row} authentication failures in a row: check the "
                "access token and the Store ID keys (rerun with --retry-failed once fixed)"
            )

    # -- recording ----------------------------------------------------------------------------

    def _has_records(self) -> bool:
        return bool(self._releases) or any(self._marks)

    async def _record_loop(self) -> None:
        """Write marks and releases a few times a second (a release rides with its marks)."""
        while not self._finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._record_soon.wait(), 0.05)
            self._record_soon.clear()
            await self._record()
            self._wake.set()

    async def _record(self) -> None:
        if not self._has_records():
            return
        (done, failed, unknown), releases = self._marks, self._releases
        self._marks, self._releases = ([], [], []), []
        marked = await self._journal.settle(
            done=done, failed=failed, unknown=unknown, release=releases, max_tries=self._max_tries
        )
        # Marks the journal refused (the lease was lost): this worker's answers do not count.
        stats = self.stats
        for entries, counter in ((done, "done"), (failed, "failed"), (unknown, "pending")):
            refused = sum(1 for entry in entries if entry[0] not in marked)
            if refused:
                setattr(stats, counter, getattr(stats, counter) - refused)
                stats.lost += refused
