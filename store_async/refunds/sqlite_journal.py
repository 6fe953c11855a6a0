"""``SqliteRefundJournal``: the embedded refund journal, one SQLite file of its own.

A refund journal is its own file (``PRAGMA application_id`` "SAR1"), not tables inside the
fulfillment journal: ``--journal PATH`` of ``store-async refunds`` then names exactly one kind
of file, the fulfillment schema needs no migration, and a refund sync never waits for the
fulfillment writer's lock (or the other way round). Opening a fulfillment journal here fails
with a clear error.

One worker thread owns the connection; every method runs there, so calls are serialised and
the event loop never blocks on a commit. WAL with ``synchronous=FULL``: a recorded batch
survives power loss before its messages are deleted from the queue.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from store_async.refunds.journal import (
    JournaledEvent,
    ReceivedMessage,
    RecordOutcome,
    RefundJournalCounts,
    RefundJournalError,
    RejectedMessage,
    state_name,
)
from store_async.refunds.message import DecodedEvent

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SqliteRefundJournal"]

T = TypeVar("T")

APPLICATION_ID: Final = 0x53415231  # "SAR1": store_async refund journal
SCHEMA_VERSION: Final = 1
_FULFILLMENT_JOURNAL: Final = 0x53414A31  # "SAJ1", named only for a helpful error
_PAGE: Final = 500

# ``event_json`` is the event as decoded from the queue (what `refunds export` prints);
# ``event_state`` and ``bundle_key`` are copied out of it for filters and for people reading the
# file. ``deliveries`` counts copies received (duplicates, redeliveries after a crash).
_SCHEMA: Final = (
    """
    CREATE TABLE refund_events (
        sequence INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        bundle_key TEXT NOT NULL,
        event_state TEXT NOT NULL,
        event_json BLOB NOT NULL,
        message_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        handled_at REAL
    )
    """,
    "CREATE INDEX refund_events_unhandled ON refund_events (sequence) WHERE handled_at IS NULL",
    """
    CREATE TABLE rejected_messages (
        sequence INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        message_text TEXT NOT NULL,
        dequeue_count INTEGER NOT NULL,
        rejected_at REAL NOT NULL
    )
    """,
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_INSERT_EVENT: Final = """
    INSERT OR IGNORE INTO refund_events
        (event_id, bundle_key, event_state, event_json, message_id, received_at)
    VALUES (?, ?, ?, ?, ?, ?)
"""
_REDELIVERED: Final = "UPDATE refund_events SET deliveries = deliveries + 1 WHERE event_id = ?"
_INSERT_REJECTED: Final = """
    INSERT OR IGNORE INTO rejected_messages
        (message_id, reason, message_text, dequeue_count, rejected_at)
    VALUES (?, ?, ?, ?, ?)
"""
_EVENT_COLUMNS: Final = """sequence, event_id, bundle_key, event_state, event_json, message_id,
    received_at, deliveries, handled_at"""


class SqliteRefundJournal:
    """A :class:`~store_async.refunds.RefundJournal` in one SQLite file.

    :param path: the journal file (created with its schema when missing or empty).
    :param create: ``False`` to refuse a missing file (readers such as ``refunds export``).
    :param synchronous: ``"full"`` (default: each record survives power loss) or ``"normal"``
        (survives a process crash only).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, synchronous: str = "full"
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise RefundJournalError("synchronous must be 'full' or 'normal'")
        self._path = os.fspath(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refund-journal")
        try:
            self._connection = self._executor.submit(self._open, create, synchronous).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    # -- opening -------------------------------------------------------------------------------

    def _open(self, create: bool, synchronous: str) -> sqlite3.Connection:
        name = self._path
        if not create and not os.path.isfile(name):
            raise RefundJournalError(f"no refund journal at {name}")
        try:
            connection = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise RefundJournalError(f"cannot open refund journal {name}: {error}") from None
        try:
            connection.execute("PRAGMA busy_timeout = 10000")
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            objects = connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if application_id == 0 and version == 0 and objects == 0:
                if not create:
                    raise RefundJournalError(f"{name} is empty: no refund event was recorded yet")
                self._create(connection)
                application_id = APPLICATION_ID
                version = SCHEMA_VERSION
            if application_id == _FULFILLMENT_JOURNAL:
                raise RefundJournalError(
                    f"{name} is a fulfillment journal; refund events go to a journal file of "
                    "their own (give `store-async refunds` another --journal path)"
                )
            if application_id != APPLICATION_ID:
                raise RefundJournalError(
                    f"{name} is a SQLite database but not a store_async refund journal "
                    f"(application_id {application_id:#x}); refusing to touch it"
                )
            if version > SCHEMA_VERSION:
                raise RefundJournalError(
                    f"{name} is a refund journal of schema version {version}, written by a "
                    f"newer store_async; this one reads version {SCHEMA_VERSION}"
                )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise RefundJournalError(f"{name} is not a usable refund journal: {error}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def _create(connection: sqlite3.Connection) -> None:
        """The schema in one transaction: a crash leaves the file empty, never half made."""
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN IMMEDIATE")
        try:
            if connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0:
                for statement in _SCHEMA:
                    connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    # -- the protocol --------------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RefundJournalError("the refund journal is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as error:
            raise RefundJournalError(f"refund journal {self._path}: {error}") from None

    async def record(self, messages: Sequence[ReceivedMessage]) -> list[RecordOutcome]:
        return await self._run(self._record, list(messages), time.time())

    def _record(self, messages: list[ReceivedMessage], now: float) -> list[RecordOutcome]:
        connection = self._connection
        outcomes = []
        connection.execute("BEGIN IMMEDIATE")
        try:
            for message in messages:
                decoded = message.decoded
                if isinstance(decoded, DecodedEvent):
                    event = decoded.event
                    cursor = connection.execute(
                        _INSERT_EVENT,
                        (
                            event.id,
                            event.bundle_key,
                            state_name(event.state),
                            decoded.json,
                            message.message_id,
                            now,
                        ),
                    )
                    if cursor.rowcount == 1:
                        outcomes.append(RecordOutcome.RECORDED)
                    else:
                        connection.execute(_REDELIVERED, (event.id,))
                        outcomes.append(RecordOutcome.DUPLICATE)
                else:
                    cursor = connection.execute(
                        _INSERT_REJECTED,
                        (message.message_id, decoded.reason, decoded.text,
                         message.dequeue_count, now),
                    )  # fmt: skip
                    rejected = cursor.rowcount == 1
                    outcomes.append(RecordOutcome.REJECTED if rejected else RecordOutcome.DUPLICATE)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return outcomes

    async def unhandled(self, *, after: int = 0, limit: int = 100) -> list[JournaledEvent]:
        return await self._run(self._select, after, limit, (), True)

    async def mark_handled(self, event_id: str) -> bool:
        return await self._run(self._mark_handled, event_id, time.time())

    def _mark_handled(self, event_id: str, now: float) -> bool:
        cursor = self._connection.execute(
            "UPDATE refund_events SET handled_at = ? WHERE event_id = ? AND handled_at IS NULL",
            (now, event_id),
        )
        return cursor.rowcount == 1

    async def events(
        self, *, states: Sequence[str] = (), unhandled_only: bool = False
    ) -> AsyncIterator[JournaledEvent]:
        wanted = tuple(state.lower() for state in states)
        after = 0
        while True:
            page = await self._run(self._select, after, _PAGE, wanted, unhandled_only)
            for event in page:
                yield event
            if len(page) < _PAGE:
                return
            after = page[-1].sequence

    def _select(
        self, after: int, limit: int, states: tuple[str, ...], unhandled_only: bool
    ) -> list[JournaledEvent]:
        where = ["sequence > ?"]
        parameters: list[Any] = [after]
        if unhandled_only:
            where.append("handled_at IS NULL")
        if states:
            where.append(f"lower(event_state) IN ({', '.join('?' * len(states))})")
            parameters.extend(states)
        rows = self._connection.execute(
            f"SELECT {_EVENT_COLUMNS} FROM refund_events WHERE {' AND '.join(where)} "
            "ORDER BY sequence LIMIT ?",
            (*parameters, limit),
        ).fetchall()
        return [
            JournaledEvent(
                sequence=row[0],
                event_id=row[1],
                bundle_key=row[2],
                state=row[3],
                json=bytes(row[4]),
                message_id=row[5],
                received_at=row[6],
                deliveries=row[7],
                handled_at=row[8],
            )
            for row in rows
        ]

    async def rejected(self) -> AsyncIterator[RejectedMessage]:
        after = 0
        while True:
            page = await self._run(self._select_rejected, after)
            for sequence, message in page:
                after = sequence
                yield message
            if len(page) < _PAGE:
                return

    def _select_rejected(self, after: int) -> list[tuple[int, RejectedMessage]]:
        rows = self._connection.execute(
            "SELECT sequence, message_id, reason, message_text, dequeue_count, rejected_at "
            "FROM rejected_messages WHERE sequence > ? ORDER BY sequence LIMIT ?",
            (after, _PAGE),
        ).fetchall()
        return [
            (
                row[0],
                RejectedMessage(
                    message_id=row[1],
                    reason=row[2],
                    text=row[3],
                    dequeue_count=row[4],
                    rejected_at=row[5],
                ),
            )
            for row in rows
        ]

    async def counts(self) -> RefundJournalCounts:
        return await self._run(self._counts)

    def _counts(self) -> RefundJournalCounts:
        events, handled, deliveries = self._connection.execute(
            "SELECT count(*), count(handled_at), coalesce(sum(deliveries), 0) FROM refund_events"
        ).fetchone()
        (rejected,) = self._connection.execute("SELECT count(*) FROM rejected_messages").fetchone()
        return RefundJournalCounts(
            events=events, handled=handled, rejected=rejected, deliveries=deliveries
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connection.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteRefundJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"SqliteRefundJournal({self._path!r})"
