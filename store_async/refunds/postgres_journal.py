"""``PostgresRefundJournal``: refund events in a PostgreSQL database (asyncpg).

The same :class:`~store_async.refunds.RefundJournal` as the SQLite file, in tables of its own
(``store_async_refund_*``) beside a fleet's fulfillment journal in the same database: the
fulfillment schema needs no migration, and the two schemas are versioned apart (each its own
version table, created and migrated under its own advisory lock).

Once per event id
    A received batch is recorded in one transaction: ``INSERT ... ON CONFLICT (event_id) DO
    NOTHING RETURNING event_id`` says which ids are new (*recorded*) and which were there
    (*duplicates*, whose ``deliveries`` grow by one per copy); rejected messages the same way,
    keyed by queue message id. The transaction sets ``synchronous_commit = on`` for itself: a
    batch is durable when :meth:`~PostgresRefundJournal.record` returns, whatever the server's
    default, because the sync deletes the batch's messages next.

Many syncers on one database
    Every ``record`` takes one transaction-scoped advisory lock first, so batches from several
    processes commit one at a time, in the order their ``sequence`` numbers were drawn. Without
    it a reader paging by ``sequence > after`` (the feed, keyset pages, no ``OFFSET``) could pass
    a lower number that commits after a higher one, and miss that event until its next run.
    The lock also rules out deadlocks between two batches holding the same ids in other orders.
    A batch is at most 32 messages: the lock is held for milliseconds.

Handled marks
    ``UPDATE ... SET handled_at = now() WHERE event_id = $1 AND handled_at IS NULL``: conditional
    and idempotent; ``True`` for exactly one caller, whichever process it is in.

What PostgreSQL cannot hold
    ``text`` columns refuse the NUL character. A message's raw text is kept as UTF-8 ``bytea``
    (whatever it holds); an event whose id, state or order fields contain NUL (possible only
    through a JSON ``\\u0000`` escape) is recorded as *rejected*, with its decoded JSON as the
    text, rather than failing the batch for ever (the SQLite journal records it as an event).

Passwords: asyncpg reads them from the DSN, ``PGPASSWORD`` or a passfile. This module shows the
DSN only through :func:`~store_async._dsn.redact_dsn` and scrubs the password out of every
error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from store_async._dsn import dsn_password, redact_dsn, scrub
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

if TYPE_CHECKING:
    import asyncpg

__all__ = ["SCHEMA_VERSION", "PostgresRefundJournal"]

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 1
_SCHEMA_LOCK: Final = 0x53415231  # "SAR1": taken while creating/migrating the schema
_RECORD_LOCK: Final = 0x53415232  # "SAR2": batches commit one at a time (see the docstring)
_PAGE: Final = 500
_INSTALL_HINT: Final = (
    "a PostgreSQL refund journal needs asyncpg: pip install 'store-async[postgres]'"
)

_CREATE: Final = (
    """
    CREATE TABLE store_async_refund_version (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        migrated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    # ``event_json`` is the event exactly as decoded from the queue (bytea: byte for byte);
    # ``event_state`` and ``bundle_key`` are copied out of it for filters and for people.
    """
    CREATE TABLE store_async_refund_events (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id text NOT NULL UNIQUE,
        bundle_key text NOT NULL,
        event_state text NOT NULL,
        event_json bytea NOT NULL,
        message_id text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        deliveries integer NOT NULL DEFAULT 1,
        handled_at timestamptz
    )
    """,
    """
    CREATE INDEX store_async_refund_events_unhandled
    ON store_async_refund_events (sequence) WHERE handled_at IS NULL
    """,
    """
    CREATE TABLE store_async_refund_rejected (
        sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id text NOT NULL UNIQUE,
        reason text NOT NULL,
        message_text bytea NOT NULL,
        dequeue_count integer NOT NULL,
        rejected_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)

# Migrations from version N to N + 1, applied in order under the schema lock (none yet).
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {}

# The first copy of each id in the batch is inserted, in batch order (so ``sequence`` follows
# the queue's order); ids already in the table are left alone and not returned.
_INSERT_EVENTS: Final = """
    WITH v AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[])
            WITH ORDINALITY AS v(event_id, bundle_key, event_state, event_json, message_id, n)
    ), first AS (
        SELECT DISTINCT ON (event_id) * FROM v ORDER BY event_id, n
    )
    INSERT INTO store_async_refund_events
        (event_id, bundle_key, event_state, event_json, message_id)
    SELECT event_id, bundle_key, event_state, event_json, message_id FROM first ORDER BY n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
"""
_REDELIVERED: Final = """
    UPDATE store_async_refund_events AS e SET deliveries = e.deliveries + x.n
    FROM unnest($1::text[], $2::integer[]) AS x(event_id, n) WHERE e.event_id = x.event_id
"""
_INSERT_REJECTED: Final = """
    WITH v AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::integer[])
            WITH ORDINALITY AS v(message_id, reason, message_text, dequeue_count, n)
    ), first AS (
        SELECT DISTINCT ON (message_id) * FROM v ORDER BY message_id, n
    )
    INSERT INTO store_async_refund_rejected (message_id, reason, message_text, dequeue_count)
    SELECT message_id, reason, message_text, dequeue_count FROM first ORDER BY n
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
"""
_MARK_HANDLED: Final = """
    UPDATE store_async_refund_events SET handled_at = now()
    WHERE event_id = $1 AND handled_at IS NULL
"""
_EVENT_COLUMNS: Final = """sequence, event_id, bundle_key, event_state, event_json, message_id,
    extract(epoch FROM received_at)::float8 AS received_at, deliveries,
    extract(epoch FROM handled_at)::float8 AS handled_at"""
_SELECT_REJECTED: Final = """
    SELECT sequence, message_id, reason, message_text, dequeue_count,
        extract(epoch FROM rejected_at)::float8 AS rejected_at
    FROM store_async_refund_rejected WHERE sequence > $1 ORDER BY sequence LIMIT $2
"""
_COUNTS: Final = """
    SELECT count(*) AS events, count(handled_at) AS handled,
        coalesce(sum(deliveries), 0)::bigint AS deliveries,
        (SELECT count(*) FROM store_async_refund_rejected) AS rejected
    FROM store_async_refund_events
"""


def _text_bytes(text: str) -> bytes:
    # surrogatepass: any Python str survives the round trip, even one no UTF-8 codec accepts.
    return text.encode("utf-8", "surrogatepass")


def _event_values(message: ReceivedMessage) -> tuple[str, str, str, bytes, str] | None:
    """The event row of a decoded message, or ``None`` when PostgreSQL text cannot hold it."""
    decoded = message.decoded
    assert isinstance(decoded, DecodedEvent)
    event = decoded.event
    values = (event.id, event.bundle_key, state_name(event.state))
    if any("\x00" in value for value in values):
        return None
    return (*values, decoded.json, message.message_id)


async def _prepare(connection: asyncpg.Connection, where: str, *, create: bool) -> int:
    """Create or migrate the schema (``create``) and return its version; refuse a newer one."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        exists = await connection.fetchval(
            "SELECT to_regclass('store_async_refund_version') IS NOT NULL"
        )
        if not exists:
            if not create:
                raise RefundJournalError(
                    f"no refund journal in {where}: no refund event was recorded there yet"
                )
            for statement in _CREATE:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO store_async_refund_version (version) VALUES ($1)", SCHEMA_VERSION
            )
            return SCHEMA_VERSION
        version = await connection.fetchval("SELECT version FROM store_async_refund_version")
        if not isinstance(version, int) or version < 1:
            raise RefundJournalError(
                f"{where} holds a damaged store_async refund journal (no schema version)"
            )
        if version > SCHEMA_VERSION:
            raise RefundJournalError(
                f"{where} holds a refund journal of schema version {version}, written by a "
                f"newer store_async; this one reads version {SCHEMA_VERSION}: upgrade store_async"
            )
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                await connection.execute(statement)
            version += 1
            await connection.execute(
                "UPDATE store_async_refund_version SET version = $1, migrated_at = now()", version
            )
        return version


def _event(row: Any) -> JournaledEvent:
    return JournaledEvent(
        sequence=row["sequence"],
        event_id=row["event_id"],
        bundle_key=row["bundle_key"],
        state=row["event_state"],
        json=bytes(row["event_json"]),
        message_id=row["message_id"],
        received_at=row["received_at"],
        deliveries=row["deliveries"],
        handled_at=row["handled_at"],
    )


class PostgresRefundJournal:
    """A :class:`~store_async.refunds.RefundJournal` in a PostgreSQL database (see the module
    docstring).

    :param dsn: ``postgresql://user@host:port/database`` (a password may be in it, but prefer
        ``PGPASSWORD`` or a passfile: a command line is visible to every local user).
    :param create: ``False`` to refuse a database without a refund journal (readers such as
        ``refunds export``) instead of creating the tables.
    :param pool_size: connections to the database at most (a sync and a feed in one process
        use one each).

    Open it with ``async with`` (or :meth:`open` and :meth:`close`). Raises
    :class:`~store_async.refunds.RefundJournalError` when the database cannot be reached, holds
    no refund journal (``create=False``) or one of a newer schema.
    """

    def __init__(self, dsn: str, *, create: bool = True, pool_size: int = 2) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise RefundJournalError("pool_size must be an int >= 1")
        self._dsn = dsn
        self.where = redact_dsn(dsn)
        """The DSN without its password: safe to print."""
        self._create = create
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresRefundJournal({self.where!r})"

    async def __aenter__(self) -> PostgresRefundJournal:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connection ---------------------------------------------------------------------------

    def _error(self, error: BaseException, doing: str) -> RefundJournalError:
        """A :class:`RefundJournalError` for ``error``, without the password (servers and
        drivers may echo the DSN)."""
        detail = str(error) or type(error).__name__
        detail = scrub(detail, dsn_password(self._dsn), os.environ.get("PGPASSWORD"))
        return RefundJournalError(f"refund journal {self.where}: {doing}: {detail}")

    async def open(self) -> None:
        """Connect, and create or migrate the schema (see ``create``). Opening twice is fine."""
        if self._closed:
            raise RefundJournalError(f"refund journal {self.where} is closed")
        if self._pool is not None:
            return
        try:
            import asyncpg
        except ImportError:
            raise RefundJournalError(_INSTALL_HINT) from None
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, command_timeout=60
            )
            async with self._pool.acquire() as connection:
                await _prepare(connection, self.where, create=self._create)
        except RefundJournalError:
            await self._drop_pool()
            raise
        except Exception as error:  # asyncpg's DSN parser raises plain exceptions too
            await self._drop_pool()
            raise self._error(error, "cannot open") from None

    async def _drop_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)

    async def close(self) -> None:
        """Disconnect. The journal cannot be used afterwards; closing twice is fine."""
        self._closed = True
        await self._drop_pool()

    async def _run(
        self, work: Callable[[asyncpg.Connection], Awaitable[_T]], doing: str, *, atomic: bool
    ) -> _T:
        """``work`` on a pooled connection (in one transaction when ``atomic``); database
        errors become :class:`RefundJournalError`."""
        import asyncpg

        if self._pool is None:
            state = "closed" if self._closed else "not open (use async with, or open())"
            raise RefundJournalError(f"refund journal {self.where} is {state}")
        try:
            async with self._pool.acquire() as connection:
                if not atomic:
                    return await work(connection)
                async with connection.transaction():
                    return await work(connection)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise self._error(error, doing) from None

    # -- the protocol --------------------------------------------------------------------------

    async def record(self, messages: Sequence[ReceivedMessage]) -> list[RecordOutcome]:
        batch = list(messages)
        events: list[tuple[int, tuple[str, str, str, bytes, str]]] = []
        rejected: list[tuple[int, tuple[str, str, bytes, int]]] = []
        for index, message in enumerate(batch):
            decoded = message.decoded
            if isinstance(decoded, DecodedEvent):
                values = _event_values(message)
                if values is not None:
                    events.append((index, values))
                    continue
                reason = "the event's id, state or order fields hold a NUL character"
                text = decoded.json.decode()  # orjson read it: valid UTF-8
            else:
                reason, text = decoded.reason, decoded.text
            rejected.append(
                (index, (message.message_id, reason, _text_bytes(text), message.dequeue_count))
            )

        async def work(connection: asyncpg.Connection) -> list[RecordOutcome]:
            # One round trip: durability for this transaction, then the batch lock.
            await connection.execute(
                f"SET LOCAL synchronous_commit = on; SELECT pg_advisory_xact_lock({_RECORD_LOCK})"
            )
            outcomes = [RecordOutcome.DUPLICATE] * len(batch)
            if events:
                columns = [list(column) for column in zip(*(v for _, v in events), strict=True)]
                new = {row[0] for row in await connection.fetch(_INSERT_EVENTS, *columns)}
                copies: dict[str, int] = {}
                for index, values in events:
                    event_id = values[0]
                    if event_id in new:
                        new.discard(event_id)  # the first copy in the batch is the record
                        outcomes[index] = RecordOutcome.RECORDED
                    else:
                        copies[event_id] = copies.get(event_id, 0) + 1
                if copies:
                    await connection.execute(_REDELIVERED, list(copies), list(copies.values()))
            if rejected:
                columns = [list(column) for column in zip(*(v for _, v in rejected), strict=True)]
                new = {row[0] for row in await connection.fetch(_INSERT_REJECTED, *columns)}
                for index, (message_id, *_) in rejected:
                    if message_id in new:
                        new.discard(message_id)
                        outcomes[index] = RecordOutcome.REJECTED
            return outcomes

        if not batch:
            return []
        return await self._run(work, "cannot record a batch", atomic=True)

    async def unhandled(self, *, after: int = 0, limit: int = 100) -> list[JournaledEvent]:
        return await self._select(after, limit, (), True)

    async def mark_handled(self, event_id: str) -> bool:
        if "\x00" in event_id:
            return False  # never recorded (see the module docstring)

        async def work(connection: asyncpg.Connection) -> bool:
            status = await connection.execute(_MARK_HANDLED, event_id)
            return bool(status == "UPDATE 1")

        return await self._run(work, "cannot mark an event handled", atomic=False)

    async def events(
        self, *, states: Sequence[str] = (), unhandled_only: bool = False
    ) -> AsyncIterator[JournaledEvent]:
        wanted = tuple(state.lower() for state in states)
        after = 0
        while True:
            page = await self._select(after, _PAGE, wanted, unhandled_only)
            for event in page:
                yield event
            if len(page) < _PAGE:
                return
            after = page[-1].sequence

    async def _select(
        self, after: int, limit: int, states: tuple[str, ...], unhandled_only: bool
    ) -> list[JournaledEvent]:
        where = ["sequence > $1"]
        parameters: list[Any] = [after, limit]
        if unhandled_only:
            where.append("handled_at IS NULL")
        if states:
            parameters.append(list(states))
            where.append(f"lower(event_state) = ANY(${len(parameters)}::text[])")
        query = (
            f"SELECT {_EVENT_COLUMNS} FROM store_async_refund_events "
            f"WHERE {' AND '.join(where)} ORDER BY sequence LIMIT $2"
        )

        async def work(connection: asyncpg.Connection) -> list[JournaledEvent]:
            return [_event(row) for row in await connection.fetch(query, *parameters)]

        return await self._run(work, "cannot read events", atomic=False)

    async def rejected(self) -> AsyncIterator[RejectedMessage]:
        after = 0
        while True:
            page = await self._select_rejected(after)
            for row in page:
                after = row["sequence"]
                yield RejectedMessage(
                    message_id=row["message_id"],
                    reason=row["reason"],
                    text=bytes(row["message_text"]).decode("utf-8", "surrogatepass"),
                    dequeue_count=row["dequeue_count"],
                    rejected_at=row["rejected_at"],
                )
            if len(page) < _PAGE:
                return

    async def _select_rejected(self, after: int) -> list[Any]:
        async def work(connection: asyncpg.Connection) -> list[Any]:
            return list(await connection.fetch(_SELECT_REJECTED, after, _PAGE))

        return await self._run(work, "cannot read rejected messages", atomic=False)

    async def counts(self) -> RefundJournalCounts:
        async def work(connection: asyncpg.Connection) -> RefundJournalCounts:
            row = await connection.fetchrow(_COUNTS)
            return RefundJournalCounts(
                events=row["events"],
                handled=row["handled"],
                rejected=row["rejected"],
                deliveries=row["deliveries"],
            )

        return await self._run(work, "cannot count", atomic=False)
