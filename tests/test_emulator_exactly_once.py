"""Exactly-once through the real StoreClient while the emulator injects faults."""

from __future__ import annotations

import asyncio

import pytest

from store_async import StoreClient
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.errors import OutcomeUnknownError, StoreError
from store_async.models import ConsumeRequest, UserIdentity


async def no_wait(_seconds: float) -> None:
    """The client's backoff, without real time: the faults, not the clock, are under test."""
    await asyncio.sleep(0)


async def consume_all(
    store: StoreClient, requests: list[ConsumeRequest], concurrency: int
) -> tuple[list[ConsumeRequest], list[StoreError]]:
    """Consume with ``concurrency`` workers; return the unsettled requests and their errors."""
    queue: asyncio.Queue[ConsumeRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    unsettled: list[ConsumeRequest] = []
    errors: list[StoreError] = []

    async def worker() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            try:
                # Few attempts per call, so outcome-unknown really happens.
                await store.consume(request, attempts=3)
            except StoreError as failure:
                unsettled.append(request)
                errors.append(failure)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return unsettled, errors


@pytest.mark.slow
async def test_5000_consumes_at_25_percent_faults_apply_each_tracking_id_exactly_once() -> None:
    plan = FaultPlan(rate=0.25, seed=2024, retry_after=0.0, slow_seconds=0.001)
    async with StoreEmulator(faults=plan) as emu:
        requests = []
        for n in range(5000):
            user = f"user-{n % 100}"
            item = emu.add_consumable(user, f"product-{n % 7}")
            beneficiary = UserIdentity(identity_value=user, local_ticket_reference=user)
            requests.append(ConsumeRequest.for_item(beneficiary, item.item_id))

        resubmitted = 0
        async with StoreClient(emu.credential(), endpoints=emu.endpoints, sleep=no_wait) as store:
            pending = requests
            for _round in range(20):
                pending, errors = await consume_all(store, pending, concurrency=64)
                if not pending:
                    break
                resubmitted += len(pending)
                for request, error in zip(pending, errors, strict=True):
                    # Unsettled means: outcome unknown for this very tracking id, or a
                    # retryable refusal (429/503) once the retry budget ran dry.
                    if isinstance(error, OutcomeUnknownError):
                        assert error.tracking_id == request.tracking_id
                    else:
                        assert error.retryable, error
            else:
                pytest.fail(f"{len(pending)} consumes never settled")

        for request in requests:
            assert emu.ledger.applied(request.idempotency_key) == 1
        assert emu.ledger.total == 5000
        assert emu.ledger.duplicates() == {}
        assert all(item.consumed for n in range(100) for item in emu.items_of(f"user-{n}"))
        by_kind = emu.stats.faults_by_kind("consume")
        assert sum(by_kind.values()) > 1000
        # The dangerous faults (applied, answer lost) really happened, and were settled.
        assert by_kind[FaultKind.DROP_AFTER_COMMIT] > 100
        assert by_kind[FaultKind.HTTP_500] > 100
        assert resubmitted > 0
