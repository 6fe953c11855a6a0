"""The SQL of the SQLite journal: claim decisions and outcome marks, on the writer's connection.

Everything here runs in the journal's writer (a thread, or a process of its own), inside the
transaction of one batch. :class:`SqliteJournal <store_async.fulfillment.SqliteJournal>` owns
the writer and the futures.

Claims take a fast path: all the claims of a batch are inserted by a few multi-row ``INSERT OR
IGNORE`` statements; when every row went in (the usual case: new keys), every claim is a
``SEND``. Otherwise the batch's inserts are rolled back to a savepoint and each claim is decided
on its own (the key exists, or an idempotency key is taken).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, Final

import attrs
import orjson

from store_async.errors import StoreError
from store_async.fulfillment.journal import Claim, ClaimOutcome, FailureInfo, Fulfillment
from store_async.models import ConsumeRequest, ConsumeResult, UserIdentity

__all__ = ["DONE", "FAILED", "UNKNOWN", "JournalStore", "done_row", "error_row"]

_INSERT: Final = """
    INSERT OR IGNORE INTO fulfillments (key, idempotency_key, caller_chosen, item_id, product_id,
        beneficiary_id, run_id, line, created_at, updated_at, remove_quantity, include_order_ids,
        sandbox_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_BY_KEY: Final = """
    SELECT f.idempotency_key, f.item_id, f.product_id, b.identity_type, b.local_ticket_reference,
        f.state, f.run_id, f.line, f.error_type, f.error_status, f.error_code, f.error_inner_code,
        f.error_message, f.beneficiary_id, b.identity_value, f.remove_quantity, f.sandbox_id, f.cv
    FROM fulfillments AS f JOIN beneficiaries AS b ON b.id = f.beneficiary_id
    WHERE f.key = ?
"""
_RESEND: Final = """
    UPDATE fulfillments SET state = 'pending', run_id = ?, line = ?, beneficiary_id = ?,
        updated_at = ? WHERE key = ?
"""
_ERROR_COLUMNS: Final = (
    "error_type",
    "error_status",
    "error_code",
    "error_inner_code",
    "error_message",
)
_SET_ERRORS: Final = ", ".join(f"{column} = v.new_{column}" for column in _ERROR_COLUMNS)
DONE: Final = (
    "state = 'done', error_type = NULL, error_status = NULL, error_code = NULL, "
    "error_inner_code = NULL, error_message = NULL, "
    "new_quantity = coalesce(v.new_new_quantity, fulfillments.new_quantity), "
    "order_transactions = coalesce(fulfillments.order_transactions, v.new_order_transactions)",
    ("new_quantity", "order_transactions"),
)
"""How a done mark changes its row (besides attempts, correlation ids and updated_at). A v8
answer's order ids are kept from the first answer that had any: a replay of a
developer-managed consume returns none."""
FAILED: Final = (f"state = 'failed', {_SET_ERRORS}", _ERROR_COLUMNS)
UNKNOWN: Final = (_SET_ERRORS, _ERROR_COLUMNS)
"""An unknown outcome only records the attempt; the row stays as it is (pending)."""
_MARK_COLUMNS: Final = ("attempts", "correlation_id", "request_id", "cv")
# Claims and marks are written by multi-row statements of these sizes (largest first); a tail
# of more than _EXACT rows is padded to _CHUNKS[-1] rows by repeating its last row (an insert
# ignores the copy, a mark applies once: see _pieces). So a batch takes a few statements (30 rows:
# 2, not 6), and SQLite prepares at most five of each kind. Statements matter more than rows:
# sqlite3 releases the GIL around each one, and each time the writer thread takes it back, the
# event loop's thread may wait.
_CHUNKS: Final = (256, 64, 16)
_EXACT: Final = 2  # a tail of 1 or 2 rows (one-at-a-time callers) goes as it is

_BENEFICIARY_CACHE: Final = 4096


def done_row(key: str, result: ConsumeResult) -> tuple[Any, ...]:
    """One done mark, as :meth:`JournalStore.mark` takes it (``updated_at`` is the commit's)."""
    transactions = result.order_transactions
    orders = (
        orjson.dumps(
            [[t.order_id, t.order_line_item_id, t.quantity_consumed] for t in transactions]
        ).decode()
        if transactions
        else None
    )
    return (
        key,
        result.attempts,
        result.correlation_id,
        result.request_id,
        result.cv,
        result.new_quantity,
        orders,
    )


def error_row(key: str, error: StoreError) -> tuple[Any, ...]:
    """One failed or unknown mark (no secrets: see FailureInfo)."""
    info = FailureInfo.from_error(error)
    attempts = getattr(error, "attempts", None)
    return (
        key,
        attempts if isinstance(attempts, int) and attempts > 0 else 1,
        error.correlation_id,
        error.request_id,
        error.cv,
        info.error_type,
        info.status,
        info.code,
        info.inner_code,
        info.message,
    )


def _pieces(rows: list[tuple[Any, ...]]) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """``rows`` as ``(size, piece)`` for statements of :data:`_CHUNKS` rows (or 1 or 2).

    A tail of 3-15 rows is padded to 16 with copies of its last row. The copy is harmless in
    both statements: ``INSERT OR IGNORE`` ignores it (the row it copies went in first, or was
    ignored too; ``rowcount`` counts neither), and an ``UPDATE ... FROM`` whose join yields
    several rows for one target row applies one of them, once (all equal here). Callers never
    pass one key twice (see :func:`_update_many`).
    """
    start, size = 0, len(rows)
    for chunk in _CHUNKS:
        while size - start >= chunk:
            yield chunk, rows[start : start + chunk]
            start += chunk
    tail = size - start
    if 0 < tail <= _EXACT:
        yield tail, rows[start:]
    elif tail:
        yield _CHUNKS[-1], rows[start:] + [rows[-1]] * (_CHUNKS[-1] - tail)


@functools.cache
def _insert_rows(rows: int) -> str:
    """:data:`_INSERT` with ``rows`` rows of values."""
    head, values = _INSERT.split("VALUES")
    return f"{head}VALUES {', '.join([values.strip()] * rows)}"


@functools.cache
def _update_many(kind: tuple[str, tuple[str, ...]], rows: int) -> str:
    """The statement that applies ``rows`` marks of one ``kind`` (``DONE``, ``FAILED``...):
    its assignments read the ``extra`` columns of the marks as ``v.new_<column>``.

    The marks of one batch hold distinct keys (a key is sent once per run, and a run's marks are
    flushed before the next begins), so joining on the key updates each row once.
    """
    assignments, extra = kind
    columns = ("key", *_MARK_COLUMNS, *extra)
    values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * rows)
    names = ", ".join(f"new_{column}" for column in columns)
    sets = [
        "attempts = fulfillments.attempts + v.new_attempts",
        *(f"{column} = v.new_{column}" for column in _MARK_COLUMNS[1:]),
        assignments,
        "updated_at = ?",
    ]
    return (
        f"WITH v({names}) AS (VALUES {values}) "
        f"UPDATE fulfillments SET {', '.join(sets)} FROM v WHERE fulfillments.key = v.new_key"
    )


class JournalStore:
    """Claim decisions on one connection (writer thread only), for the current run."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.run_id = 0
        self._retry_failed = False
        # Beneficiary -> row id: most batches repeat users. Bounded; rows are never deleted.
        self._beneficiaries: dict[UserIdentity, int] = {}

    def begin_run(self, retry_failed: bool, pid: int, now: float) -> int:
        cursor = self._connection.execute(
            "INSERT INTO runs (started_at, pid, retry_failed) VALUES (?, ?, ?)",
            (now, pid, int(retry_failed)),
        )
        self.run_id, self._retry_failed = int(cursor.lastrowid or 0), retry_failed
        return self.run_id

    def mark(
        self, kind: tuple[str, tuple[str, ...]], rows: list[tuple[Any, ...]], now: float
    ) -> None:
        """Apply ``rows`` (from :func:`done_row` or :func:`error_row`) of one ``kind``: a few
        multi-row statements, parameters flattened in C, no per-row step in Python."""
        execute = self._connection.execute
        for size, piece in _pieces(rows):
            execute(_update_many(kind, size), (*chain.from_iterable(piece), now))

    def replace_store_id_key(self, old: UserIdentity, new_value: str) -> int:
        """Put a renewed Store ID key in place of ``old``'s in its beneficiary row: every row
        of that user and key (pending ones are what matters; done ones keep the latest key, as
        a resend does). Found through the cache (claimed recently), else by a scan."""
        found = self._beneficiaries.pop(old, None)
        if found is None:
            row = self._connection.execute(
                "SELECT id FROM beneficiaries WHERE identity_value = ? AND identity_type = ? "
                "AND local_ticket_reference = ?",
                (old.identity_value, old.identity_type, old.local_ticket_reference),
            ).fetchone()
            if row is None:
                return 0
            found = int(row[0])
        changed = self._connection.execute(
            "UPDATE beneficiaries SET identity_value = ? WHERE id = ?", (new_value, found)
        ).rowcount
        renewed = attrs.evolve(old, identity_value=new_value)
        cached = renewed in self._beneficiaries
        if changed and not cached and len(self._beneficiaries) < _BENEFICIARY_CACHE:
            self._beneficiaries[renewed] = found
        return int(changed)

    def claim_all(self, fulfillments: list[Fulfillment], now: float) -> list[Claim]:
        """Decide claims in input order (see the module docstring)."""
        if self.insert_all(lambda added: [self._row(f, now, added) for f in fulfillments]):
            return [Claim(outcome=ClaimOutcome.SEND, request=f.request) for f in fulfillments]
        return self.claim_each(fulfillments, now)

    def insert_all(self, rows: Callable[[list[UserIdentity]], list[tuple[Any, ...]]]) -> bool:
        """The fast path: insert the rows of all the claims of a batch, or none of them.

        ``rows(added)`` builds the rows (as :meth:`_row` does), noting in ``added`` the
        beneficiaries it stored. Those go in under the same savepoint, so when a key exists (or
        an idempotency key is taken) they roll back with the inserts, and reruns (done,
        duplicate, conflicting lines) add no copies of Store ID keys. ``False``: nothing was
        inserted; decide each claim with :meth:`claim_each`.
        """
        connection = self._connection
        connection.execute("SAVEPOINT claims")
        added: list[UserIdentity] = []
        built = rows(added)
        if self._insert_many(built) == len(built):
            connection.execute("RELEASE claims")
            return True
        connection.execute("ROLLBACK TO claims")
        connection.execute("RELEASE claims")
        for beneficiary in added:  # their rows were rolled back
            self._beneficiaries.pop(beneficiary, None)
        return False

    def claim_each(self, fulfillments: list[Fulfillment], now: float) -> list[Claim]:
        """The slow path: decide each claim on its own, in input order."""
        return [self._claim(fulfillment, now) for fulfillment in fulfillments]

    def _insert_many(self, rows: list[tuple[Any, ...]]) -> int:
        """:data:`_INSERT` for every row, in a few multi-row statements; rows inserted.

        One statement per chunk rather than one step per row: sqlite3 releases the GIL around
        each step, and every reacquisition can wait for the event loop's thread.
        """
        execute, inserted = self._connection.execute, 0
        for size, piece in _pieces(rows):
            inserted += execute(_insert_rows(size), tuple(chain.from_iterable(piece))).rowcount
        return inserted

    def _row(
        self, fulfillment: Fulfillment, now: float, added: list[UserIdentity] | None = None
    ) -> tuple[Any, ...]:
        request = fulfillment.request
        return (
            fulfillment.key,
            request.idempotency_key,
            fulfillment.caller_tracking_id or request.transaction_id is not None,
            request.item_id,
            request.product_id,
            self.beneficiary_id(request.beneficiary, added),
            self.run_id,
            fulfillment.line,
            now,
            now,
            request.remove_quantity,
            request.include_order_ids,
            request.sandbox_id,
        )

    def beneficiary_id(
        self, beneficiary: UserIdentity, added: list[UserIdentity] | None = None
    ) -> int:
        """The row id of ``beneficiary`` (stored now if it is new: noted in ``added``)."""
        found = self._beneficiaries.get(beneficiary)
        if found is not None:
            return found
        if added is not None:
            added.append(beneficiary)
        if len(self._beneficiaries) >= _BENEFICIARY_CACHE:
            self._beneficiaries.clear()
        cursor = self._connection.execute(
            "INSERT INTO beneficiaries (identity_type, identity_value, local_ticket_reference) "
            "VALUES (?, ?, ?)",
            (
                beneficiary.identity_type,
                beneficiary.identity_value,
                beneficiary.local_ticket_reference,
            ),
        )
        found = self._beneficiaries[beneficiary] = int(cursor.lastrowid or 0)
        return found

    def _claim(self, fulfillment: Fulfillment, now: float) -> Claim:
        """Decide one claim on the slow path."""
        connection, request, key = self._connection, fulfillment.request, fulfillment.key
        found = connection.execute(_SELECT_BY_KEY, (key,)).fetchone()
        if found is None:
            if fulfillment.caller_tracking_id or request.transaction_id is not None:
                taken = self._idempotency_key_taken(fulfillment)
                if taken is not None:
                    return taken
            if connection.execute(_INSERT, self._row(fulfillment, now)).rowcount != 1:
                # Only a constraint we do not know of could ignore it: never send unjournaled.
                return Claim(
                    outcome=ClaimOutcome.CONFLICT, detail="refused by the journal's constraints"
                )
            return Claim(outcome=ClaimOutcome.SEND, request=request)
        (journaled_key, item_id, product_id, identity_type, ticket, state, run_id, line) = found[:8]
        differing = _differences(
            fulfillment, journaled_key, item_id, product_id, identity_type, ticket, *found[15:17]
        )
        where = f"line {line}" if line is not None else "an earlier call"
        if differing:
            verb = "differs" if len(differing) == 1 else "differ"
            return Claim(
                outcome=ClaimOutcome.CONFLICT,
                detail=f"key {_show(key)} is journaled ({where}, run {run_id}) with a different "
                f"request: {', '.join(differing)} {verb}",
            )
        if run_id == self.run_id:
            return Claim(outcome=ClaimOutcome.DUPLICATE, detail=f"duplicate of {where}")
        if state == "done":
            return Claim(outcome=ClaimOutcome.ALREADY_DONE)
        if state == "failed" and not self._retry_failed:
            error_type, status, code, inner_code, message = found[8:13]
            failure = FailureInfo(
                error_type=error_type or "StoreError",
                status=status,
                code=code,
                inner_code=inner_code,
                message=message or "",
                cv=found[17],
            )
            return Claim(
                outcome=ClaimOutcome.ALREADY_FAILED,
                request=_with_idempotency_key(request, journaled_key),
                failure=failure,
            )
        # Resend under the journaled idempotency key, with the caller's current Store ID key
        # (keys expire and get renewed; the journal keeps the latest, for export).
        beneficiary = request.beneficiary
        journaled_id, journaled_value = found[13:15]
        if (
            beneficiary.identity_value,
            beneficiary.identity_type,
            beneficiary.local_ticket_reference,
        ) == (journaled_value, identity_type, ticket):
            beneficiary_id = journaled_id  # the same key: reuse its row, store no copy
            if len(self._beneficiaries) < _BENEFICIARY_CACHE:
                self._beneficiaries[beneficiary] = journaled_id
        else:
            beneficiary_id = self.beneficiary_id(beneficiary)
        connection.execute(_RESEND, (self.run_id, fulfillment.line, beneficiary_id, now, key))
        return Claim(
            outcome=ClaimOutcome.RESEND, request=_with_idempotency_key(request, journaled_key)
        )

    def _idempotency_key_taken(self, fulfillment: Fulfillment) -> Claim | None:
        """A CONFLICT if another key holds this caller-chosen idempotency key, else None."""
        request = fulfillment.request
        name = "transactionId" if request.transaction_id is not None else "trackingId"
        other = self._connection.execute(
            "SELECT key, line FROM fulfillments WHERE idempotency_key = ? AND caller_chosen = 1",
            (request.idempotency_key,),
        ).fetchone()
        if other is None:
            return None
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
    remove_quantity: int | None = None,
    sandbox_id: str | None = None,
) -> list[str]:
    """Names (never values) of the fields in which a claim differs from the journaled request.

    The Store ID key is not compared: it is a credential that expires and gets renewed, not part
    of what is being fulfilled. For a v8 consume the Store deduplicates on trackingId, user,
    product **and** quantity: a key is never resent with another product, quantity or sandbox.
    """
    request = fulfillment.request
    if (request.remove_quantity is None) != (remove_quantity is None):
        return ["the form (v8 productId+quantity vs v6)"]
    if (request.item_id is None) != (item_id is None):
        return ["the form (itemId+trackingId vs productId+transactionId)"]
    differing = []
    if request.remove_quantity is not None:
        if request.product_id != product_id:
            differing.append("productId")
        if request.remove_quantity != remove_quantity:
            differing.append("quantity")
        if request.sandbox_id != sandbox_id:
            differing.append("sandboxId")
        if fulfillment.caller_tracking_id and request.idempotency_key != journaled_key:
            differing.append("trackingId")
    elif request.item_id is not None:
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
