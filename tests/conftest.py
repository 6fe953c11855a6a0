"""Shared fixtures: the engine tests' emulator and a user to act for.

The engine tests run against :mod:`store_async.emulator`, a real aiohttp server on 127.0.0.1
whose faults they script request by request with a ``FaultPlan`` (aioresponses is not used:
version 0.7.9 breaks on aiohttp >= 3.14, upstream issue #289, and real sockets exercise the
real failure paths). Pure helpers live in :mod:`tests.support`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store_async.emulator import StoreEmulator
from store_async.models import UserIdentity
from tests.support.emulator import emulator as recording_emulator

# The session's PostgreSQL server (fleet journal tests).
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture
async def emu() -> AsyncIterator[StoreEmulator]:
    """An emulator without faults that logs every request (see :mod:`tests.support.emulator`)."""
    async with recording_emulator() as running:
        yield running


@pytest.fixture
def beneficiary() -> UserIdentity:
    """A user the emulator knows by an opaque id (its items are created on first sight)."""
    return UserIdentity(identity_value="user-1", local_ticket_reference="ref-1")
