"""The SQLite journal's file format: schema, version checks, and opening a connection.

A journal file is recognised by ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and versioned
by ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`); both are set in the same transaction that
creates the tables, so a file is either empty, a complete journal, or not ours.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Final, Literal

from store_async.fulfillment.journal import JournalError

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Synchronous", "connect", "schema_version"]

APPLICATION_ID: Final = 0x53414A31  # "SAJ1": store_async journal
SCHEMA_VERSION: Final = 2
"""1: v6 consumes. 2: v8 consumes too (quantity, sandbox, order ids of the first answer)."""

Synchronous = Literal["full", "normal"]

# One row per caller key in ``fulfillments``; the beneficiaries (Store ID key, ticket reference)
# live in their own table, written once per distinct user: a Store ID key is a kilobyte or more,
# and keeping it out of the rows keeps them narrow, so that marking a row done rewrites ~150
# bytes, not 1.5 KB. ``idempotency_key`` is the trackingId of a consume by item or the
# transactionId of a consume by transaction. ``key`` is UNIQUE: a key is bound to one
# idempotency key for ever. An idempotency key the *caller* chose (a given trackingId, every
# transactionId) is UNIQUE too, so two keys cannot share one; generated tracking ids (122 random
# bits) are left out of that index, whose random inserts would cost more than the whole row.
# ``state`` is 'pending', 'done' or 'failed'; exactly one of ``item_id`` and ``product_id`` is
# set. The code guarantees both: CHECK constraints for them doubled the cost of an insert.
_SCHEMA: Final = (
    """
    CREATE TABLE beneficiaries (
        id INTEGER PRIMARY KEY,
        identity_type TEXT NOT NULL,
        identity_value TEXT NOT NULL,
        local_ticket_reference TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE fulfillments (
        key TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL,
        caller_chosen INTEGER NOT NULL,
        item_id TEXT,
        product_id TEXT,
        beneficiary_id INTEGER NOT NULL REFERENCES beneficiaries (id),
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        correlation_id TEXT,
        request_id TEXT,
        cv TEXT,
        error_type TEXT,
        error_status INTEGER,
        error_code TEXT,
        error_inner_code TEXT,
        error_message TEXT,
        run_id INTEGER NOT NULL,
        line INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE UNIQUE INDEX fulfillments_caller_chosen_idempotency_key
    ON fulfillments (idempotency_key) WHERE caller_chosen = 1
    """,
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        pid INTEGER NOT NULL,
        retry_failed INTEGER NOT NULL
    )
    """,
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
)
# Version 2 (v8 consume): a row with ``remove_quantity`` is a v8 consume of ``product_id``
# under the trackingId in ``idempotency_key``; the Store deduplicates on all of trackingId,
# user, product and quantity, so the journal keeps them to refuse a key with other values.
# ``new_quantity`` and ``order_transactions`` (JSON ``[[orderId, orderLineItemId,
# quantityConsumed], ...]``) are the first answer's: a developer-managed replay returns no
# order ids. Added columns, so a version-1 file is upgraded in place (one transaction) when
# opened for writing.
_V2: Final = (
    "ALTER TABLE fulfillments ADD COLUMN remove_quantity INTEGER",
    "ALTER TABLE fulfillments ADD COLUMN include_order_ids INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE fulfillments ADD COLUMN sandbox_id TEXT",
    "ALTER TABLE fulfillments ADD COLUMN new_quantity INTEGER",
    "ALTER TABLE fulfillments ADD COLUMN order_transactions TEXT",
    "PRAGMA user_version = 2",
)


def connect(
    path: str | os.PathLike[str], *, readonly: bool, synchronous: Synchronous = "full"
) -> sqlite3.Connection:
    """Open (creating it if needed, unless ``readonly``) and check a journal file.

    Raises :class:`JournalError` for a missing file (``readonly``), a file that is not a SQLite
    database or not a journal, a journal of a newer schema, or an unusable path.
    """
    name = os.fspath(path)
    try:
        if readonly:
            if not os.path.isfile(name):
                raise JournalError(f"no journal file at {name}")
            uri = f"file:{urllib.parse.quote(os.path.abspath(name))}?mode=ro"
            connection = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            connection = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise JournalError(f"cannot open journal {name}: {error}") from None
    try:
        _prepare(connection, name, readonly=readonly, synchronous=synchronous)
    except BaseException:
        connection.close()
        raise
    return connection


def _prepare(
    connection: sqlite3.Connection, name: str, *, readonly: bool, synchronous: Synchronous
) -> None:
    try:
        connection.execute("PRAGMA busy_timeout = 10000")
        application_id, version, objects = _identity(connection)
        if application_id == 0 and version == 0 and objects == 0:
            if readonly:
                raise JournalError(f"{name} is an empty file: no fulfillment was journaled yet")
            _create(connection, name)
            application_id, version, objects = _identity(connection)
        if application_id != APPLICATION_ID:
            raise JournalError(
                f"{name} is a SQLite database but not a store_async journal "
                f"(application_id {application_id:#x}); refusing to touch it"
            )
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{name} is a journal of schema version {version}, written by a newer "
                f"store_async; this version reads version {SCHEMA_VERSION}: upgrade store_async"
            )
        if version < 1:
            raise JournalError(f"{name} is a damaged journal (schema version {version})")
        if version < SCHEMA_VERSION and not readonly:
            _upgrade(connection)
        if not readonly:
            # WAL: readers (``store-async journal``, progress polls) never block the writer, and
            # a commit is one append. FULL fsyncs the WAL at each (group) commit, so an intent
            # row survives power loss, not only a process crash; see SqliteJournal.
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            # 8 MiB of page cache: a run touches the recent pages (claims, and their marks
            # ~1,000 rows later); the operating system caches the rest. At 32 MiB a
            # 1,000,000-line run grew the writer by 20 MiB for no measurable speed.
            connection.execute("PRAGMA cache_size = -8192")
    except sqlite3.DatabaseError as error:
        raise JournalError(f"{name} is not a usable store_async journal: {error}") from None


def _identity(connection: sqlite3.Connection) -> tuple[int, int, int]:
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    objects = connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    return int(application_id), int(version), int(objects)


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version of an open journal (a reader may see an older one)."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _upgrade(connection: sqlite3.Connection) -> None:
    """Version 1 -> 2 in one transaction (a crash leaves version 1, intact)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if schema_version(connection) == 1:  # another process may have upgraded it meanwhile
            for statement in _V2:
                connection.execute(statement)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _create(connection: sqlite3.Connection, name: str) -> None:
    """Create the schema in one transaction (a crash leaves the file empty, never half made)."""
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created it between our check and our lock.
        if connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0:
            for statement in (*_SCHEMA, *_V2):
                connection.execute(statement)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
