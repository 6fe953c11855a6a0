"""``open_refund_journal(spec)``: the refund journal a path or a DSN names.

One rule, the same as ``store-async fulfill --journal``: ``postgresql://...`` (or
``postgres://...``) is a :class:`~store_async.refunds.PostgresRefundJournal` in that database;
anything else is the path of a :class:`~store_async.refunds.SqliteRefundJournal` file.
"""

from __future__ import annotations

import os

from store_async._dsn import is_postgres_dsn
from store_async.refunds.postgres_journal import PostgresRefundJournal
from store_async.refunds.sqlite_journal import SqliteRefundJournal

__all__ = ["open_refund_journal"]


async def open_refund_journal(
    spec: str | os.PathLike[str], *, create: bool = True, synchronous: str = "full"
) -> SqliteRefundJournal | PostgresRefundJournal:
    """Open (and, with ``create``, make) the refund journal ``spec`` names; close it with
    ``await journal.close()`` or use it as ``async with``.

    :param spec: a SQLite file path, or a ``postgresql://`` DSN (keep its password in
        ``PGPASSWORD`` or a passfile).
    :param create: ``False`` to refuse a missing journal instead of creating it (readers).
    :param synchronous: the SQLite file's durability, ``"full"`` or ``"normal"`` (see
        :class:`~store_async.refunds.SqliteRefundJournal`); a PostgreSQL journal commits
        each batch with ``synchronous_commit = on`` whatever this says.
    :raises RefundJournalError: the journal cannot be opened (missing with ``create=False``,
        not a refund journal, a newer schema, an unreachable database...).
    """
    if isinstance(spec, str) and is_postgres_dsn(spec):
        journal = PostgresRefundJournal(spec, create=create)
        await journal.open()
        return journal
    return SqliteRefundJournal(spec, create=create, synchronous=synchronous)
