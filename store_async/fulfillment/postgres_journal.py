"""``PostgresJournal``: one journal shared by many workers on many machines (asyncpg).

It is a :class:`~store_async.fulfillment.Journal` (so ``Fulfiller(client, PostgresJournal(dsn))``
works in one process, like the SQLite journal), and it adds what a fleet of workers needs
(:class:`~store_async.fulfillment.fleet.FleetWorker` uses it):

Loading (:meth:`PostgresJournal.load`)
    A batch of fulfillments is inserted in one transaction, ``ON CONFLICT DO NOTHING``: the first
    loader of a caller key wins, every later one finds the row and compares values (a key seen
    again with a different request is a ``CONFLICT``, never replaced). Several processes may
    load the same input at once. Every form is kept whole: by item, by transaction, and v8 (its
    quantity, sandbox and order-ids flag; a leased row is resent exactly as loaded).

Leases (:meth:`PostgresJournal.lease`)
    The lease unit is the *user*: a worker takes users that have workable rows with
    ``FOR UPDATE SKIP LOCKED`` and writes its worker id, a fresh lease token and an expiry on
    them, then reads their pending rows, all in one transaction. Rows of one user are thus
    worked by one worker at a time. :meth:`renew` (the heartbeat) pushes the expiry on; a user
    whose lease expired (a worker killed, a machine gone) is taken by the next worker with its
    rows as they are: original idempotency keys and values.

Settling (:meth:`PostgresJournal.settle`)
    Done, failed and unknown marks are single statements, each applied only to pending rows
    whose user still carries the lease token the row was leased under (the users are locked
    for the statement): a worker that lost its lease changes nothing. Releasing a user's lease
    rides in the same transaction as its last marks.

Passwords: asyncpg reads them from the DSN, ``PGPASSWORD`` or a passfile (``~/.pgpass``,
``PGPASSFILE``). This module shows DSNs only through :func:`redact_dsn` and scrubs the DSN's
password out of any error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import orjson

from store_async.errors import StoreError
from store_async.fulfillment._pg_schema import dsn_password, prepare, read_version, redact_dsn
from store_async.fulfillment._sqlite_store import _differences as differences
from store_async.fulfillment.journal import (
    Claim,
    ClaimOutcome,
    FailureInfo,
    Fulfillment,
    JournalError,
    RowState,
)
from store_async.fulfillment.sqlite_reader import JournalRow
from store_async.fulfillment.sqlite_reader import _order_transactions as order_transactions
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity
from store_async.store_id_key import StoreIdKey

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Lease", "LeasedRow", "PostgresJournal", "default_worker_id", "user_key"]

_T = TypeVar("_T")
_RETRIES: Final = 8  # deadlocks between a loader and a settler are resolved by retrying


def default_worker_id() -> str:
    """``host:pid``: unique per process across a fleet."""
    return f"{socket.gethostname()}:{os.getpid()}"


def user_key(identity: UserIdentity) -> str:
    """What makes "one user" for leases: the Store ID key's ``userId`` claim when it has one
    (it survives key renewals), else a digest of the identity value."""
    try:
        found = StoreIdKey.parse(identity.identity_value).user_id
    except StoreError:
        found = None
    if found:
        return f"uid:{found}"
    return "key:" + hashlib.sha256(identity.identity_value.encode()).hexdigest()[:32]


@attrs.frozen(kw_only=True)
class LeasedRow:
    """A pending row handed to a worker under a lease."""

    key: str
    request: ConsumeRequest
    user_id: int
    token: int
    line: int | None


@attrs.frozen(kw_only=True)
class Lease:
    """One user leased to a worker, with the rows read under it."""

    user_id: int
    token: int
    rows: tuple[LeasedRow, ...]


# -- SQL ------------------------------------------------------------------------------------

_INSERT_USERS: Final = """
    INSERT INTO store_async_users (user_key, identity_value)
    SELECT k, v FROM unnest($1::text[], $2::text[]) AS t(k, v) ORDER BY k
    ON CONFLICT (user_key) DO NOTHING
"""
_SELECT_USERS: Final = """
    SELECT id, user_key, identity_value FROM store_async_users WHERE user_key = ANY($1::text[])
"""
_REFRESH_KEYS: Final = """
    UPDATE store_async_users AS u SET identity_value = t.v
    FROM unnest($1::bigint[], $2::text[]) AS t(id, v) WHERE u.id = t.id
"""
_INSERT_ROWS: Final = """
    INSERT INTO store_async_fulfillments (key, idempotency_key, caller_chosen, item_id,
        product_id, identity_type, local_ticket_reference, user_id, run_id, line, quantity,
        sandbox_id, include_order_ids)
    SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::integer[], $11::bigint[],
        $12::text[], $13::boolean[])
    ON CONFLICT DO NOTHING
    RETURNING key, user_id
"""
_ADD_PENDING: Final = """
    UPDATE store_async_users AS u SET pending = u.pending + t.n
    FROM (SELECT * FROM unnest($1::bigint[], $2::integer[]) AS t(id, n) ORDER BY id) AS t
    WHERE u.id = t.id
"""
_SELECT_EXISTING: Final = """
    SELECT key, idempotency_key, item_id, product_id, quantity, sandbox_id, identity_type,
        local_ticket_reference, state, parked, run_id, line, error_type, error_status,
        error_code, error_inner_code, error_message, cv
    FROM store_async_fulfillments WHERE key = ANY($1::text[])
"""
_SELECT_HOLDER: Final = """
    SELECT key, line FROM store_async_fulfillments WHERE idempotency_key = $1 AND caller_chosen
"""
_REVIVE: Final = """
    UPDATE store_async_fulfillments SET state = 'pending', parked = false, tries = 0,
        run_id = $2, updated_at = now()
    WHERE key = ANY($1::text[]) AND (parked OR state = 'failed')
    RETURNING user_id
"""
_TOUCH: Final = """
    UPDATE store_async_fulfillments SET run_id = $2, updated_at = now()
    WHERE key = ANY($1::text[]) AND state = 'pending'
"""

# The users whose lease tokens the marks carry, locked for the statement: a mark under a token
# the user no longer carries matches nothing. A NULL token (the plain Journal protocol, no
# leases) skips the check.
_HELD: Final = """
    held AS (
        SELECT id, lease_token FROM store_async_users
        WHERE lease_token = ANY($2::bigint[]) ORDER BY id FOR NO KEY UPDATE
    )"""
_LEASE_OK: Final = """(v.token IS NULL OR EXISTS (
        SELECT 1 FROM held WHERE held.id = f.user_id AND held.lease_token = v.token))"""
# A row is marked done once (from pending), with its answer's v8 balance and order ids; the
# coalesces state the SQLite journal's rule all the same: the balance of the last answer, the
# order ids of the first that had any (a developer-managed replay returns none).
_DONE: Final = f"""
    WITH v AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::text[], $5::text[],
            $6::text[], $8::bigint[], $9::text[])
            AS v(key, token, attempts, correlation_id, request_id, cv, new_quantity, orders)
    ), {_HELD}, d AS (
        UPDATE store_async_fulfillments AS f SET state = 'done',
            attempts = f.attempts + v.attempts, correlation_id = v.correlation_id,
            request_id = v.request_id, cv = v.cv, error_type = NULL, error_status = NULL,
            error_code = NULL, error_inner_code = NULL, error_message = NULL, settled_by = $7,
            new_quantity = coalesce(v.new_quantity, f.new_quantity),
            order_transactions = coalesce(f.order_transactions, v.orders::jsonb),
            updated_at = now()
        FROM v WHERE f.key = v.key AND f.state = 'pending' AND {_LEASE_OK}
        RETURNING f.key, f.user_id, f.parked
    ), c AS (
        UPDATE store_async_users AS u SET pending = u.pending - x.n
        FROM (SELECT user_id, count(*) AS n FROM d WHERE NOT parked GROUP BY user_id) AS x
        WHERE u.id = x.user_id
    )
    SELECT key FROM d
"""
_ERROR_V: Final = """
    WITH v AS (
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::integer[], $9::text[], $10::text[], $11::text[])
            AS v(key, token, attempts, correlation_id, request_id, cv, error_type, error_status,
                error_code, error_inner_code, error_message)
    )"""
_ERROR_SET: Final = """attempts = f.attempts + v.attempts, correlation_id = v.correlation_id,
            request_id = v.request_id, cv = v.cv, error_type = v.error_type,
            error_status = v.error_status, error_code = v.error_code,
            error_inner_code = v.error_inner_code, error_message = v.error_message,
            settled_by = $12, updated_at = now()"""
_FAILED: Final = f"""
    {_ERROR_V}, {_HELD}, d AS (
        UPDATE store_async_fulfillments AS f SET state = 'failed', {_ERROR_SET}
        FROM v WHERE f.key = v.key AND f.state = 'pending' AND {_LEASE_OK}
        RETURNING f.key, f.user_id, f.parked
    ), c AS (
        UPDATE store_async_users AS u SET pending = u.pending - x.n
        FROM (SELECT user_id, count(*) AS n FROM d WHERE NOT parked GROUP BY user_id) AS x
        WHERE u.id = x.user_id
    )
    SELECT key FROM d
"""
# An unknown outcome leaves the row pending; after ``$13`` of them in a row it is parked (no
# worker takes it until it is loaded again), and its user waits ``$14`` seconds before the
# next lease, so a resend is not hammered at a service that just failed.
_UNKNOWN: Final = f"""
    {_ERROR_V}, {_HELD}, d AS (
        UPDATE store_async_fulfillments AS f SET tries = f.tries + 1,
            parked = coalesce(f.tries + 1 >= $13::integer, false), {_ERROR_SET}
        FROM v WHERE f.key = v.key AND f.state = 'pending' AND NOT f.parked AND {_LEASE_OK}
        RETURNING f.key, f.user_id, f.parked
    ), c AS (
        UPDATE store_async_users AS u SET pending = u.pending - x.n,
            not_before = now() + make_interval(secs => $14::double precision)
        FROM (SELECT user_id, count(*) FILTER (WHERE parked) AS n FROM d GROUP BY user_id) AS x
        WHERE u.id = x.user_id
    )
    SELECT key FROM d
"""
_RELEASE: Final = """
    UPDATE store_async_users AS u SET lease_owner = NULL, lease_token = NULL,
        lease_expires = NULL
    FROM unnest($1::bigint[], $2::bigint[]) AS r(id, token)
    WHERE u.id = r.id AND u.lease_token = r.token
"""
# One statement, one round trip: take free users with workable rows (SKIP LOCKED: workers never
# wait for each other), write the lease on them, and read up to ``$5`` of each one's rows.
_LEASE: Final = """
    WITH picked AS (
        SELECT id FROM store_async_users
        WHERE pending > 0 AND not_before <= now()
            AND (lease_token IS NULL OR lease_expires < now())
        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE store_async_users AS u SET lease_owner = $2,
            lease_token = nextval('store_async_lease_tokens'),
            lease_expires = now() + make_interval(secs => $3::double precision)
        FROM picked WHERE u.id = picked.id
        RETURNING u.id, u.identity_value, u.lease_token
    )
    SELECT taken.id AS user_id, taken.lease_token, taken.identity_value, r.key,
        r.idempotency_key, r.item_id, r.product_id, r.quantity, r.sandbox_id,
        r.include_order_ids, r.identity_type, r.local_ticket_reference, r.line
    FROM taken LEFT JOIN LATERAL (
        SELECT * FROM store_async_fulfillments AS f
        WHERE f.user_id = taken.id AND f.state = 'pending' AND NOT f.parked
        ORDER BY f.id LIMIT $4
    ) AS r ON true
    ORDER BY taken.id
"""
# A safety net: a leased user with no workable row had a wrong counter. Recount it.
_RECOUNT: Final = """
    UPDATE store_async_users AS u SET pending = (SELECT count(*) FROM store_async_fulfillments
        WHERE user_id = u.id AND state = 'pending' AND NOT parked)
    WHERE u.id = ANY($1::bigint[])
"""
_RENEW: Final = """
    UPDATE store_async_users SET lease_expires = now() + make_interval(secs => $3::double precision)
    WHERE lease_owner = $1 AND lease_token = ANY($2::bigint[])
    RETURNING id, lease_token
"""
# ``{orders}``: the order transactions' column, or NULL in a version-1 schema (read-only).
_READ_ROWS: Final = """
    SELECT f.key, f.idempotency_key, f.item_id, f.product_id, f.identity_type,
        u.identity_value, f.local_ticket_reference, f.state, f.attempts, f.correlation_id,
        f.request_id, f.cv, f.error_type, f.error_status, f.error_code, f.error_inner_code,
        f.error_message, f.run_id, f.line, extract(epoch FROM f.created_at)::float8,
        extract(epoch FROM f.updated_at)::float8, f.id, f.quantity, f.include_order_ids,
        f.sandbox_id, f.new_quantity, {orders}
    FROM store_async_fulfillments AS f JOIN store_async_users AS u ON u.id = f.user_id
"""


def _request(
    identity_value: str,
    identity_type: str,
    ticket: str,
    idempotency_key: str,
    item_id: str | None,
    product_id: str | None,
    quantity: int | None,
    sandbox_id: str | None,
    include_order_ids: bool | None,
) -> ConsumeRequest:
    """The request a row was loaded with, in its form: v8 (``quantity`` set), by item, or by
    transaction."""
    beneficiary = UserIdentity(
        identity_value=identity_value, local_ticket_reference=ticket, identity_type=identity_type
    )
    if quantity is not None:
        assert product_id is not None
        return ConsumeRequest.for_quantity(
            beneficiary,
            product_id,
            quantity,
            tracking_id=idempotency_key,
            include_order_ids=bool(include_order_ids),
            sandbox_id=sandbox_id,
        )
    if item_id is not None:
        return ConsumeRequest.for_item(beneficiary, item_id, tracking_id=idempotency_key)
    assert product_id is not None
    return ConsumeRequest.for_transaction(beneficiary, product_id, idempotency_key)


def _error_values(key: str, token: int | None, error: StoreError) -> tuple[Any, ...]:
    info = FailureInfo.from_error(error)
    attempts = getattr(error, "attempts", None)
    return (
        key, token, attempts if isinstance(attempts, int) and attempts > 0 else 1,
        error.correlation_id, error.request_id, error.cv, info.error_type, info.status,
        info.code, info.inner_code, info.message,
    )  # fmt: skip


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to the column arrays ``unnest`` takes."""
    return [[row[index] for row in rows] for index in range(width)] if rows else [[]] * width


class PostgresJournal:
    """A journal in a PostgreSQL database (see the module docstring).

    :param dsn: ``postgresql://user@host:port/database`` (a password may be in it, but prefer
        ``PGPASSWORD`` or a passfile: a command line is visible to every local user).
    :param worker_id: this process's name in leases and rows (default ``host:pid``).
    :param max_tries: unknown outcomes in a row after which a leased row is parked.
    :param retry_after: seconds a user waits after an unknown outcome before its next lease.
    :param pool_size: connections to the database at most.
    :param read_only: only read (``store-async journal``): the schema is neither created nor
        upgraded (an older version is read as it is, as the SQLite reader does), and every
        write raises :class:`JournalError`.

    Open it with ``async with`` (or :meth:`open` and :meth:`close`). Raises
    :class:`JournalError` when the database cannot be reached or holds a newer schema (or,
    ``read_only``, no journal).
    """

    def __init__(
        self,
        dsn: str,
        *,
        worker_id: str | None = None,
        max_tries: int = 5,
        retry_after: float = 1.0,
        pool_size: int = 4,
        max_lazy_marks: int = 512,
        read_only: bool = False,
    ) -> None:
        self._dsn = dsn
        self.where = redact_dsn(dsn)
        """The DSN without its password: safe to print."""
        self.worker_id = worker_id or default_worker_id()
        self._password = dsn_password(dsn) or os.environ.get("PGPASSWORD") or None
        self._max_tries = max_tries
        self._retry_after = retry_after
        self._pool_size = pool_size
        self._max_lazy_marks = max_lazy_marks
        self._read_only = read_only
        self._read_rows = _READ_ROWS.format(orders="f.order_transactions::text")
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self.run_id = 0
        self._retry_failed = False
        self._user_keys: dict[UserIdentity, str] = {}
        # The Journal protocol's batching: claims wait for one load per batch; marks are lazy.
        self._claims: list[tuple[Fulfillment, asyncio.Future[Claim]]] = []
        self._claimer: asyncio.Task[None] | None = None
        self._marks: tuple[list[Any], list[Any], list[Any]] = ([], [], [])

    def __repr__(self) -> str:
        return f"PostgresJournal({self.where!r}, worker_id={self.worker_id!r})"

    async def __aenter__(self) -> PostgresJournal:
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

    def _error(self, error: BaseException, doing: str) -> JournalError:
        """A :class:`JournalError` for ``error``, without the password (servers echo DSNs)."""
        detail = str(error) or type(error).__name__
        for secret in (self._password, dsn_password(self._dsn)):
            if secret:
                detail = detail.replace(secret, "***")
        return JournalError(f"journal {self.where}: {doing}: {detail}")

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        import asyncpg

        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, command_timeout=60
            )
            async with self._pool.acquire() as connection:
                if self._read_only:
                    version = await read_version(connection, self.where)
                else:
                    version = await prepare(connection, self.where)
            if version < 2:  # read-only: version 1 had no order transactions
                self._read_rows = _READ_ROWS.format(orders="NULL::text")
        except JournalError:
            await self._drop_pool()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
            await self._drop_pool()
            raise self._error(error, "cannot open") from None
        except Exception as error:  # asyncpg's DSN parser raises plain exceptions too
            await self._drop_pool()
            raise self._error(error, "cannot open") from None

    async def _drop_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)

    async def close(self) -> None:
        """Write what is queued, then disconnect. The journal cannot be used afterwards."""
        if self._closed:
            return
        try:
            if self._pool is not None:
                await self.flush()
        finally:
            self._closed = True
            await self._drop_pool()

    def _refuse_writes(self) -> None:
        if self._read_only:
            raise JournalError(f"journal {self.where} is open read-only")

    async def _transaction(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[_T]],
        doing: str,
        *,
        atomic: bool = True,
    ) -> _T:
        """Run ``work`` in one transaction (or, not ``atomic``, as single statements: one round
        trip less each side), retried on deadlock; errors become JournalError."""
        import asyncpg

        if self._pool is None:
            state = "closed" if self._closed else "not open"
            raise JournalError(f"journal {self.where} is {state}")
        for attempt in range(_RETRIES):
            try:
                async with self._pool.acquire() as connection:
                    if not atomic:
                        return await work(connection)
                    async with connection.transaction():
                        return await work(connection)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _RETRIES - 1:
                    raise JournalError(f"journal {self.where}: {doing}: deadlocked") from None
                await asyncio.sleep(0.01 * (attempt + 1))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                raise self._error(error, doing) from None
        raise AssertionError("unreachable")

    # -- runs and loading ---------------------------------------------------------------------

    async def begin_run(self, *, retry_failed: bool = False) -> int:
        """Record a run (one loader/worker process); loads until the next run belong to it."""
        self._refuse_writes()

        async def work(connection: asyncpg.Connection) -> int:
            return int(
                await connection.fetchval(
                    "INSERT INTO store_async_runs (worker, retry_failed) VALUES ($1, $2) "
                    "RETURNING id",
                    self.worker_id,
                    retry_failed,
                )
            )

        self.run_id = await self._transaction(work, "cannot start a run")
        self._retry_failed = retry_failed
        return self.run_id

    def _user_key(self, identity: UserIdentity) -> str:
        found = self._user_keys.get(identity)
        if found is None:
            if len(self._user_keys) >= 4096:
                self._user_keys.clear()
            found = self._user_keys[identity] = user_key(identity)
        return found

    async def load(
        self, fulfillments: Sequence[Fulfillment], *, mark_run: bool = True
    ) -> list[Claim]:
        """Journal a batch (one transaction) and say, per fulfillment in order, what happened:
        ``SEND`` (new row), ``RESEND`` (already pending, or revived: a parked row, or a failed
        one with ``retry_failed``), ``ALREADY_DONE``, ``ALREADY_FAILED``, ``DUPLICATE`` (loaded
        earlier in this run) or ``CONFLICT`` (journaled with a different request).

        ``mark_run=False`` skips stamping this run on rows already pending (a fleet loader
        re-reading an input others loaded): a repeated line in a later batch is then reported
        as ``RESEND`` again rather than ``DUPLICATE``, which is safe (one idempotency key).

        :raises JournalError: the database failed; nothing of the batch is journaled.
        """
        if not fulfillments:
            return []
        if self.run_id == 0:
            raise JournalError("call begin_run() before loading")
        by_user: dict[str, str] = {}
        keyed = []
        for fulfillment in fulfillments:
            beneficiary = fulfillment.request.beneficiary
            user = self._user_key(beneficiary)
            by_user[user] = beneficiary.identity_value  # the last line's Store ID key wins
            keyed.append(user)

        async def work(connection: asyncpg.Connection) -> list[Claim]:
            users = list(by_user)
            await connection.execute(_INSERT_USERS, users, [by_user[u] for u in users])
            ids: dict[str, int] = {}
            stale: list[tuple[int, str]] = []
            for user_id, key_of_user, identity_value in await connection.fetch(
                _SELECT_USERS, users
            ):
                ids[key_of_user] = user_id
                if identity_value != by_user[key_of_user]:
                    stale.append((user_id, by_user[key_of_user]))
            if stale:  # a renewed Store ID key: resends use the newest one
                await connection.execute(_REFRESH_KEYS, *_columns(sorted(stale), 2))
            rows = [
                _insert_values(fulfillment, ids[user], self.run_id)
                for fulfillment, user in zip(fulfillments, keyed, strict=True)
            ]
            inserted = await connection.fetch(_INSERT_ROWS, *_columns(rows, 13))
            await self._add_pending(connection, [user_id for _, user_id in inserted])
            fresh = {key for key, _ in inserted}
            return await self._decide(connection, fulfillments, fresh, mark_run)

        return await self._transaction(work, "cannot load fulfillments")

    async def _add_pending(self, connection: asyncpg.Connection, user_ids: Iterable[int]) -> None:
        counts: dict[int, int] = {}
        for user_id in user_ids:
            counts[user_id] = counts.get(user_id, 0) + 1
        if counts:
            ordered = sorted(counts.items())
            await connection.execute(_ADD_PENDING, *_columns(ordered, 2))

    async def _decide(
        self,
        connection: asyncpg.Connection,
        fulfillments: Sequence[Fulfillment],
        fresh: set[str],
        mark_run: bool,
    ) -> list[Claim]:
        claims: list[Claim | None] = [None] * len(fulfillments)
        others: list[int] = []
        seen: set[str] = set()
        for index, fulfillment in enumerate(fulfillments):
            if fulfillment.key in fresh and fulfillment.key not in seen:
                seen.add(fulfillment.key)
                claims[index] = Claim(outcome=ClaimOutcome.SEND, request=fulfillment.request)
            else:
                others.append(index)
        if others:
            keys = list({fulfillments[index].key for index in others})
            existing = {row["key"]: row for row in await connection.fetch(_SELECT_EXISTING, keys)}
            revive: list[str] = []
            touch: list[str] = []
            for index in others:
                fulfillment = fulfillments[index]
                found = existing.get(fulfillment.key)
                if found is None:
                    claims[index] = await self._holder_conflict(connection, fulfillment)
                    continue
                claim = self._compare(fulfillment, found, fulfillment.key in seen)
                seen.add(fulfillment.key)
                if claim.outcome is ClaimOutcome.RESEND:
                    if found["parked"] or found["state"] == "failed":
                        revive.append(fulfillment.key)
                    else:
                        touch.append(fulfillment.key)
                claims[index] = claim
            if revive:
                revived = await connection.fetch(_REVIVE, revive, self.run_id)
                await self._add_pending(connection, [row["user_id"] for row in revived])
            if touch and mark_run:
                await connection.execute(_TOUCH, touch, self.run_id)
        return [claim for claim in claims if claim is not None]

    def _compare(self, fulfillment: Fulfillment, found: Any, seen_in_batch: bool) -> Claim:
        request, key = fulfillment.request, fulfillment.key
        differing = _differences(fulfillment, found)
        line = found["line"]
        where = f"line {line}" if line is not None else "an earlier call"
        if differing:
            verb = "differs" if len(differing) == 1 else "differ"
            shown = repr(key if len(key) <= 80 else key[:77] + "...")
            return Claim(
                outcome=ClaimOutcome.CONFLICT,
                detail=f"key {shown} is journaled ({where}, run {found['run_id']}) with a "
                f"different request: {', '.join(differing)} {verb}",
            )
        if seen_in_batch or found["run_id"] == self.run_id:
            return Claim(outcome=ClaimOutcome.DUPLICATE, detail=f"duplicate of {where}")
        journaled = _with_idempotency_key(request, found["idempotency_key"])
        if found["state"] == "done":
            return Claim(outcome=ClaimOutcome.ALREADY_DONE)
        if found["state"] == "failed" and not self._retry_failed:
            failure = FailureInfo(
                error_type=found["error_type"] or "StoreError",
                status=found["error_status"],
                code=found["error_code"],
                inner_code=found["error_inner_code"],
                message=found["error_message"] or "",
                cv=found["cv"],
            )
            return Claim(outcome=ClaimOutcome.ALREADY_FAILED, request=journaled, failure=failure)
        return Claim(outcome=ClaimOutcome.RESEND, request=journaled)

    async def _holder_conflict(
        self, connection: asyncpg.Connection, fulfillment: Fulfillment
    ) -> Claim:
        """The key is not journaled but its insert was refused: its caller-chosen idempotency
        key belongs to another key."""
        request = fulfillment.request
        name = "transactionId" if request.transaction_id is not None else "trackingId"
        other = await connection.fetchrow(_SELECT_HOLDER, request.idempotency_key)
        where = ""
        shown = "?"
        if other is not None:
            shown = repr(other["key"][:80])
            where = f" (line {other['line']})" if other["line"] is not None else ""
        return Claim(
            outcome=ClaimOutcome.CONFLICT,
            detail=f"its {name} is already journaled under another key {shown}{where}",
        )

    # -- leases -------------------------------------------------------------------------------

    async def lease(self, *, users: int, rows_per_user: int, seconds: float) -> list[Lease]:
        """Lease up to ``users`` free users with workable rows for ``seconds``, with up to
        ``rows_per_user`` of each one's pending rows (in load order). Empty when none is free.
        Each lease has its own token."""
        self._refuse_writes()

        async def work(connection: asyncpg.Connection) -> list[Lease]:
            found = await connection.fetch(_LEASE, users, self.worker_id, seconds, rows_per_user)
            leases: dict[int, tuple[int, list[LeasedRow]]] = {}
            for row in found:
                user_id, token = row["user_id"], row["lease_token"]
                rows = leases.setdefault(user_id, (token, []))[1]
                if row["key"] is None:
                    continue  # a user whose counter said "work" but had none
                request = _request(
                    row["identity_value"], row["identity_type"], row["local_ticket_reference"],
                    row["idempotency_key"], row["item_id"], row["product_id"], row["quantity"],
                    row["sandbox_id"], row["include_order_ids"],
                )  # fmt: skip
                rows.append(
                    LeasedRow(
                        key=row["key"], request=request, user_id=user_id, token=token,
                        line=row["line"],
                    )
                )  # fmt: skip
            empty = [user_id for user_id, (_, rows) in leases.items() if not rows]
            if empty:
                await connection.execute(_RECOUNT, empty)
            return [
                Lease(user_id=user_id, token=token, rows=tuple(rows))
                for user_id, (token, rows) in leases.items()
            ]

        return await self._transaction(work, "cannot lease rows", atomic=False)

    async def renew(self, tokens: Iterable[int], seconds: float) -> set[tuple[int, int]]:
        """Extend this worker's leases of the given tokens; return the ``(user id, token)``
        pairs it still holds (a lease taken over by another worker after it expired is lost).
        """
        self._refuse_writes()
        wanted = sorted(set(tokens))
        if not wanted:
            return set()

        async def work(connection: asyncpg.Connection) -> set[tuple[int, int]]:
            rows = await connection.fetch(_RENEW, self.worker_id, wanted, seconds)
            return {(int(row["id"]), int(row["lease_token"])) for row in rows}

        return await self._transaction(work, "cannot renew leases", atomic=False)

    async def settle(
        self,
        *,
        done: Sequence[tuple[str, int | None, ConsumeResult]] = (),
        failed: Sequence[tuple[str, int | None, StoreError]] = (),
        unknown: Sequence[tuple[str, int | None, StoreError]] = (),
        release: Sequence[tuple[int, int]] = (),
        max_tries: int | None = None,
    ) -> set[str]:
        """Record outcomes of ``(key, lease token, result or error)`` and release
        ``(user id, token)`` leases, in one transaction. A mark whose row is no longer pending,
        or whose user no longer carries its token, changes nothing. Returns the keys marked.

        ``max_tries`` parks a row after that many unknown outcomes (``None``: never).
        """
        self._refuse_writes()
        done_rows = [
            (
                key, token, result.attempts, result.correlation_id, result.request_id, result.cv,
                result.new_quantity, _orders_json(result),
            )
            for key, token, result in done
        ]  # fmt: skip
        failed_rows = [_error_values(key, token, error) for key, token, error in failed]
        unknown_rows = [_error_values(key, token, error) for key, token, error in unknown]
        released = sorted(release)
        backoff = self._retry_after if max_tries is not None else 0.0

        async def work(connection: asyncpg.Connection) -> set[str]:
            marked: set[str] = set()
            if done_rows:
                columns = _columns(done_rows, 8)
                found = await connection.fetch(_DONE, *columns[:6], self.worker_id, *columns[6:])
                marked.update(row["key"] for row in found)
            if failed_rows:
                found = await connection.fetch(_FAILED, *_columns(failed_rows, 11), self.worker_id)
                marked.update(row["key"] for row in found)
            if unknown_rows:
                found = await connection.fetch(
                    _UNKNOWN, *_columns(unknown_rows, 11), self.worker_id, max_tries, backoff
                )
                marked.update(row["key"] for row in found)
            if released:
                await connection.execute(_RELEASE, *_columns(released, 2))
            return marked

        if not (done_rows or failed_rows or unknown_rows or released):
            return set()
        return await self._transaction(work, "cannot record outcomes")

    async def has_work(self) -> bool:
        """Whether any row is still workable (pending and not parked), leased or not."""

        async def work(connection: asyncpg.Connection) -> bool:
            return bool(
                await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM store_async_users WHERE pending > 0)"
                )
            )

        return await self._transaction(work, "cannot read the journal", atomic=False)

    # -- the Journal protocol -----------------------------------------------------------------

    def claim(self, fulfillment: Fulfillment) -> Awaitable[Claim]:
        """Queue ``fulfillment`` for the next batched :meth:`load`; the awaitable completes once
        its row is committed."""
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        if self._closed or self._pool is None:
            future.set_exception(JournalError(f"journal {self.where} is not open"))
            return future
        self._claims.append((fulfillment, future))
        if self._claimer is None or self._claimer.done():
            self._claimer = asyncio.create_task(self._drain_claims())
        return future

    async def _drain_claims(self) -> None:
        while self._claims:
            batch, self._claims = self._claims[:1000], self._claims[1000:]
            try:
                claims = await self.load([fulfillment for fulfillment, _ in batch])
            except JournalError as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), claim in zip(batch, claims, strict=True):
                if not future.done():
                    future.set_result(claim)

    async def mark_done(self, key: str, result: ConsumeResult) -> None:
        self._marks[0].append((key, None, result))
        await self._maybe_flush()

    async def mark_failed(self, key: str, error: StoreError) -> None:
        self._marks[1].append((key, None, error))
        await self._maybe_flush()

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        self._marks[2].append((key, None, error))
        await self._maybe_flush()

    async def _maybe_flush(self) -> None:
        if sum(len(marks) for marks in self._marks) >= self._max_lazy_marks:
            await self._flush_marks()

    async def _flush_marks(self) -> None:
        done, failed, unknown = self._marks
        if done or failed or unknown:
            self._marks = ([], [], [])
            await self.settle(done=done, failed=failed, unknown=unknown)

    async def flush(self) -> None:
        """Wait for queued claims; write the queued marks."""
        while self._claimer is not None and not self._claimer.done():
            await asyncio.shield(self._claimer)
        await self._flush_marks()

    # -- reading ------------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Rows per state, plus ``leased`` (pending rows under a live lease) and ``parked``."""

        async def work(connection: asyncpg.Connection) -> dict[str, int]:
            counts = {state.value: 0 for state in RowState}
            for row in await connection.fetch(
                "SELECT state, count(*) AS n FROM store_async_fulfillments GROUP BY state"
            ):
                counts[row["state"]] = int(row["n"])
            counts["leased"] = int(
                await connection.fetchval(
                    "SELECT count(*) FROM store_async_fulfillments AS f "
                    "JOIN store_async_users AS u ON u.id = f.user_id "
                    "WHERE f.state = 'pending' AND u.lease_token IS NOT NULL "
                    "AND u.lease_expires > now()"
                )
            )
            counts["parked"] = int(
                await connection.fetchval(
                    "SELECT count(*) FROM store_async_fulfillments "
                    "WHERE state = 'pending' AND parked"
                )
            )
            return counts

        return await self._transaction(work, "cannot read the journal", atomic=False)

    async def runs(self) -> int:
        """How many runs (loader/worker processes) used this journal."""

        async def work(connection: asyncpg.Connection) -> int:
            return int(await connection.fetchval("SELECT count(*) FROM store_async_runs"))

        return await self._transaction(work, "cannot read the journal", atomic=False)

    async def leases(self) -> list[tuple[str, int, float]]:
        """Live leases: ``(worker id, users, seconds until the last expires)`` per worker."""

        async def work(connection: asyncpg.Connection) -> list[tuple[str, int, float]]:
            rows = await connection.fetch(
                "SELECT lease_owner, count(*) AS n, "
                "extract(epoch FROM max(lease_expires) - now())::float8 AS left "
                "FROM store_async_users WHERE lease_token IS NOT NULL "
                "GROUP BY lease_owner ORDER BY lease_owner"
            )
            return [(row["lease_owner"], int(row["n"]), float(row["left"])) for row in rows]

        return await self._transaction(work, "cannot read the journal", atomic=False)

    async def rows(
        self, states: Iterable[RowState] = tuple(RowState), *, batch: int = 512
    ) -> AsyncGenerator[JournalRow, None]:
        """Rows in the given states, in load order, read ``batch`` at a time (keyset paging:
        no transaction is held open between batches)."""
        wanted = sorted({RowState(state).value for state in states})
        query = (
            f"{self._read_rows} WHERE f.state = ANY($1::text[]) AND f.id > $2 "
            "ORDER BY f.id LIMIT $3"
        )
        last = 0
        while True:

            async def work(connection: asyncpg.Connection, after: int = last) -> list[Any]:
                return list(await connection.fetch(query, wanted, after, batch))

            found = await self._transaction(work, "cannot read the journal", atomic=False)
            if not found:
                return
            for values in found:
                yield _journal_row(values)
            last = int(found[-1]["id"])
            if len(found) < batch:
                return

    async def row(self, key: str) -> JournalRow | None:
        """The row of one caller key, if journaled."""

        async def work(connection: asyncpg.Connection) -> Any:
            return await connection.fetchrow(f"{self._read_rows} WHERE f.key = $1", key)

        found = await self._transaction(work, "cannot read the journal", atomic=False)
        return None if found is None else _journal_row(found)


def _insert_values(fulfillment: Fulfillment, user_id: int, run_id: int) -> tuple[Any, ...]:
    request = fulfillment.request
    beneficiary = request.beneficiary
    return (
        fulfillment.key, request.idempotency_key,
        fulfillment.caller_tracking_id or request.transaction_id is not None,
        request.item_id, request.product_id, beneficiary.identity_type,
        beneficiary.local_ticket_reference, user_id, run_id, fulfillment.line,
        request.remove_quantity, request.sandbox_id, request.include_order_ids,
    )  # fmt: skip


def _with_idempotency_key(request: ConsumeRequest, journaled_key: str) -> ConsumeRequest:
    if request.idempotency_key == journaled_key:
        return request
    return attrs.evolve(request, tracking_id=journaled_key)


def _differences(fulfillment: Fulfillment, found: Any) -> list[str]:
    """Names (never values) of the fields that differ from the journaled request: the SQLite
    journal's rule (one rule for both journals), on a row of :data:`_SELECT_EXISTING`."""
    return differences(
        fulfillment, found["idempotency_key"], found["item_id"], found["product_id"],
        found["identity_type"], found["local_ticket_reference"], found["quantity"],
        found["sandbox_id"],
    )  # fmt: skip


def _orders_json(result: ConsumeResult) -> str | None:
    """A v8 answer's order transactions as the JSON the journals keep, or None."""
    transactions = result.order_transactions
    if not transactions:
        return None
    return orjson.dumps(
        [[t.order_id, t.order_line_item_id, t.quantity_consumed] for t in transactions]
    ).decode()


def _journal_row(values: Any) -> JournalRow:
    (key, idempotency_key, item_id, product_id, identity_type, identity_value, ticket, state,
     attempts, correlation_id, request_id, cv, error_type, status, code, inner_code, message,
     run_id, line, created_at, updated_at, _, quantity, include_order_ids, sandbox_id,
     new_quantity, orders) = values  # fmt: skip
    failure = None
    if error_type is not None:
        failure = FailureInfo(
            error_type=error_type, status=status, code=code, inner_code=inner_code,
            message=message or "", cv=cv,
        )  # fmt: skip
    request = _request(
        identity_value, identity_type, ticket, idempotency_key, item_id, product_id, quantity,
        sandbox_id, include_order_ids,
    )  # fmt: skip
    return JournalRow(
        key=key,
        request=request,
        state=RowState(state),
        attempts=attempts,
        correlation_id=correlation_id,
        request_id=request_id,
        cv=cv,
        failure=failure,
        run_id=run_id,
        line=line,
        created_at=created_at,
        updated_at=updated_at,
        new_quantity=new_quantity,
        order_transactions=order_transactions(orders),
    )
