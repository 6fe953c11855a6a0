"""Shared fixtures: the engine tests' fake Store server and a user to act for.

The engine tests run against :mod:`tests.fake_store`, a real aiohttp server on 127.0.0.1 whose
faults they script request by request (aioresponses is not used: version 0.7.9 breaks on
aiohttp >= 3.14, upstream issue #289, and real sockets exercise the real failure paths).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store_async.models import UserIdentity
from tests.fake_store import FakeStore, make_store_id_key

# The session's PostgreSQL server (fleet journal tests).
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture
async def fake_store() -> AsyncIterator[FakeStore]:
    async with FakeStore() as store:
        yield store


@pytest.fixture
def beneficiary() -> UserIdentity:
    return UserIdentity(identity_value=make_store_id_key(), local_ticket_reference="ref-1")
