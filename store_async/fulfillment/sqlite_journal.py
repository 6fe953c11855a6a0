"""``SqliteJournal``: the embedded, durable default :class:`~store_async.fulfillment.Journal`.

Group commit
    Every operation (claim, mark, flush) is queued for one writer that owns the SQLite
    connection: a thread of this process (``writer="thread"``, the default) or a process of its
    own (``writer="process"``, see ``_journal_process.py``: off this process's GIL). The writer
    takes *everything* queued while its previous commit ran, applies it in one transaction,
    commits once, and then settles all the waiting futures at once. Under load a commit carries
    hundreds of rows, so the journal costs a few microseconds per row; the event loop never
    blocks on disk I/O. Claims and marks wait in plain lists (no per-row objects), and are
    written by multi-row statements. Under load (a commit of 8 operations or more) the writer
    waits up to ``commit_interval`` seconds (default 50 ms) after a commit before the next one,
    to fill it: each commit costs an ``fsync`` and writes every page it touched whole to the
    WAL, so fewer, fuller commits cost less per row (the writer process's CPU per line fell by
    a quarter from 20 ms to 50 ms). A claim settles only once committed, so the wait must not
    bound throughput: it ends as soon as 512 claims are queued (a full commit) or anything
    waits for a commit (flush, close, a new run). The Fulfiller keeps 1,024 claims ahead of its
    workers (``claim_ahead``), so half of them keep the workers busy while the other half
    commits.

Durability (``synchronous``)
    An intent row must be durable before its request is sent: if it were lost after the send, a
    rerun would assign the key a *new* tracking id and the Store would apply the consumable
    twice. In WAL mode a commit is a ``write()`` to the WAL file, so with ``synchronous="normal"``
    a committed intent survives a process crash (``kill -9``, OOM) but not an OS crash or power
    loss, which may roll back the last commits. ``"full"`` (the default) also ``fsync``\\ s the
    WAL at each commit; since commits are grouped, that costs one ``fsync`` per batch, not per
    row. Choose ``"normal"`` only when a lost intent is acceptable (tests, scratch runs).

Marks are lazy
    ``mark_done``/``mark_failed``/``mark_unknown`` do not wait for their commit (losing one in a
    crash leaves the row pending, and resending a pending row is safe); they ride along with the
    next group commit. When too many are outstanding, the caller waits for a commit, so memory
    stays bounded.

One writer per file
    The journal holds an exclusive ``flock`` on the file while open, so a second process gets a
    clear :class:`JournalError` instead of silently sending the same rows. Readers
    (:class:`~store_async.fulfillment.JournalReader`) need no lock. After a crash the lock is
    gone with the process and SQLite rolls the WAL forward: reopening is always safe.

The file holds every request, Store ID keys included (needed to export rows for re-drive), so
it is created readable by its owner only (mode ``0600``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Literal

import orjson

from store_async.errors import StoreError
from store_async.fulfillment._journal_process import (
    BUSY,
    CLOSE,
    ENOUGH_CLAIMS,
    FLUSH,
    KEY,
    RUN,
    ProcessWriter,
)
from store_async.fulfillment._schema import Synchronous, connect
from store_async.fulfillment._sqlite_store import (
    DONE,
    FAILED,
    UNKNOWN,
    JournalStore,
    done_row,
    error_row,
)
from store_async.fulfillment.journal import Claim, Fulfillment, JournalError
from store_async.models import ConsumeResult, UserIdentity

__all__ = ["SqliteJournal", "Writer"]

Writer = Literal["thread", "process"]

_LOCK_WAIT = 2.0  # seconds to wait for a writer process finishing its last commit (see _lock)
KINDS: Final = (DONE, FAILED, UNKNOWN)
"""The mark kinds, numbered for the writer process by their place here."""


class SqliteJournal:
    """A :class:`~store_async.fulfillment.Journal` in one SQLite file (see the module docstring).

    Opening checks the file at once and raises :class:`JournalError` if it is not a journal, is
    of a newer schema, or is in use by another process. Use it as an async context manager, or
    call :meth:`close`.

    :param synchronous: ``"full"`` (default: an intent survives power loss) or ``"normal"``
        (a process crash only); see the module docstring.
    :param commit_interval: under load, how long after the previous commit the writer waits to
        fill the next one, at most (default 50 ms; see Group commit).
    :param writer: ``"thread"`` (default): a thread of this process writes; ``"process"``: a
        process of its own, off this process's GIL (faster under load; started at once, ~0.2 s,
        and a :class:`JournalError` if no interpreter can be started).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        max_batch: int = 4096,
        max_lazy_marks: int = 50_000,
        commit_interval: float = 0.05,
        writer: Writer = "thread",
    ) -> None:
        if writer not in ("thread", "process"):
            raise JournalError(f"writer must be 'thread' or 'process', not {writer!r}")
        if synchronous not in ("full", "normal"):
            raise JournalError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if not 0 <= commit_interval <= 1:
            raise JournalError(
                f"commit_interval must be within 0..1 seconds, not {commit_interval!r}"
            )
        self.path = os.fspath(path)
        self._process: ProcessWriter | None = None  # writer="process", once started
        self._max_batch = max_batch
        self._max_lazy_marks = max_lazy_marks
        self._commit_interval = commit_interval  # under load, seconds between commits at least
        self._lock_fd = _lock(self.path)
        try:
            connection = connect(self.path, readonly=False, synchronous=synchronous)
        except BaseException:
            os.close(self._lock_fd)
            raise
        # The writer thread's connection. A writer process opens its own: this one only
        # checked (or created) the file, and is closed at once (no idle connection, and the
        # last close's WAL checkpoint then happens in the writer, not on the event loop).
        self._connection: sqlite3.Connection | None = connection
        # What the writer thread takes at its next commit, in plain lists (no per-row
        # objects beyond each mark's parameter tuple), guarded by one lock.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = False  # the writer waits for work (read and written under the lock)
        self._pausing = False  # the writer waits for a fuller commit (idem)
        self._claims: list[Fulfillment] = []
        self._claim_futures: list[asyncio.Future[Claim]] = []
        # Marks in arrival order, and the kind of each (DONE, FAILED or UNKNOWN).
        self._marks: list[tuple[Any, ...]] = []
        self._mark_kinds: list[Any] = []
        self._waiters: list[tuple[int, Any, asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False  # the writer (thread, or the process's answers) is running
        self._broken: str | None = None  # why the journal failed; each waiter gets its own error
        self._closed = False
        self._lazy_marks = 0  # marks queued but not yet committed (event-loop thread only)
        self._commits = 0
        self._store = JournalStore(connection)  # writer-thread state
        if writer == "process":
            connection.close()
            self._connection = None
            try:
                self._process = ProcessWriter(
                    self.path,
                    synchronous=synchronous,
                    commit_interval=commit_interval,
                    max_batch=max_batch,
                    lock_fd=self._lock_fd,
                    on_marks=self._marks_committed,
                    on_broken=self._writer_broken,
                )
            except BaseException:
                os.close(self._lock_fd)
                raise

    def __repr__(self) -> str:
        return f"SqliteJournal({self.path!r})"

    @property
    def commits(self) -> int:
        """Transactions committed so far (each carries a whole batch of operations)."""
        return self._process.commits if self._process is not None else self._commits

    async def __aenter__(self) -> SqliteJournal:
        """With ``writer="process"``, wait until the writer process answers (it starts in
        ~0.2 s): the block's first claim then waits for no start-up."""
        if self._process is not None and not self._closed:
            self._start()
            await self._submit_waiting(FLUSH, None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the Journal protocol -----------------------------------------------------------------

    async def begin_run(self, *, retry_failed: bool = False) -> int:
        future = self._submit_waiting(RUN, retry_failed)
        return int(await future)

    def claim(self, fulfillment: Fulfillment) -> Awaitable[Claim]:
        loop = self._loop if self._started and self._loop is not None else self._start()
        future: asyncio.Future[Claim] = loop.create_future()
        if self._closed or self._broken is not None:
            self._refuse(future)
            return future
        if self._process is not None:
            try:
                self._process.claim(fulfillment, future)
            except orjson.JSONEncodeError:  # a string SQLite could not store either
                self._broken = f"journal {self.path} could not be written: UnicodeEncodeError"
                self._refuse(future)
            return future
        with self._lock:
            claims = self._claims
            claims.append(fulfillment)
            self._claim_futures.append(future)
            if self._idle or (self._pausing and len(claims) == ENOUGH_CLAIMS):
                self._wake.notify()
        return future

    async def mark_done(self, key: str, result: ConsumeResult) -> None:
        self._mark(DONE, done_row(key, result))
        if self._lazy_marks > self._max_lazy_marks:
            await self.flush()

    async def mark_failed(self, key: str, error: StoreError) -> None:
        self._mark(FAILED, error_row(key, error))
        if self._lazy_marks > self._max_lazy_marks:
            await self.flush()

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        self._mark(UNKNOWN, error_row(key, error))
        if self._lazy_marks > self._max_lazy_marks:
            await self.flush()

    def replace_store_id_key(self, old: UserIdentity, new_value: str) -> Awaitable[int]:
        """Put the renewed Store ID key ``new_value`` in place of ``old``'s key for the rows
        that carry it (a pending row is resent with it; an export shows it). Returns how many
        journaled beneficiaries changed (0 or 1); durable once the awaitable completes."""
        return self._submit_waiting(KEY, (old, new_value))

    async def flush(self) -> None:
        if not self._started and self._broken is None:
            return  # nothing was ever queued
        await self._submit_waiting(FLUSH, None)

    async def close(self) -> None:
        """Commit everything queued, stop the writer thread and release the file."""
        if self._closed:
            return
        self._closed = True  # refuse new work from here on
        try:
            if self._started:
                assert self._loop is not None
                done: asyncio.Future[Any] = self._loop.create_future()
                self._put_waiter((CLOSE, None, done))
                await done
            if self._process is not None:
                await self._process.wait_closed()
            elif self._thread is not None:
                await asyncio.to_thread(self._thread.join)
        finally:
            if self._connection is not None:
                self._connection.close()
            os.close(self._lock_fd)  # after the connection: closing an fd drops POSIX locks

    # -- event-loop side ----------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = loop = asyncio.get_running_loop()
        if self._closed:
            return loop
        if self._process is not None:
            self._process.attach(loop)
        else:
            self._thread = threading.Thread(
                target=self._writer, name=f"store_async journal {self.path}", daemon=True
            )
            self._thread.start()
        self._started = True
        return loop

    def _refuse(self, future: asyncio.Future[Any]) -> None:
        if self._closed:
            future.set_exception(JournalError(f"journal {self.path} is closed"))
        else:
            assert self._broken is not None
            future.set_exception(JournalError(self._broken))
            future.exception()  # retrieved: see _settle

    def _marks_committed(self, count: int) -> None:
        self._lazy_marks -= count

    def _writer_broken(self, reason: str) -> None:
        self._broken = reason

    def _put_waiter(self, waiter: tuple[int, Any, asyncio.Future[Any]]) -> None:
        if self._process is not None:
            kind, payload, future = waiter
            if kind == KEY:
                old, new_value = payload
                payload = (
                    old.identity_type,
                    old.identity_value,
                    old.local_ticket_reference,
                    new_value,
                )
            elif kind == RUN:
                payload = (payload, os.getpid())
            self._process.wait(kind, payload, future)
            return
        with self._lock:
            self._waiters.append(waiter)
            if self._idle or self._pausing:
                self._wake.notify()

    def _submit_waiting(self, kind: int, payload: object) -> asyncio.Future[Any]:
        loop = self._loop if self._started and self._loop is not None else self._start()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed or self._broken is not None:
            self._refuse(future)
        else:
            self._put_waiter((kind, payload, future))
        return future

    def _mark(self, kind: Any, row: tuple[Any, ...]) -> None:
        if self._broken is not None:
            return  # the row stays pending; claims and flush report the failure
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        if not self._started:
            self._start()
        self._lazy_marks += 1
        if self._process is not None:
            self._process.mark(KINDS.index(kind), row)
            return
        with self._lock:
            self._marks.append(row)
            self._mark_kinds.append(kind)
            if self._idle:
                self._wake.notify()

    def _settle(
        self,
        futures: list[asyncio.Future[Any]],
        values: list[Any],
        marks: int,
    ) -> None:
        self._lazy_marks -= marks
        for future, value in zip(futures, values, strict=True):
            if future.cancelled():
                continue
            if isinstance(value, BaseException):
                future.set_exception(value)
                # Retrieved here: a failed journal fails every claim, and the claims of items
                # still queued when the run stops are never awaited. The failure is reported by
                # the claims that are awaited, flush and close, not by one log line per row.
                future.exception()
            else:
                future.set_result(value)

    # -- writer thread ------------------------------------------------------------------------

    def _writer(self) -> None:
        """Take everything queued, apply it in one transaction, commit once, settle the waiters
        with one ``call_soon_threadsafe``; again until closed."""
        assert self._loop is not None
        wake, max_batch = self._wake, self._max_batch
        gap, last_commit, last_size = self._commit_interval, 0.0, 0
        running = True
        while running:
            # Under load, commits at most every `gap` seconds: each costs an fsync and whole WAL
            # pages, so fewer, fuller commits cost less per row. The Fulfiller claims ahead of
            # its workers, so the wait delays no send; ENOUGH_CLAIMS end it early (a full
            # commit), one-at-a-time callers (a last batch of fewer than BUSY operations) and
            # flush/close/begin_run never wait.
            if last_size >= BUSY:
                deadline = last_commit + gap
                with wake:
                    self._pausing = True
                    while not (self._waiters or len(self._claims) >= ENOUGH_CLAIMS):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        wake.wait(left)
                    self._pausing = False
            with wake:
                while not (self._claims or self._waiters or self._marks):
                    self._idle = True
                    wake.wait()
                self._idle = False
                claims, futures = self._claims, self._claim_futures
                if len(claims) > max_batch:  # the rest goes into the next transaction
                    self._claims, self._claim_futures = claims[max_batch:], futures[max_batch:]
                    claims, futures = claims[:max_batch], futures[:max_batch]
                else:
                    self._claims, self._claim_futures = [], []
                marks, kinds = self._marks, self._mark_kinds
                self._marks, self._mark_kinds = [], []
                waiters, self._waiters = self._waiters, []
            running = all(waiter[0] != CLOSE for waiter in waiters)
            values: list[Any] = []
            if self._broken is None:
                try:
                    values = self._apply(claims, marks, kinds, waiters)
                except Exception as error:  # the writer must never die
                    # A thread that died here would leave every waiter hanging. SQLite's own
                    # messages name no values; others (a string SQLite cannot encode) might.
                    detail = (
                        str(error) if isinstance(error, sqlite3.Error) else type(error).__name__
                    )
                    self._broken = f"journal {self.path} could not be written: {detail}"
                    with contextlib.suppress(sqlite3.Error):
                        assert self._connection is not None  # a writer thread has one
                        self._connection.execute("ROLLBACK")
            waiting = [*futures, *(waiter[2] for waiter in waiters)]
            if self._broken is not None:
                # Nothing of this batch is committed; fail every waiter (marks have none).
                values = [JournalError(self._broken) for _ in futures]
                values += [None if w[0] == CLOSE else JournalError(self._broken) for w in waiters]
            last_commit = time.monotonic()
            count = len(marks)
            last_size = len(claims) + count
            self._loop.call_soon_threadsafe(self._settle, waiting, values, count)

    def _apply(
        self,
        claims: list[Fulfillment],
        marks: list[tuple[Any, ...]],
        kinds: list[Any],
        waiters: list[tuple[int, Any, asyncio.Future[Any]]],
    ) -> list[Any]:
        store, connection = self._store, self._connection
        assert connection is not None  # a writer thread has one
        decide = (lambda now: store.claim_all(claims, now)) if claims else None
        values = apply_batch(connection, store, decide, marks, kinds, waiters)
        self._commits += 1
        return values


def apply_batch(
    connection: sqlite3.Connection,
    store: JournalStore,
    claim: Callable[[float], list[Any]] | None,
    marks: list[tuple[Any, ...]],
    kinds: list[Any],
    waiters: list[tuple[Any, ...]],
    pid: int | None = None,
) -> list[Any]:
    """Apply one batch in one transaction; return each waiter's answer (claims first).

    ``claim(now)`` decides the batch's claims (``None``: it has none) and returns their answers,
    in the writer's own form: :class:`Claim` objects in a thread, wire answers in a process.

    ``waiters`` are ``(kind, payload, ...)``. A new run begins before the claims of the batch
    (``begin_run`` is awaited before the run claims anything); claims come before marks, which
    only ever refer to rows claimed in earlier commits (a worker sends only once its claim is
    durable). A renewed Store ID key replaces the old one after the claims: a claim queued
    before the renewal carries the old key, whose beneficiary row the replacement then
    updates. ``pid`` is the fulfilling process's (the writer's own by default).
    """
    connection.execute("BEGIN IMMEDIATE")
    now = time.time()
    answers: dict[int, Any] = {}
    for index, (kind, payload, *_) in enumerate(waiters):
        if kind == RUN:
            answers[index] = store.begin_run(payload, pid or os.getpid(), now)
    values: list[Any] = claim(now) if claim is not None else []
    for index, (kind, payload, *_) in enumerate(waiters):
        if kind == KEY:
            answers[index] = store.replace_store_id_key(*payload)
    if marks:
        _apply_marks(store, marks, kinds, now)
    connection.execute("COMMIT")
    # FLUSH and CLOSE are barriers, settled now that the batch is committed.
    values += [answers.get(index) for index in range(len(waiters))]
    return values


def _apply_marks(
    store: JournalStore, marks: list[tuple[Any, ...]], kinds: list[Any], now: float
) -> None:
    """Apply ``marks`` (``kinds[i]`` is the kind of ``marks[i]``) in as few statements as can be.

    Marks of distinct keys commute, so they are applied a kind at a time. A key marked twice in
    one batch (a throttled row marked unknown, then done after its park) needs the marks in
    arrival order: runs of one kind and distinct keys, one after the other.
    """
    first = kinds[0]
    if len({mark[0] for mark in marks}) == len(marks):
        if kinds.count(first) == len(kinds):
            store.mark(first, marks, now)
            return
        for kind in (DONE, FAILED, UNKNOWN):
            chosen = [mark for mark, of in zip(marks, kinds, strict=True) if of is kind]
            if chosen:
                store.mark(kind, chosen, now)
        return
    start, seen = 0, set[Any]()
    for index, (mark, kind) in enumerate(zip(marks, kinds, strict=True)):
        if kind is not kinds[start] or mark[0] in seen:
            store.mark(kinds[start], marks[start:index], now)
            start, seen = index, set[Any]()
        seen.add(mark[0])
    store.mark(kinds[start], marks[start:], now)


def _lock(path: str) -> int:
    """Create the file (mode 0600) if needed and take an exclusive ``flock`` on it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise JournalError(f"cannot open journal {path}: {error.strerror}") from None
    # A writer process outlives its fulfiller by one last commit (after a kill -9): wait for
    # that, not for a live fulfiller, which holds the lock for its whole run.
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            os.close(fd)
            raise JournalError(
                f"journal {path} is in use by another process (one writer at a time)"
            ) from None
        return fd
