"""The pytest plugin under both pytest-asyncio modes, in fresh pytest sessions (``pytester``):
strict (pytest-asyncio's default) and auto. docs/guides/testing.md says what each needs."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# A user's test module: the README's example, plus the marker.
USER_TESTS = """
import pytest
from store_async import ConsumeRequest, StoreClient, UserIdentity
from store_async.emulator import FaultKind, FaultPlan

{marker}
async def test_fulfills_once(store_emulator):
    item = store_emulator.add_consumable("user-1", "9NBLGGH42CFD")
    credential, endpoints = store_emulator.credential(), store_emulator.endpoints
    async with StoreClient(credential, endpoints=endpoints) as store:
        user = UserIdentity(identity_value="user-1", local_ticket_reference="ref")
        request = ConsumeRequest.for_item(user, item.item_id, key="order-1")
        await store.consume(request)
    assert store_emulator.ledger.applied(request.tracking_id) == 1

{marker}
@pytest.mark.store_emulator(faults=FaultPlan(script={{"consume": [FaultKind.HTTP_503]}}))
async def test_with_faults(store_emulator):
    assert store_emulator.faults.script["consume"] == (FaultKind.HTTP_503,)
"""


def session(pytester: pytest.Pytester, mode: str, *extra: str) -> pytest.RunResult:
    """A fresh pytest session configured as the guide says (warnings are errors, to catch any
    the plugin would cause; the loop-scope option silences pytest-asyncio's own warning)."""
    return pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}",
        "-o", "asyncio_default_fixture_loop_scope=function", *extra,
    )  # fmt: skip


def run(pytester: pytest.Pytester, mode: str, marker: str) -> pytest.RunResult:
    pytester.makepyfile(USER_TESTS.format(marker=marker))
    return session(pytester, mode, "-W", "error")


def test_strict_mode_with_the_asyncio_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, "strict", "@pytest.mark.asyncio")
    result.assert_outcomes(passed=2)


def test_strict_mode_module_level_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\npytestmark = pytest.mark.asyncio\n" + USER_TESTS.format(marker="")
    )
    result = session(pytester, "strict", "-W", "error")
    result.assert_outcomes(passed=2)


def test_auto_mode_needs_no_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, "auto", "")
    result.assert_outcomes(passed=2)


def test_strict_mode_without_the_marker_is_not_run(pytester: pytest.Pytester) -> None:
    """What the guide warns about: strict mode leaves an unmarked ``async def`` test to pytest,
    which does not run it (and fails under -W error: its warning becomes an error)."""
    pytester.makepyfile(USER_TESTS.format(marker=""))
    result = session(pytester, "strict")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
