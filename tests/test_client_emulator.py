"""End to end against the Store emulator, with a real azure-identity credential over TLS."""

from __future__ import annotations

import asyncio

import pytest
from azure.identity.aio import ClientSecretCredential

from store_async import StoreClient
from store_async.emulator import FaultPlan, StoreEmulator
from store_async.errors import FailureKind, OutcomeUnknownError, TransportError
from store_async.instrumentation import AttemptFinished, ClientHooks
from store_async.models import ConsumeRequest, ConsumeResult, QueryRequest, UserIdentity


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def test_client_secret_credential_and_25_percent_faults_fulfil_each_purchase_once() -> None:
    emulator = StoreEmulator(faults=FaultPlan(rate=0.25, seed=7), tls=True)
    async with emulator:
        requests: list[ConsumeRequest] = []
        for user in range(10):
            user_id = f"user-{user}"
            beneficiary = UserIdentity(
                identity_value=emulator.mint_store_id_key(user_id), local_ticket_reference=user_id
            )
            for _ in range(40):
                item = emulator.add_consumable(user_id, "9NBLGGH42CFD")
                requests.append(ConsumeRequest.for_item(beneficiary, item.item_id))
        credential = ClientSecretCredential(
            emulator.tenant_id,
            emulator.client_id,
            emulator.client_secret,
            authority=emulator.authority,
            connection_verify=emulator.ca_file,
        )
        async with (
            credential,
            StoreClient(
                credential,
                endpoints=emulator.endpoints,
                ssl_context=emulator.client_ssl_context(),
                sleep=no_sleep,
            ) as store,
        ):
            query = QueryRequest(
                beneficiaries=[requests[0].beneficiary], product_types=["UnmanagedConsumable"]
            )
            owned = [item async for item in store.iter_products(query)]
            assert len(owned) == 40
            outcomes = await asyncio.gather(
                *(store.consume(r) for r in requests), return_exceptions=True
            )
            assert all(isinstance(o, ConsumeResult | OutcomeUnknownError) for o in outcomes)
            unknown = [
                r
                for r, o in zip(requests, outcomes, strict=True)
                if isinstance(o, OutcomeUnknownError)
            ]
            await asyncio.gather(*(store.consume(r) for r in unknown))
            # Queries (reads) ride the same faults; every owned item is now fulfilled.
            remaining = [item async for item in store.iter_products(query)]
        assert all(emulator.ledger.applied(r.idempotency_key) == 1 for r in requests)
        assert emulator.tokens_issued == 1
        assert remaining == []


async def test_an_untrusted_certificate_is_not_sent_and_not_retried() -> None:
    attempts: list[AttemptFinished] = []
    async with (
        StoreEmulator(tls=True) as emulator,
        StoreClient(
            emulator.credential(),
            endpoints=emulator.endpoints,  # no ssl_context: the test CA is not trusted
            hooks=ClientHooks(on_attempt_end=attempts.append),
            sleep=no_sleep,
        ) as store,
    ):
        with pytest.raises(TransportError) as raised:
            await store.get_offline_license("p", "s", "c")
    assert raised.value.kind is FailureKind.NOT_SENT
    assert not raised.value.retryable
    assert "Certificate" in str(raised.value)
    assert len(attempts) == 1
