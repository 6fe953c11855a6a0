"""A Microsoft Store services emulator: a real aiohttp server with fault injection.

``StoreEmulator`` serves the Collections (query, consume), Purchase (grant), Store ID key
renewal and Store for Business (offline license) APIs on the real paths, and the newer surface
(v8 consume with balances, v8/v9 queries, subscriptions, orders, grant v7; see
docs/guides/v8.md), plus an Entra ID token endpoint (HTTPS with ``tls=True``, so
azure-identity's real credentials work against it). ``FaultPlan`` injects seeded faults;
``Ledger`` counts what was applied, so a test can prove exactly-once.

The emulator works on plain JSON and never imports this library's models or codec: a codec
bug must not be mirrored on the server side, where tests would miss it.
"""

from store_async.emulator.faults import FaultKind, FaultPlan, RawAnswer
from store_async.emulator.items import BusinessProduct, CatalogProduct, Item
from store_async.emulator.ledger import Ledger, LedgerEntry
from store_async.emulator.request_log import LoggedRequest, RequestLog
from store_async.emulator.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_TENANT_ID,
    StoreEmulator,
)
from store_async.emulator.stats import EmulatorStats

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_TENANT_ID",
    "BusinessProduct",
    "CatalogProduct",
    "EmulatorStats",
    "FaultKind",
    "FaultPlan",
    "Item",
    "Ledger",
    "LedgerEntry",
    "LoggedRequest",
    "RawAnswer",
    "RequestLog",
    "StoreEmulator",
]
