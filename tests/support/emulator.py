"""The emulator as the engine tests use it, and a client for it."""

from __future__ import annotations

from typing import Any

from store_async import StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.emulator import FaultPlan, StoreEmulator
from tests.support.credentials import GOOD_TOKEN

CONSUME = "/v6.0/collections/consume"
RENEW = "/v6.0/b2b/keys/renew"


def emulator(faults: FaultPlan | None = None, **options: Any) -> StoreEmulator:
    """A :class:`StoreEmulator` that accepts :data:`GOOD_TOKEN`, creates the items and free
    products a request names on first sight (no seeding) and logs every request."""
    options.setdefault("auto_create", True)
    options.setdefault("record_requests", True)
    options.setdefault("dev_token", GOOD_TOKEN)
    return StoreEmulator(faults=faults, **options)


def client_for(emu: StoreEmulator, **options: Any) -> StoreClient:
    """A client of ``emu`` with :data:`GOOD_TOKEN` (``options``: ``StoreClient``'s)."""
    return StoreClient(StaticTokenCredential(GOOD_TOKEN), endpoints=emu.endpoints, **options)
