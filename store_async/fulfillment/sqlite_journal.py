"""``SqliteJournal``: the embedded, durable default :class:`~store_async.fulfillment.Journal`.

Group commit
    Every operation (claim, mark, flush) goes onto a queue served by one writer thread that owns
    the SQLite connection. The thread takes *everything* queued while its previous commit ran,
    applies it in one transaction, commits once, and then settles all the waiting futures with a
    single ``call_soon_threadsafe``. Under load a commit carries hundreds of rows, so the journal
    costs a few microseconds per row and is not the bottleneck; the event loop never blocks on
    disk I/O.

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
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

from store_async.errors import StoreError
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
from store_async.models import ConsumeResult

__all__ = ["SqliteJournal"]

# Queue operations: small tuples, the first element says which.
_CLAIM, _MARK, _FLUSH, _RUN, _CLOSE = range(5)


class SqliteJournal:
    """A :class:`~store_async.fulfillment.Journal` in one SQLite file (see the module docstring).

    Opening checks the file at once and raises :class:`JournalError` if it is not a journal, is
    of a newer schema, or is in use by another process. Use it as an async context manager, or
    call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        max_batch: int = 4096,
        max_lazy_marks: int = 50_000,
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise JournalError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = os.fspath(path)
        self._max_batch = max_batch
        self._max_lazy_marks = max_lazy_marks
        self._lock_fd = _lock(self.path)
        try:
            self._connection = connect(self.path, readonly=False, synchronous=synchronous)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broken: str | None = None  # why the journal failed; each waiter gets its own error
        self._closed = False
        self._lazy_marks = 0  # marks queued but not yet committed (event-loop thread only)
        self.commits = 0
        """Transactions committed so far (each carries a whole batch of operations)."""
        self._store = JournalStore(self._connection)  # writer-thread state

    def __repr__(self) -> str:
        return f"SqliteJournal({self.path!r})"

    async def __aenter__(self) -> SqliteJournal:
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
        future = self._submit_waiting(_RUN, retry_failed)
        return int(await future)

    def claim(self, fulfillment: Fulfillment) -> Awaitable[Claim]:
        return self._submit_waiting(_CLAIM, fulfillment)

    async def mark_done(self, key: str, result: ConsumeResult) -> None:
        await self._mark(DONE, done_row(key, result))

    async def mark_failed(self, key: str, error: StoreError) -> None:
        await self._mark(FAILED, error_row(key, error))

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        await self._mark(UNKNOWN, error_row(key, error))

    async def flush(self) -> None:
        if self._thread is None and self._broken is None:
            return  # nothing was ever queued
        await self._submit_waiting(_FLUSH, None)

    async def close(self) -> None:
        """Commit everything queued, stop the writer thread and release the file."""
        if self._closed:
            return
        self._closed = True  # refuse new work from here on
        try:
            if self._thread is not None:
                assert self._loop is not None
                done: asyncio.Future[Any] = self._loop.create_future()
                self._queue.put((_CLOSE, None, done))
                await done
                await asyncio.to_thread(self._thread.join)
        finally:
            self._connection.close()
            os.close(self._lock_fd)  # after the connection: closing an fd drops POSIX locks

    # -- event-loop side ----------------------------------------------------------------------

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._writer, name=f"store_async journal {self.path}", daemon=True
        )
        self._thread.start()

    def _submit_waiting(self, kind: int, payload: object) -> asyncio.Future[Any]:
        if self._thread is None and not self._closed:
            self._start()
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(JournalError(f"journal {self.path} is closed"))
        elif self._broken is not None:
            future.set_exception(JournalError(self._broken))
            future.exception()  # retrieved: see _settle
        else:
            self._queue.put((kind, payload, future))
        return future

    async def _mark(self, statement: str, row: tuple[Any, ...]) -> None:
        if self._broken is not None:
            return  # the row stays pending; claims and flush report the failure
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        if self._thread is None:
            self._start()
        self._lazy_marks += 1
        self._queue.put((_MARK, statement, row))
        if self._lazy_marks > self._max_lazy_marks:
            await self.flush()

    def _settle(self, results: list[tuple[asyncio.Future[Any], Any]], marks: int) -> None:
        self._lazy_marks -= marks
        for future, value in results:
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
        """Serve the queue: one transaction and one commit per batch of queued operations."""
        assert self._loop is not None
        get, get_nowait = self._queue.get, self._queue.get_nowait
        running = True
        while running:
            batch = [get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            running = all(operation[0] != _CLOSE for operation in batch)
            results: list[tuple[asyncio.Future[Any], Any]] = []
            if self._broken is None:
                try:
                    self._apply(batch, results)
                except Exception as error:  # the writer must never die
                    # A thread that died here would leave every waiter hanging. SQLite's own
                    # messages name no values; others (a string SQLite cannot encode) might.
                    detail = (
                        str(error) if isinstance(error, sqlite3.Error) else type(error).__name__
                    )
                    self._broken = f"journal {self.path} could not be written: {detail}"
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("ROLLBACK")
            if self._broken is not None:
                # Nothing of this batch is committed; fail every waiter (marks have none).
                results = [
                    (op[2], None if op[0] == _CLOSE else JournalError(self._broken))
                    for op in batch
                    if op[0] != _MARK
                ]
            marks = sum(1 for operation in batch if operation[0] == _MARK)
            self._loop.call_soon_threadsafe(self._settle, results, marks)

    def _apply(
        self, batch: list[tuple[Any, ...]], results: list[tuple[asyncio.Future[Any], Any]]
    ) -> None:
        """Apply ``batch`` in one transaction; collect each waiter's answer in ``results``.

        Consecutive claims are decided together, consecutive marks of one kind written with one
        ``executemany``. Reordering is not needed: operations run in arrival order.
        """
        connection, store = self._connection, self._store
        connection.execute("BEGIN IMMEDIATE")
        now = time.time()
        index, size = 0, len(batch)
        while index < size:
            operation = batch[index]
            kind = operation[0]
            end = index + 1
            if kind == _CLAIM:
                while end < size and batch[end][0] == _CLAIM:
                    end += 1
                run = batch[index:end]
                claims = store.claim_all([op[1] for op in run], now)
                results.extend((op[2], claim) for op, claim in zip(run, claims, strict=True))
            elif kind == _MARK:
                statement = operation[1]
                while end < size and batch[end][0] == _MARK and batch[end][1] is statement:
                    end += 1
                store.mark(statement, [op[2] for op in batch[index:end]])
            elif kind == _RUN:
                results.append((operation[2], store.begin_run(operation[1], os.getpid(), now)))
            else:  # _FLUSH or _CLOSE: a barrier, settled once this batch is committed
                results.append((operation[2], None))
            index = end
        connection.execute("COMMIT")
        self.commits += 1


def _lock(path: str) -> int:
    """Create the file (mode 0600) if needed and take an exclusive ``flock`` on it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise JournalError(f"cannot open journal {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(
            f"journal {path} is in use by another process (one writer at a time)"
        ) from None
    return fd
