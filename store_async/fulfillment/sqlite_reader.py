"""``JournalReader``: read a SQLite journal without disturbing a run that may be writing it.

Used by ``store-async journal`` (summary, export for re-drive) and by tests. It opens the file
read-only and takes no lock: in WAL mode a reader sees the last committed state while the
writer goes on.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import Any, Final

import attrs
import orjson

from store_async.fulfillment._schema import connect, schema_version
from store_async.fulfillment.journal import FailureInfo, JournalError, RowState
from store_async.models import ConsumeRequest, OrderTransaction, UserIdentity

__all__ = ["JournalReader", "JournalRow"]

_COLUMNS: Final = """f.key, f.idempotency_key, f.item_id, f.product_id, b.identity_type,
        b.identity_value, b.local_ticket_reference, f.state, f.attempts, f.correlation_id,
        f.request_id, f.cv, f.error_type, f.error_status, f.error_code, f.error_inner_code,
        f.error_message, f.run_id, f.line, f.created_at, f.updated_at"""
_V2_COLUMNS: Final = """f.remove_quantity, f.include_order_ids, f.sandbox_id, f.new_quantity,
        f.order_transactions"""
_FROM: Final = "FROM fulfillments AS f JOIN beneficiaries AS b ON b.id = f.beneficiary_id"
# A reader never upgrades a file: a version-1 journal has no v8 columns (and no v8 rows).
_SELECTS: Final = {
    1: f"SELECT {_COLUMNS}, NULL, 0, NULL, NULL, NULL {_FROM}",
    2: f"SELECT {_COLUMNS}, {_V2_COLUMNS} {_FROM}",
}


@attrs.frozen(kw_only=True)
class JournalRow:
    """One journaled fulfillment. ``request`` holds the Store ID key (redacted in ``repr``)."""

    key: str
    request: ConsumeRequest
    state: RowState
    attempts: int
    correlation_id: str | None
    request_id: str | None
    cv: str | None
    failure: FailureInfo | None
    """The last error: why a failed row failed, or the last unknown outcome of a pending row."""
    run_id: int
    line: int | None
    created_at: float
    updated_at: float
    new_quantity: int | None = None
    """v8: the balance left, from the last answer."""
    order_transactions: tuple[OrderTransaction, ...] = ()
    """v8: the order ids of the first answer that had any (replays may return none)."""


def _row(values: tuple[Any, ...]) -> JournalRow:
    (key, idempotency_key, item_id, product_id, identity_type, identity_value, ticket, state,
     attempts, correlation_id, request_id, cv, error_type, status, code, inner_code, message,
     run_id, line, created_at, updated_at, remove_quantity, include_order_ids, sandbox_id,
     new_quantity, orders) = values  # fmt: skip
    beneficiary = UserIdentity(
        identity_value=identity_value, local_ticket_reference=ticket, identity_type=identity_type
    )
    if remove_quantity is not None:
        request = ConsumeRequest.for_quantity(
            beneficiary,
            product_id,
            remove_quantity,
            tracking_id=idempotency_key,
            include_order_ids=bool(include_order_ids),
            sandbox_id=sandbox_id,
        )
    elif item_id is not None:
        request = ConsumeRequest.for_item(beneficiary, item_id, tracking_id=idempotency_key)
    else:
        request = ConsumeRequest.for_transaction(beneficiary, product_id, idempotency_key)
    failure = None
    if error_type is not None:
        failure = FailureInfo(
            error_type=error_type,
            status=status,
            code=code,
            inner_code=inner_code,
            message=message or "",
            cv=cv,
        )
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
        order_transactions=_order_transactions(orders),
    )


def _order_transactions(text: str | None) -> tuple[OrderTransaction, ...]:
    if not text:
        return ()
    try:
        return tuple(
            OrderTransaction(order_id=order, order_line_item_id=line, quantity_consumed=quantity)
            for order, line, quantity in orjson.loads(text)
        )
    except (orjson.JSONDecodeError, TypeError, ValueError):
        raise JournalError("a journal row has unreadable order ids") from None


class JournalReader:
    """Read-only view of a journal file. Raises :class:`JournalError` if it is not one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._connection = connect(self.path, readonly=True)
        self._select = _SELECTS[schema_version(self._connection)]

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged file shows itself only when read: turn SQLite's errors into ours."""
        try:
            yield
        except sqlite3.Error as error:
            raise JournalError(f"cannot read journal {self.path}: {error}") from None

    def counts(self) -> dict[RowState, int]:
        """Rows per state (every state present, possibly 0)."""
        counts = dict.fromkeys(RowState, 0)
        with self._reading():
            for state, count in self._connection.execute(
                "SELECT state, count(*) FROM fulfillments GROUP BY state"
            ):
                counts[RowState(state)] = count
        return counts

    def runs(self) -> int:
        """How many runs used this journal."""
        with self._reading():
            return int(self._connection.execute("SELECT count(*) FROM runs").fetchone()[0])

    def rows(
        self, states: Iterable[RowState] = tuple(RowState)
    ) -> Generator[JournalRow, None, None]:
        """Rows in the given states, in the order they were first claimed; streamed (close the
        generator before the reader when you stop early)."""
        wanted = sorted({RowState(state).value for state in states})
        marks = ", ".join("?" * len(wanted))
        with self._reading():
            cursor = self._connection.execute(
                f"{self._select} WHERE f.state IN ({marks}) ORDER BY f.rowid", wanted
            )
            try:
                while batch := cursor.fetchmany(512):
                    for values in batch:
                        yield _row(values)
            finally:
                cursor.close()

    def row(self, key: str) -> JournalRow | None:
        """The row of one caller key, if journaled."""
        with self._reading():
            values = self._connection.execute(f"{self._select} WHERE f.key = ?", (key,)).fetchone()
        return None if values is None else _row(values)
