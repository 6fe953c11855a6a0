"""``Fulfiller``: report many consumables as fulfilled, exactly once, through a journal.

The pipeline, for memory flat in the input size::

    input ──▶ feeder ──claim──▶ journal (group commits, in its own thread)
                 │
                 └──▶ bounded queue ──▶ N workers ──consume──▶ Store
                                             └──mark done / failed / unknown──▶ journal

The feeder reads the input in order and submits each claim at once, without waiting for it, so
intent commits overlap with the sends already under way. A worker waits until *its* claim is
durable, and only then sends. At most ``claim_ahead`` claimed items wait in the queue (by
default :data:`DEFAULT_CLAIM_AHEAD` or ``2 × concurrency``, whichever is larger): enough that a
claim is committed long before a worker takes it, so no worker waits for the journal.

Stopping (:meth:`Fulfiller.stop`, e.g. on SIGINT/SIGTERM): no new item is taken; calls in flight
get ``grace`` seconds to finish, then are cancelled and stay pending (their intent is durable:
the next run resends them with the same tracking id).

Per-user pacing (``user_rate``): before a send, a worker asks the pacer whether the row's user
(the Store ID key's ``userId``) may send now; if not, the row is *parked* and the worker takes
another row, so a hot user holds back nobody else; its rows are released at its rate. A 429
parks the user until its ``Retry-After``; the row is sent again after it, never failed.

Store ID keys (``renew_keys``): before the first send of a key, it is checked once per run:
expired keys fail their rows without a request, keys past their refresh time are renewed once
and the renewed key is sent and journaled (see ``_keys.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Final, Protocol, TypeAlias

import attrs

from store_async.errors import (
    AuthenticationError,
    FailureKind,
    OutcomeUnknownError,
    StoreError,
    ThrottledError,
    ValidationError,
)
from store_async.fulfillment._keys import (
    KeyLifecycle,
    KeyRenewingClient,
    KeyReplacingJournal,
    UnusableKey,
)
from store_async.fulfillment._parking import Inbox, Released
from store_async.fulfillment.journal import Claim, ClaimOutcome, FailureInfo, Fulfillment, Journal
from store_async.fulfillment.report import FailedRow, FulfillmentReport, FulfillmentStats
from store_async.fulfillment.source import LineError
from store_async.models import ConsumeRequest, ConsumeResult
from store_async.pacing import UserPacer, UserRate, user_of

__all__ = ["DEFAULT_CLAIM_AHEAD", "DEFAULT_CONCURRENCY", "ConsumeClient", "Fulfiller", "Item"]

DEFAULT_CONCURRENCY: Final = 512
"""Consume calls in flight by default, from Little's law: in flight = throughput x round trip.
A real Store round trip is ~0.1 s, so 512 calls in flight allow ~5,000 fulfillments/s, what
one process with a SQLite journal sustains (64, the old default, capped it at ~640/s). See
``docs/guides/performance.md``."""

DEFAULT_CLAIM_AHEAD: Final = 1024
"""Claimed items the feeder keeps queued ahead of the workers at least. A claim settles once its
group commit is durable: under load that takes up to the journal's commit interval plus a few
turns of a busy event loop (15-50 ms measured with SQLite at 4,000-6,000 lines/s and a 20 ms
interval). With only ``2 × concurrency`` ahead (128 at concurrency 64, ~25 ms of work), ~30 % of
the workers found their claim not yet committed and idled; with 1,024 ahead, 0.2 %. A SQLite
journal's writer commits at once for 512 claims, half of these: the other half keeps the workers
busy meanwhile. Each queued item costs a few hundred bytes."""

Item: TypeAlias = Fulfillment | ConsumeRequest | LineError
"""What :meth:`Fulfiller.run` accepts: fulfillments, bare requests (keyed by their idempotency
key), and input errors to report (as :func:`read_jsonl` yields them)."""

_Queued: TypeAlias = tuple[Fulfillment, Awaitable[Claim]] | None
_Ready: TypeAlias = tuple[Fulfillment, ConsumeRequest]  # claimed, key checked: may be parked
_Inbox: TypeAlias = Inbox[tuple[Fulfillment, Awaitable[Claim]], _Ready]


def _by_line(entry: FailedRow | LineError) -> int:
    """Order for report lists: by input line (conflicts are found later than parse errors)."""
    return entry.line or 0


class ConsumeClient(Protocol):
    """What the fulfiller needs from a client: :class:`store_async.StoreClient` has it."""

    async def consume(self, request: ConsumeRequest) -> ConsumeResult: ...


class Fulfiller:
    """Send fulfillments through ``client``, journaled in ``journal``.

    - ``concurrency``: consume calls in flight at most (:data:`DEFAULT_CONCURRENCY`: sized by
      Little's law for a 0.1 s Store round trip).
    - ``grace``: seconds in-flight calls get to finish after :meth:`stop`.
    - ``retry_failed``: resend rows that failed permanently in an earlier run (with their
      original idempotency key), e.g. after fixing an expired Store ID key in the input.
    - ``on_rejected``: called with each rejected line as it happens (for live output).
    - ``max_listed``: how many failures and rejections the report lists (counts are exact).
    - ``auth_failure_limit``: stop after this many authentication failures in a row (a bad
      access token would otherwise fail every row).
    - ``user_rate``: pace each user to at most ``ops`` sends in any ``seconds``
      (:class:`~store_async.pacing.UserRate`; ``None``: no pacing). The Store's own limit is
      200 per 300 s (:data:`~store_async.pacing.STORE_USER_RATE`).
    - ``max_parked``: once this many rows are parked (waiting for their user's rate) the input
      waits, so memory stays bounded; rows already queued to the workers (``claim_ahead`` at
      most) may still park, so the bound is ``max_parked + claim_ahead``.
    - ``claim_ahead``: claimed rows queued ahead of the workers at most (``None``: the larger
      of :data:`DEFAULT_CLAIM_AHEAD` and ``2 × concurrency``). Rows claimed but not yet sent
      when the run stops stay pending (a rerun resends them), so a stopped run reports up to
      this many more pending rows.
    - ``renew_keys``: renew Store ID keys past their refresh time (if the client can) and fail
      the rows of expired keys without a request (``False``: send every key as it is).

    The client and the journal are the caller's: :meth:`run` neither opens nor closes them.
    """

    def __init__(
        self,
        client: ConsumeClient,
        journal: Journal,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        grace: float = 30.0,
        retry_failed: bool = False,
        on_rejected: Callable[[LineError], None] | None = None,
        max_listed: int = 1000,
        auth_failure_limit: int = 100,
        user_rate: UserRate | None = None,
        max_parked: int = 10_000,
        renew_keys: bool = True,
        claim_ahead: int | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"Fulfiller concurrency must be an int >= 1, not {concurrency!r}")
        if not grace >= 0:
            raise ValidationError(f"Fulfiller grace must be >= 0 seconds, not {grace!r}")
        self._client = client
        self._journal = journal
        self._concurrency = concurrency
        self._grace = grace
        self._retry_failed = retry_failed
        self._on_rejected = on_rejected
        self._max_listed = max_listed
        self._auth_failure_limit = auth_failure_limit
        if user_rate is not None and not isinstance(user_rate, UserRate):
            raise ValidationError(f"Fulfiller user_rate must be a UserRate, not {user_rate!r}")
        if not isinstance(max_parked, int) or max_parked < 1:
            raise ValidationError(f"Fulfiller max_parked must be an int >= 1, not {max_parked!r}")
        if claim_ahead is None:
            claim_ahead = max(DEFAULT_CLAIM_AHEAD, 2 * concurrency)
        elif not isinstance(claim_ahead, int) or claim_ahead < 1:
            raise ValidationError(
                f"Fulfiller claim_ahead must be an int >= 1 or None, not {claim_ahead!r}"
            )
        self._claim_ahead = claim_ahead
        self._user_rate = user_rate
        self._max_parked = max_parked
        self._renew_keys = renew_keys
        self._pacer: UserPacer | None = None
        self._inbox: _Inbox | None = None
        self._keys: KeyLifecycle | None = None
        self.stats = FulfillmentStats()
        """Live counters of the current (or last) run."""
        self._failures: list[FailedRow] = []
        self._rejections: list[LineError] = []
        self._stop_reason: str | None = None
        self._auth_failures_in_a_row = 0
        self._feeder: asyncio.Task[None] | None = None
        self._idle: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._held: _Queued = None  # claimed by the feeder, not yet queued
        self._orphans: list[_Queued] = []  # taken by a worker cancelled before its claim settled
        self._grace_timer: asyncio.TimerHandle | None = None
        self._running = False

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def stop(self, reason: str = "stopped on request") -> None:
        """Take no new work; give in-flight calls ``grace`` seconds, then cancel them.

        Safe to call from a signal handler installed with ``loop.add_signal_handler``. A second
        call cancels the in-flight calls at once.
        """
        if not self._running:
            return
        if self._stop_reason is not None:
            self._cancel_workers()
            return
        self._begin_stop(reason)

    def _begin_stop(self, reason: str) -> None:
        """Stop taking work (idempotent: the fulfiller's own reasons never escalate)."""
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        if self._feeder is not None:
            self._feeder.cancel()
        for worker in self._idle:
            worker.cancel()
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(self._grace, self._cancel_workers)

    def _cancel_workers(self) -> None:
        for worker in self._workers:
            worker.cancel()

    async def run(self, items: AsyncIterable[Item] | Iterable[Item]) -> FulfillmentReport:
        """Fulfill every item; return when all are answered or the run is stopped.

        Raises :class:`~store_async.fulfillment.JournalError` if the journal fails (every row
        stays safe to resend) and lets any unexpected exception of the client through.
        """
        if self._running:
            raise RuntimeError("this Fulfiller is already running")
        self._running = True
        self.stats = FulfillmentStats()
        self._failures, self._rejections = [], []
        self._stop_reason, self._auth_failures_in_a_row, self._held = None, 0, None
        self._orphans = []
        started = time.monotonic()
        queue = self._inbox = self._new_inbox()
        self._keys = self._new_key_lifecycle()
        complete = False
        try:
            await self._journal.begin_run(retry_failed=self._retry_failed)
            # A stop() during begin_run found no feeder to cancel: starting one now would
            # block it on a full queue that no worker empties.
            if not self.stopping:
                await self._pipeline(items, queue)
            complete = not self.stopping
            await self._settle_leftovers(queue)
        except BaseException:
            with contextlib.suppress(StoreError):
                await self._journal.flush()  # keep what can be kept; the first error wins
            raise
        else:
            await self._journal.flush()
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._running, self._feeder, self._workers = False, None, []
            self._idle.clear()
            queue.drain()  # cancels release timers (rows left were counted as pending)
        stats = self.stats
        if self._keys is not None:
            stats.keys_renewed, stats.keys_refused = self._keys.renewed, self._keys.refused
        return FulfillmentReport(
            done=stats.done,
            already_done=stats.already_done,
            failed=stats.failed,
            already_failed=stats.already_failed,
            pending=stats.pending,
            duplicates=stats.duplicates,
            rejected=stats.rejected,
            complete=complete,
            stop_reason=self._stop_reason,
            elapsed=time.monotonic() - started,
            failures=tuple(sorted(self._failures, key=_by_line)),
            rejections=tuple(sorted(self._rejections, key=_by_line)),
            throttled=stats.throttled,
            users_parked=queue.users_parked,
            keys_renewed=stats.keys_renewed,
            keys_refused=stats.keys_refused,
        )

    # -- pacing and keys (see _parking.py and _keys.py) -----------------------------------------

    def _new_inbox(self) -> _Inbox:
        """A fresh inbox and pacer per run: a run starts with empty windows."""
        rate = self._user_rate
        self._pacer = UserPacer(rate) if rate is not None else None

        def parked(users: int, rows: int) -> None:
            self.stats.parked_users, self.stats.parked_rows = users, rows

        return Inbox(self._claim_ahead, self._pacer, max_parked=self._max_parked, on_change=parked)

    def _new_key_lifecycle(self) -> KeyLifecycle | None:
        if not self._renew_keys:
            return None
        client, journal = self._client, self._journal
        renew = client.renew_store_id_key if isinstance(client, KeyRenewingClient) else None
        replace = journal.replace_store_id_key if isinstance(journal, KeyReplacingJournal) else None
        return KeyLifecycle(renew, replace)

    def _with_renewed_key(self, fulfillment: Fulfillment) -> Fulfillment:
        """Claim a row of an already renewed key with the renewed key (no second renewal)."""
        keys = self._keys
        if keys is None or not keys.renewed:
            return fulfillment
        request = fulfillment.request
        value = keys.renewed_value(request.beneficiary.identity_value)
        if value is request.beneficiary.identity_value:
            return fulfillment
        return attrs.evolve(fulfillment, request=_with_key(request, value))

    async def _usable(
        self, fulfillment: Fulfillment, request: ConsumeRequest
    ) -> ConsumeRequest | None:
        """``request`` with a usable Store ID key, or ``None`` once its row is settled (failed:
        expired or renewal refused; pending: renewal failed for now)."""
        keys = self._keys
        if keys is None:
            return request
        try:
            value = await keys.usable(request.beneficiary)
        except UnusableKey as unusable:
            error = unusable.error
            if unusable.final:
                self.stats.failed += 1
                await self._journal.mark_failed(fulfillment.key, error)
                self._list_failure(fulfillment, request, FailureInfo.from_error(error), False)
            else:
                self.stats.pending += 1
                await self._journal.mark_unknown(fulfillment.key, error)
            return None
        except asyncio.CancelledError:
            self.stats.pending += 1  # claimed, never sent: the next run resends it
            raise
        if value == request.beneficiary.identity_value:
            return request
        return _with_key(request, value)

    def _user_of(self, request: ConsumeRequest) -> str:
        return user_of(request.beneficiary.identity_value)

    async def _pipeline(self, items: AsyncIterable[Item] | Iterable[Item], queue: _Inbox) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._feeder = group.create_task(self._feed(items, queue))
                self._workers = [
                    group.create_task(self._work(queue)) for _ in range(self._concurrency)
                ]
        except BaseExceptionGroup as errors:  # one failing task cancels the others
            # A failed journal fails every waiting worker at once: report it once, as itself.
            first = errors.exceptions[0]
            if len(errors.exceptions) == 1 or all(
                isinstance(error, StoreError) for error in errors.exceptions
            ):
                raise first from None
            raise

    # -- feeder -------------------------------------------------------------------------------

    async def _feed(self, items: AsyncIterable[Item] | Iterable[Item], queue: _Inbox) -> None:
        claim = self._journal.claim
        try:
            async with contextlib.AsyncExitStack() as stack:
                if isinstance(items, AsyncIterable):
                    aclose = getattr(items, "aclose", None)
                    if aclose is not None:
                        stack.push_async_callback(aclose)
                    async for item in items:
                        fulfillment = self._admit(item)
                        if fulfillment is not None:
                            fulfillment = self._with_renewed_key(fulfillment)
                            self._held = (fulfillment, claim(fulfillment))
                            await queue.put(self._held)
                            self._held = None
                else:
                    for item in items:
                        fulfillment = self._admit(item)
                        if fulfillment is not None:
                            fulfillment = self._with_renewed_key(fulfillment)
                            self._held = (fulfillment, claim(fulfillment))
                            await queue.put(self._held)
                            self._held = None
            queue.close()
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # cancelled from outside, not by stop()

    def _admit(self, item: Item) -> Fulfillment | None:
        if isinstance(item, Fulfillment):
            return item
        if isinstance(item, ConsumeRequest):
            return Fulfillment.of(item)
        if isinstance(item, LineError):
            self._reject(item)
            return None
        raise ValidationError(
            "Fulfiller.run takes Fulfillment, ConsumeRequest or LineError items, "
            f"not {type(item).__name__}"
        )

    def _reject(self, error: LineError) -> None:
        self.stats.rejected += 1
        if len(self._rejections) < self._max_listed:
            self._rejections.append(error)
        if self._on_rejected is not None:
            self._on_rejected(error)

    # -- workers ------------------------------------------------------------------------------

    async def _work(self, queue: _Inbox) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self.stopping:
            self._idle.add(task)
            try:
                queued = await queue.get()
            finally:
                self._idle.discard(task)
            if queued is None:
                return
            if isinstance(queued, Released):  # a parked row whose user may send again
                stamp = queue.admit(queued.user, queued.row, released=True)
                if stamp is not None:
                    await self._paced_send(*queued.row, queued.user, stamp)
                continue
            fulfillment, pending_claim = queued
            try:
                claim = await pending_claim
            except asyncio.CancelledError:
                self._orphans.append(queued)
                raise
            if claim.outcome in (ClaimOutcome.SEND, ClaimOutcome.RESEND):
                assert claim.request is not None
                request = claim.request
                if self._keys is not None:
                    value = request.beneficiary.identity_value
                    known = self._keys.known(value)
                    if known is None:  # a key not seen yet in this run: decide (maybe renew)
                        usable = await self._usable(fulfillment, request)
                        if usable is None:
                            continue
                        request = usable
                    elif known != value:  # renewed (equal strings may be distinct objects)
                        request = _with_key(request, known)
                if self._pacer is None:
                    await self._send(fulfillment, request)
                    continue
                user = self._user_of(request)
                stamp = queue.admit(user, (fulfillment, request), released=False)
                if stamp is not None:  # else parked: released when its user may send again
                    await self._paced_send(fulfillment, request, user, stamp)
            else:
                self._count_skipped(fulfillment, claim)

    async def _send(
        self, fulfillment: Fulfillment, request: ConsumeRequest, user: str | None = None
    ) -> None:
        stats, journal, key = self.stats, self._journal, fulfillment.key
        stats.in_flight += 1
        try:
            result = await self._client.consume(request)
        except OutcomeUnknownError as error:
            if user is not None and isinstance(error.last_error, ThrottledError):
                await self._throttled(fulfillment, request, user, error.last_error)
                return
            stats.pending += 1
            await journal.mark_unknown(key, error)
        except StoreError as error:
            if user is not None and isinstance(error, ThrottledError):
                await self._throttled(fulfillment, request, user, error)
            elif error.retryable or error.kind is FailureKind.MAYBE_APPLIED:
                # Not applied, or maybe applied (a 2xx too large to read): safe to resend, and
                # only a resend under the same idempotency key can settle it. Stays pending.
                stats.pending += 1
                await journal.mark_unknown(key, error)
            elif error.status is None:
                # Final without any answer (no access token, an invalid certificate, a client
                # that is not open): nothing was sent, so the row is not refused, and no row
                # will fare better. Stays pending; stop.
                stats.pending += 1
                await journal.mark_unknown(key, error)
                if isinstance(error, AuthenticationError):
                    self._begin_stop(f"{error.message}: check the credential")
                else:
                    self._begin_stop(f"{error.message}: nothing was sent; check the configuration")
            else:
                stats.failed += 1
                await journal.mark_failed(key, error)
                self._list_failure(fulfillment, request, FailureInfo.from_error(error), False)
                self._watch_authentication(error)
        except asyncio.CancelledError:
            stats.pending += 1  # the intent is durable: the next run resends it
            raise
        else:
            stats.done += 1
            self._auth_failures_in_a_row = 0
            await journal.mark_done(key, result)
        finally:
            stats.in_flight -= 1

    async def _paced_send(
        self, fulfillment: Fulfillment, request: ConsumeRequest, user: str, stamp: float
    ) -> None:
        try:
            await self._send(fulfillment, request, user)
        finally:
            # The Store counted the call when it arrived, at the latest now.
            assert self._inbox is not None
            self._inbox.answered(user, stamp)

    async def _throttled(
        self, fulfillment: Fulfillment, request: ConsumeRequest, user: str, error: StoreError
    ) -> None:
        """A 429 for ``user``: park the user until its Retry-After and the row with it (it is
        sent again after the park, under the same idempotency key; never failed)."""
        self.stats.throttled += 1
        assert self._inbox is not None
        self._inbox.throttled(user, error.retry_after, (fulfillment, request))
        await self._journal.mark_unknown(fulfillment.key, error)  # the attempt, for the record

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

    def _list_failure(
        self,
        fulfillment: Fulfillment,
        request: ConsumeRequest,
        failure: FailureInfo,
        previously: bool,
    ) -> None:
        if len(self._failures) < self._max_listed:
            self._failures.append(
                FailedRow(
                    key=fulfillment.key,
                    line=fulfillment.line,
                    idempotency_key=request.idempotency_key,
                    failure=failure,
                    previously=previously,
                )
            )

    def _count_skipped(
        self, fulfillment: Fulfillment, claim: Claim, *, unsent: bool = False
    ) -> None:
        stats, outcome = self.stats, claim.outcome
        if outcome is ClaimOutcome.ALREADY_DONE:
            stats.already_done += 1
        elif outcome is ClaimOutcome.ALREADY_FAILED:
            stats.already_failed += 1
            assert claim.failure is not None
            assert claim.request is not None
            self._list_failure(fulfillment, claim.request, claim.failure, True)
        elif outcome is ClaimOutcome.DUPLICATE:
            stats.duplicates += 1
        elif outcome is ClaimOutcome.CONFLICT:
            self._reject(
                LineError(
                    line=fulfillment.line or 0,
                    message=claim.detail or "conflict",
                    key=fulfillment.key,
                )
            )
        elif unsent:  # SEND/RESEND claimed before a stop, never sent
            stats.pending += 1

    async def _settle_leftovers(self, queue: _Inbox) -> None:
        """After a stop: count the items claimed but never sent (they stay pending)."""
        leftovers: list[_Queued | Released[_Ready]] = [self._held, *self._orphans]
        leftovers.extend(queue.drain())
        for queued in leftovers:
            if queued is None:
                continue
            if isinstance(queued, Released):  # parked: claimed, key checked, never sent
                self.stats.pending += 1
                continue
            fulfillment, pending_claim = queued
            try:
                claim = await pending_claim
            except asyncio.CancelledError:
                # The worker awaiting it was cancelled, which cancelled this future too: the
                # claim may or may not be journaled. Count it as pending; a rerun settles it.
                claim = Claim(outcome=ClaimOutcome.SEND)
            self._count_skipped(fulfillment, claim, unsent=True)


def _with_key(request: ConsumeRequest, value: str) -> ConsumeRequest:
    """``request`` with another Store ID key (a renewed one): same idempotency key and values."""
    return attrs.evolve(
        request, beneficiary=attrs.evolve(request.beneficiary, identity_value=value)
    )
