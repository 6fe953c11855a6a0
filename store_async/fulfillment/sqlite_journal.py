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
from typing import Any, Final

import attrs

from store_async.errors import StoreError
from store_async.fulfillment._schema import Synchronous, connect
from store_async.fulfillment.journal import (
    Claim,
    ClaimOutcome,
    FailureInfo,
    Fulfillment,
    JournalError,
)
from store_async.models import ConsumeRequest, ConsumeResult

__all__ = ["SqliteJournal"]

_INSERT: Final = """
    INSERT OR IGNORE INTO fulfillments (key, idempotency_key, item_id, product_id, identity_type,
        identity_value, local_ticket_reference, run_id, line, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_BY_KEY: Final = """
    SELECT idempotency_key, item_id, product_id, identity_type, local_ticket_reference, state,
        run_id, line, error_type, error_status, error_code, error_inner_code, error_message
    FROM fulfillments WHERE key = ?
"""
_RESEND: Final = """
    UPDATE fulfillments SET state = 'pending', run_id = ?, line = ?, identity_type = ?,
        identity_value = ?, updated_at = ? WHERE key = ?
"""
_DONE: Final = """
    UPDATE fulfillments SET state = 'done', attempts = attempts + ?, correlation_id = ?,
        request_id = ?, cv = ?, error_type = NULL, error_status = NULL, error_code = NULL,
        error_inner_code = NULL, error_message = NULL, updated_at = ? WHERE key = ?
"""
_ERROR_COLUMNS: Final = """attempts = attempts + ?, correlation_id = ?, request_id = ?, cv = ?,
        error_type = ?, error_status = ?, error_code = ?, error_inner_code = ?,
        error_message = ?, updated_at = ?"""
_FAILED: Final = f"UPDATE fulfillments SET state = 'failed', {_ERROR_COLUMNS} WHERE key = ?"
# An unknown outcome only records the attempt; the row stays as it is (pending).
_UNKNOWN: Final = f"UPDATE fulfillments SET {_ERROR_COLUMNS} WHERE key = ?"

# Queue operations: small tuples, the first element says which.
_CLAIM, _MARK, _FLUSH, _RUN, _CLOSE = range(5)

_SEND: Final = ClaimOutcome.SEND


def _error_row(key: str, error: StoreError) -> tuple[Any, ...]:
    info = FailureInfo.from_error(error)
    attempts = getattr(error, "attempts", None)
    return (
        attempts if isinstance(attempts, int) and attempts > 0 else 1,
        error.correlation_id,
        error.request_id,
        error.cv,
        info.error_type,
        info.status,
        info.code,
        info.inner_code,
        info.message,
        time.time(),
        key,
    )


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
        self._broken: JournalError | None = None
        self._closed = False
        self._lazy_marks = 0  # marks queued but not yet committed (event-loop thread only)
        self.commits = 0
        """Transactions committed so far (each carries a whole batch of operations)."""
        # Writer-thread state: the current run.
        self._run_id = 0
        self._retry_failed = False

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
        row = (
            result.attempts,
            result.correlation_id,
            result.request_id,
            result.cv,
            time.time(),
            key,
        )
        await self._mark(_DONE, row)

    async def mark_failed(self, key: str, error: StoreError) -> None:
        await self._mark(_FAILED, _error_row(key, error))

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        await self._mark(_UNKNOWN, _error_row(key, error))

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
            future.set_exception(self._broken)
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
                except sqlite3.Error as error:
                    self._broken = JournalError(
                        f"journal {self.path} could not be written: {error}"
                    )
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("ROLLBACK")
            if self._broken is not None:
                # Nothing of this batch is committed; fail every waiter (marks have none).
                results = [
                    (op[2], None if op[0] == _CLOSE else self._broken)
                    for op in batch
                    if op[0] != _MARK
                ]
            marks = sum(1 for operation in batch if operation[0] == _MARK)
            self._loop.call_soon_threadsafe(self._settle, results, marks)

    def _apply(
        self, batch: list[tuple[Any, ...]], results: list[tuple[asyncio.Future[Any], Any]]
    ) -> None:
        """Apply ``batch`` in one transaction; collect each waiter's answer in ``results``."""
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        now = time.time()
        for operation in batch:
            kind = operation[0]
            if kind == _MARK:
                connection.execute(operation[1], operation[2])
            elif kind == _CLAIM:
                results.append((operation[2], self._claim(operation[1], now)))
            elif kind == _RUN:
                results.append((operation[2], self._begin_run(operation[1], now)))
            else:  # _FLUSH or _CLOSE: a barrier, settled once this batch is committed
                results.append((operation[2], None))
        connection.execute("COMMIT")
        self.commits += 1

    def _begin_run(self, retry_failed: bool, now: float) -> int:
        cursor = self._connection.execute(
            "INSERT INTO runs (started_at, pid, retry_failed) VALUES (?, ?, ?)",
            (now, os.getpid(), int(retry_failed)),
        )
        self._run_id, self._retry_failed = int(cursor.lastrowid or 0), retry_failed
        return self._run_id

    def _claim(self, fulfillment: Fulfillment, now: float) -> Claim:
        """Decide one claim inside the open transaction (see :class:`ClaimOutcome`)."""
        request, key = fulfillment.request, fulfillment.key
        beneficiary = request.beneficiary
        idempotency_key = request.idempotency_key
        inserted = self._connection.execute(
            _INSERT,
            (
                key,
                idempotency_key,
                request.item_id,
                request.product_id,
                beneficiary.identity_type,
                beneficiary.identity_value,
                beneficiary.local_ticket_reference,
                self._run_id,
                fulfillment.line,
                now,
                now,
            ),
        ).rowcount
        if inserted == 1:
            return Claim(outcome=_SEND, request=request)
        row = self._connection.execute(_SELECT_BY_KEY, (key,)).fetchone()
        if row is None:
            return self._idempotency_key_taken(fulfillment)
        (journaled_key, item_id, product_id, identity_type, ticket, state, run_id, line) = row[:8]
        differing = _differences(
            fulfillment, journaled_key, item_id, product_id, identity_type, ticket
        )
        where = f"line {line}" if line is not None else "an earlier call"
        if differing:
            return Claim(
                outcome=ClaimOutcome.CONFLICT,
                detail=f"key {_show(key)} is journaled ({where}, run {run_id}) with a different "
                f"request: {', '.join(differing)} {'differs' if len(differing) == 1 else 'differ'}",
            )
        if run_id == self._run_id:
            return Claim(outcome=ClaimOutcome.DUPLICATE, detail=f"duplicate of {where}")
        if state == "done":
            return Claim(outcome=ClaimOutcome.ALREADY_DONE)
        if state == "failed" and not self._retry_failed:
            error_type, status, code, inner_code, message = row[8:]
            failure = FailureInfo(
                error_type=error_type or "StoreError",
                status=status,
                code=code,
                inner_code=inner_code,
                message=message or "",
            )
            return Claim(
                outcome=ClaimOutcome.ALREADY_FAILED,
                request=_with_idempotency_key(request, journaled_key),
                failure=failure,
            )
        # Resend under the journaled idempotency key, with the caller's current Store ID key
        # (keys expire and get renewed; the journal keeps the latest for export).
        self._connection.execute(
            _RESEND,
            (
                self._run_id,
                fulfillment.line,
                beneficiary.identity_type,
                beneficiary.identity_value,
                now,
                key,
            ),
        )
        return Claim(
            outcome=ClaimOutcome.RESEND, request=_with_idempotency_key(request, journaled_key)
        )

    def _idempotency_key_taken(self, fulfillment: Fulfillment) -> Claim:
        request = fulfillment.request
        name = "trackingId" if request.item_id is not None else "transactionId"
        other = self._connection.execute(
            "SELECT key, line FROM fulfillments WHERE idempotency_key = ?",
            (request.idempotency_key,),
        ).fetchone()
        if other is None:  # pragma: no cover - only a CHECK constraint could ignore the insert
            return Claim(
                outcome=ClaimOutcome.CONFLICT, detail="refused by the journal's constraints"
            )
        where = f" (line {other[1]})" if other[1] is not None else ""
        return Claim(
            outcome=ClaimOutcome.CONFLICT,
            detail=f"its {name} is already journaled under another key {_show(other[0])}{where}",
        )


def _with_idempotency_key(request: ConsumeRequest, journaled_key: str) -> ConsumeRequest:
    """``request`` under the journaled key (only a generated tracking id can differ here)."""
    if request.idempotency_key == journaled_key:
        return request
    return attrs.evolve(request, tracking_id=journaled_key)


def _differences(
    fulfillment: Fulfillment,
    journaled_key: str,
    item_id: str | None,
    product_id: str | None,
    identity_type: str,
    ticket: str,
) -> list[str]:
    """Names (never values) of the fields in which a claim differs from the journaled request.

    The Store ID key is not compared: it is a credential that expires and gets renewed, not part
    of what is being fulfilled.
    """
    request = fulfillment.request
    if (request.item_id is None) != (item_id is None):
        return ["the form (itemId+trackingId vs productId+transactionId)"]
    differing = []
    if request.item_id is not None:
        if request.item_id != item_id:
            differing.append("itemId")
        if fulfillment.caller_tracking_id and request.idempotency_key != journaled_key:
            differing.append("trackingId")
    else:
        if request.product_id != product_id:
            differing.append("productId")
        if request.idempotency_key != journaled_key:
            differing.append("transactionId")
    if request.beneficiary.local_ticket_reference != ticket:
        differing.append("beneficiary.localTicketReference")
    if request.beneficiary.identity_type != identity_type:
        differing.append("beneficiary.identityType")
    return differing


def _show(key: str) -> str:
    """A caller key for a message: keys are the caller's ids, not secrets, but may be long."""
    return repr(key if len(key) <= 80 else key[:77] + "...")


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
