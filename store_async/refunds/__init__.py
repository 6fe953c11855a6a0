"""Refund events (clawback v2): from the Store's queue to the application, once per event id.

The pieces, each in its own module:

- :class:`RefundQueue` (``queue``): the Azure Storage queue behind the Store's SAS URI
  (azure-storage-queue; install ``store-async[refunds]``), SAS refreshed before expiry and on 403;
- :func:`decode_message` (``message``): base64 / base64url JSON -> :class:`RefundEvent`, or a
  :class:`Rejection` with the reason;
- :class:`RefundJournal` (``journal``), the protocol, :class:`SqliteRefundJournal`
  (``sqlite_journal``) and :class:`PostgresRefundJournal` (``postgres_journal``, asyncpg; the
  database a fleet's fulfillment journal uses): events recorded once per event id, rejected
  messages kept whole; :func:`open_refund_journal` (``open_journal``) picks one by path or DSN;
- :class:`RefundSync` (``sync``): receive -> record (commit) -> delete, until drained;
- :class:`RefundFeed` (``feed``): ``async for refund in RefundFeed(store, journal)`` hands the
  application each recorded event until it calls ``await refund.mark_handled()``.

See ``docs/guides/refunds.md`` for the reconciliation pattern.
"""

from store_async.errors import RefundQueueError, RefundQueueNotOnboardedError
from store_async.models.refunds import (
    RefundEvent,
    RefundEventData,
    RefundEventState,
    RefundQueueSas,
    RefundRecurrenceData,
)
from store_async.refunds.feed import FeedEvent, RefundFeed
from store_async.refunds.journal import (
    JournaledEvent,
    ReceivedMessage,
    RecordOutcome,
    RefundJournal,
    RefundJournalCounts,
    RefundJournalError,
    RejectedMessage,
)
from store_async.refunds.message import DecodedEvent, Rejection, decode_message
from store_async.refunds.open_journal import open_refund_journal
from store_async.refunds.postgres_journal import PostgresRefundJournal
from store_async.refunds.queue import QueueMessage, RefundQueue, SasSource
from store_async.refunds.sqlite_journal import SqliteRefundJournal
from store_async.refunds.sync import RefundSync, SyncReport

__all__ = [
    "DecodedEvent",
    "FeedEvent",
    "JournaledEvent",
    "PostgresRefundJournal",
    "QueueMessage",
    "ReceivedMessage",
    "RecordOutcome",
    "RefundEvent",
    "RefundEventData",
    "RefundEventState",
    "RefundFeed",
    "RefundJournal",
    "RefundJournalCounts",
    "RefundJournalError",
    "RefundQueue",
    "RefundQueueError",
    "RefundQueueNotOnboardedError",
    "RefundQueueSas",
    "RefundRecurrenceData",
    "RefundSync",
    "RejectedMessage",
    "Rejection",
    "SasSource",
    "SqliteRefundJournal",
    "SyncReport",
    "decode_message",
    "open_refund_journal",
]
