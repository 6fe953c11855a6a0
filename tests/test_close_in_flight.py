"""``close()`` never raises ``CancelledError`` into calls nobody cancelled (issue 15, item 3)."""

from __future__ import annotations

import asyncio

from store_async import (
    ConsumeRequest,
    Endpoints,
    FailureKind,
    OutcomeUnknownError,
    StaticTokenCredential,
    StoreClient,
    StoreError,
    TransportError,
    UserIdentity,
)

USER = UserIdentity(identity_value="user-1", local_ticket_reference="r")


async def test_close_ends_queued_and_in_flight_calls_in_typed_errors() -> None:
    received = 0
    all_in = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            await reader.readuntil(b"\r\n\r\n")
            received += 1
            if received == 20:
                all_in.set()  # every connection slot now holds a request
            await reader.read()  # until the client goes away
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        store = StoreClient(
            StaticTokenCredential("t"),
            endpoints=Endpoints.single(f"http://127.0.0.1:{port}"),
            limit=20,
        )
        await store.__aenter__()
        calls = [
            asyncio.create_task(store.consume(ConsumeRequest.for_item(USER, f"item-{n}")))
            for n in range(200)
        ]
        await all_in.wait()
        await store.close()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert not any(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    in_flight = [o for o in outcomes if isinstance(o, OutcomeUnknownError)]
    queued = [o for o in outcomes if isinstance(o, TransportError)]
    assert len(in_flight) == 20  # sent: maybe applied, resend with the same key
    assert all(o.idempotency_key for o in in_flight)
    assert len(queued) == 180
    assert all(o.kind is FailureKind.NOT_SENT for o in queued)  # never sent: safe to resend
