"""Batch fulfillment: report many consumables as fulfilled, exactly once, across crashes.

::

    from store_async.fulfillment import Fulfiller, SqliteJournal, read_jsonl

    async with StoreClient(credential) as client, SqliteJournal("fulfill.journal") as journal:
        report = await Fulfiller(client, journal, concurrency=64).run(read_jsonl("in.jsonl"))
    print(report.summary())

A :class:`Journal` commits an intent row (caller key, idempotency key, request) before the first
send; success marks it done, an unknown outcome leaves it pending, a permanent refusal marks it
failed. Running again with the same input skips done rows and resends pending ones under their
original tracking ids; a key never gets a second tracking id.
"""

from typing import TYPE_CHECKING, Any

# Names are imported on first use (as in the package root): a process that needs one module,
# such as the journal's writer process, does not pay for the fleet's or the PostgreSQL's.
_ORIGINS = {
    "Claim": "journal",
    "ClaimOutcome": "journal",
    "ConsumeClient": "fulfiller",
    "ExitCode": "report",
    "FailedRow": "report",
    "FailureInfo": "journal",
    "FleetReport": "fleet",
    "FleetStats": "fleet",
    "FleetWorker": "fleet",
    "Fulfiller": "fulfiller",
    "Fulfillment": "journal",
    "FulfillmentReport": "report",
    "FulfillmentStats": "report",
    "Item": "fulfiller",
    "Journal": "journal",
    "JournalError": "journal",
    "JournalReader": "sqlite_reader",
    "JournalRow": "sqlite_reader",
    "LineError": "source",
    "PostgresJournal": "postgres_journal",
    "RowState": "journal",
    "SqliteJournal": "sqlite_journal",
    "iter_jsonl": "source",
    "parse_line": "source",
    "read_jsonl": "source",
}

if TYPE_CHECKING:
    from store_async.fulfillment.fleet import FleetReport, FleetStats, FleetWorker
    from store_async.fulfillment.fulfiller import ConsumeClient, Fulfiller, Item
    from store_async.fulfillment.journal import (
        Claim,
        ClaimOutcome,
        FailureInfo,
        Fulfillment,
        Journal,
        JournalError,
        RowState,
    )
    from store_async.fulfillment.postgres_journal import PostgresJournal
    from store_async.fulfillment.report import (
        ExitCode,
        FailedRow,
        FulfillmentReport,
        FulfillmentStats,
    )
    from store_async.fulfillment.source import LineError, iter_jsonl, parse_line, read_jsonl
    from store_async.fulfillment.sqlite_journal import SqliteJournal
    from store_async.fulfillment.sqlite_reader import JournalReader, JournalRow

__all__ = [
    "Claim",
    "ClaimOutcome",
    "ConsumeClient",
    "ExitCode",
    "FailedRow",
    "FailureInfo",
    "FleetReport",
    "FleetStats",
    "FleetWorker",
    "Fulfiller",
    "Fulfillment",
    "FulfillmentReport",
    "FulfillmentStats",
    "Item",
    "Journal",
    "JournalError",
    "JournalReader",
    "JournalRow",
    "LineError",
    "PostgresJournal",
    "RowState",
    "SqliteJournal",
    "iter_jsonl",
    "parse_line",
    "read_jsonl",
]


def __getattr__(name: str) -> Any:
    origin = _ORIGINS.get(name)
    if origin is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{origin}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
