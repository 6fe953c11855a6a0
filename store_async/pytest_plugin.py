"""pytest plugin: a ``store_emulator`` fixture for testing your own services against the Store.

Installed with ``store-async`` (entry point ``pytest11``), so the fixture is available in
every test session once the package is installed. It needs ``pytest-asyncio``; without it (not
installed, or ``-p no:asyncio``) the plugin loads harmlessly and the fixture fails with a clear
message when a test asks for it.

In pytest-asyncio's default **strict** mode, mark each test that uses the fixture with
``@pytest.mark.asyncio`` (or a module with ``pytestmark = pytest.mark.asyncio``): strict mode
leaves an unmarked ``async def`` test to pytest, which skips it with a warning. In **auto** mode
(``asyncio_mode = "auto"`` in your pytest configuration) no marker is needed. Either way, set
``asyncio_default_fixture_loop_scope = "function"``, or pytest-asyncio warns that it is unset.

Example::

    import pytest
    from store_async import ConsumeRequest, StoreClient, UserIdentity

    @pytest.mark.asyncio  # strict mode (the default); not needed in auto mode
    async def test_fulfills_once(store_emulator):
        item = store_emulator.add_consumable("user-1", "9NBLGGH42CFD")
        async with StoreClient(
            store_emulator.credential(), endpoints=store_emulator.endpoints
        ) as store:
            request = ConsumeRequest.for_item(
                UserIdentity(identity_value="user-1", local_ticket_reference="ref"),
                item.item_id,
            )
            await store.consume(request)
        assert store_emulator.ledger.applied(request.tracking_id) == 1

Configure it per test with the ``store_emulator`` marker, whose keyword arguments go to
:class:`~store_async.emulator.StoreEmulator`::

    @pytest.mark.store_emulator(faults=FaultPlan(rate=0.2, seed=1), tls=True)
    async def test_survives_faults(store_emulator): ...

The fixture has function scope: each test gets a fresh, started emulator (its own port, users,
ledger and fault sequence), stopped after the test.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from store_async.emulator import StoreEmulator

__all__ = ["pytest_configure"]

MARKER = "store_emulator"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): StoreEmulator arguments for the store_emulator fixture",
    )
    # Decided here, not at import: pytest-asyncio may be installed yet disabled.
    if config.pluginmanager.has_plugin("asyncio"):
        import pytest_asyncio

        fixture = pytest_asyncio.fixture(_running_emulator, name="store_emulator")
    else:
        fixture = pytest.fixture(_needs_pytest_asyncio, name="store_emulator")
    # pytest reads fixtures of a plugin object from its type, unless it is a module.
    holder = types.ModuleType("store_async.pytest_plugin.fixtures")
    holder.store_emulator = fixture  # type: ignore[attr-defined]
    config.pluginmanager.register(holder, "store_async-emulator-fixture")


def _emulator_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError("@pytest.mark.store_emulator takes keyword arguments only")
    return dict(marker.kwargs)


async def _running_emulator(request: pytest.FixtureRequest) -> AsyncIterator[StoreEmulator]:
    """A started ``StoreEmulator`` (``url``, ``endpoints``, ``credential()``, ``ledger``...);
    options from ``@pytest.mark.store_emulator(...)``."""
    # Imported here so that loading the plugin (in every pytest session) stays cheap.
    from store_async.emulator import StoreEmulator

    async with StoreEmulator(**_emulator_options(request)) as emulator:
        yield emulator


def _needs_pytest_asyncio() -> None:
    """A started ``StoreEmulator`` (needs pytest-asyncio)."""
    pytest.fail(
        "the store_emulator fixture needs pytest-asyncio: pip install pytest-asyncio",
        pytrace=False,
    )
