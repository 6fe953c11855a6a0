"""The PostgreSQL journal's schema, its version table and migrations; DSN redaction.

The schema lives in the tables named ``store_async_*`` of the database the DSN names (its
default schema), so a journal can share a database with the publisher's own ledger. The
version table holds one row; :func:`prepare` creates or migrates the schema under a
transaction-scoped advisory lock, so workers that start together never race on it, and refuses a
schema newer than this library knows with a :class:`JournalError`.

Version 2 keeps v8 consumes whole (see ``_MIGRATIONS``). A new database is created at version 1
and migrated like an old one: every database of a version went through the same statements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

# The DSN helpers live in a module of their own (the refund journal uses them too); they are
# re-exported here for the fulfillment modules that import them from this one.
from store_async._dsn import dsn_password, is_postgres_dsn, redact_dsn
from store_async.fulfillment.journal import JournalError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["SCHEMA_VERSION", "dsn_password", "is_postgres_dsn", "prepare", "redact_dsn"]

SCHEMA_VERSION: Final = 2
_LOCK_ID: Final = 0x53414A31  # "SAJ1": the advisory lock taken while creating/migrating

# The lease unit is the *user* (store_async_users): rows of one user are worked by one worker at
# a time, so no two workers race on one balance. ``pending`` counts the user's workable rows
# (pending, not parked); it is kept exact by every statement that changes a row's state, and a
# partial index on it lets a worker find work without scanning finished users. ``lease_token``
# changes at every lease: a mark is applied only under the token it was leased with.
# A row is *parked* when it has had ``max_tries`` unknown outcomes in a row: it stays pending
# (resending it is safe) but no worker takes it until it is loaded again (a rerun).
# Version 1, as first released: never edited (a migration changes it, see ``_MIGRATIONS``).
_CREATE: Final = (
    """
    CREATE TABLE store_async_journal_version (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        migrated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE store_async_users (
        id bigserial PRIMARY KEY,
        user_key text NOT NULL UNIQUE,
        identity_value text NOT NULL,
        pending integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_token bigint,
        lease_expires timestamptz,
        not_before timestamptz NOT NULL DEFAULT '-infinity'
    )
    """,
    "CREATE INDEX store_async_users_workable ON store_async_users (id) WHERE pending > 0",
    "CREATE SEQUENCE store_async_lease_tokens",
    """
    CREATE TABLE store_async_runs (
        id bigserial PRIMARY KEY,
        worker text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        retry_failed boolean NOT NULL
    )
    """,
    """
    CREATE TABLE store_async_fulfillments (
        id bigserial PRIMARY KEY,
        key text NOT NULL UNIQUE,
        idempotency_key text NOT NULL,
        caller_chosen boolean NOT NULL,
        item_id text,
        product_id text,
        quantity bigint,
        sandbox_id text,
        include_order_ids boolean,
        identity_type text NOT NULL,
        local_ticket_reference text NOT NULL,
        user_id bigint NOT NULL REFERENCES store_async_users (id),
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        parked boolean NOT NULL DEFAULT false,
        tries integer NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        correlation_id text,
        request_id text,
        cv text,
        order_ids text[],
        new_quantity bigint,
        error_type text,
        error_status integer,
        error_code text,
        error_inner_code text,
        error_message text,
        run_id bigint NOT NULL REFERENCES store_async_runs (id),
        line integer,
        settled_by text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE UNIQUE INDEX store_async_fulfillments_caller_chosen
    ON store_async_fulfillments (idempotency_key) WHERE caller_chosen
    """,
    """
    CREATE INDEX store_async_fulfillments_workable
    ON store_async_fulfillments (user_id, id) WHERE state = 'pending' AND NOT parked
    """,
    "CREATE INDEX store_async_fulfillments_state ON store_async_fulfillments (state)",
)

# Migrations from version N to N + 1, applied in order under the lock.
# Version 2 (v8 consume): a row with ``quantity`` is a v8 consume of ``product_id`` under the
# trackingId in ``idempotency_key`` (the Store deduplicates on trackingId, user, product and
# quantity; ``sandbox_id`` and ``include_order_ids`` complete the request). Version 1 had a
# ``text[]`` of order ids, never written: an answer's order transactions are triples, kept as
# JSON ``[[orderId, orderLineItemId, quantityConsumed], ...]`` like the SQLite journal's.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """
        ALTER TABLE store_async_fulfillments DROP COLUMN order_ids,
            ADD COLUMN order_transactions jsonb
        """,
    ),
}


async def prepare(connection: asyncpg.Connection, where: str) -> int:
    """Create or migrate the schema; return the version. Raises :class:`JournalError` for a
    newer schema or a database that has a ``store_async_journal_version`` we cannot read."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        exists = await connection.fetchval(
            "SELECT to_regclass('store_async_journal_version') IS NOT NULL"
        )
        if not exists:
            for statement in _CREATE:
                await connection.execute(statement)
            await connection.execute("INSERT INTO store_async_journal_version (version) VALUES (1)")
        version = _checked(
            await connection.fetchval("SELECT version FROM store_async_journal_version"), where
        )
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                await connection.execute(statement)
            version += 1
            await connection.execute(
                "UPDATE store_async_journal_version SET version = $1, migrated_at = now()", version
            )
        return version


async def read_version(connection: asyncpg.Connection, where: str) -> int:
    """The schema version, for a reader: nothing is created or migrated (an older version is
    read as it is). Raises :class:`JournalError` for a database without a journal, a damaged
    or a newer one."""
    exists = await connection.fetchval(
        "SELECT to_regclass('store_async_journal_version') IS NOT NULL"
    )
    if not exists:
        raise JournalError(f"{where} holds no store_async journal")
    return _checked(
        await connection.fetchval("SELECT version FROM store_async_journal_version"), where
    )


def _checked(version: object, where: str) -> int:
    if not isinstance(version, int) or version < 1:
        raise JournalError(f"{where} holds a damaged store_async journal (no schema version)")
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"{where} holds a journal of schema version {version}, written by a newer "
            f"store_async; this version reads version {SCHEMA_VERSION}: upgrade store_async"
        )
    return version
