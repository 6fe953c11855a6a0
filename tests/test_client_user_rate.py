"""``StoreClient(user_rate=...)``: per-user pacing for web services (issue 17, item 2)."""

from __future__ import annotations

import pytest

from store_async import (
    ConsumeRequest,
    Endpoints,
    FailureKind,
    MockRequest,
    MockResponse,
    MockTransport,
    StaticTokenCredential,
    StoreClient,
    ThrottledError,
    UserIdentity,
    ValidationError,
)

HOT = UserIdentity(identity_value="hot-user", local_ticket_reference="h")
COLD = UserIdentity(identity_value="cold-user", local_ticket_reference="c")


def client(transport: MockTransport, user_rate: object) -> StoreClient:
    return StoreClient(
        StaticTokenCredential("t"),
        endpoints=Endpoints.single("https://store.example"),
        transport=transport,
        user_rate=user_rate,  # type: ignore[arg-type]
    )


async def test_a_user_over_its_rate_gets_throttled_without_a_send_and_others_go_ahead() -> None:
    transport = MockTransport(lambda _request: MockResponse(204))
    async with client(transport, "2/100") as store:
        await store.consume(ConsumeRequest.for_item(HOT, "i1"))
        await store.consume(ConsumeRequest.for_item(HOT, "i2"))
        with pytest.raises(ThrottledError) as raised:
            await store.consume(ConsumeRequest.for_item(HOT, "i3"), timeout=5)
        await store.consume(ConsumeRequest.for_item(COLD, "i4"))
    assert len(transport.requests) == 3  # the third call of the hot user was never sent
    assert raised.value.kind is FailureKind.NOT_SENT
    assert raised.value.retry_after is not None
    assert 90 < raised.value.retry_after <= 100
    assert "hot-user" not in str(raised.value)


async def test_a_429_parks_its_user_until_retry_after() -> None:
    answers = [MockResponse(429, headers={"Retry-After": "50"})]

    def handler(_request: MockRequest) -> MockResponse:
        return answers.pop() if answers else MockResponse(204)

    transport = MockTransport(handler)
    async with client(transport, "200/300") as store:
        with pytest.raises(ThrottledError):
            await store.consume(ConsumeRequest.for_item(HOT, "i1"), timeout=10)
        with pytest.raises(ThrottledError) as parked:
            await store.consume(ConsumeRequest.for_item(HOT, "i2"), timeout=10)
        await store.consume(ConsumeRequest.for_item(COLD, "i3"))
    assert len(transport.requests) == 2  # i2 waited for nobody: parked, not sent
    assert parked.value.kind is FailureKind.NOT_SENT


def test_a_bad_user_rate_is_refused() -> None:
    with pytest.raises(ValidationError):
        client(MockTransport(lambda _r: MockResponse(204)), "fast")
    with pytest.raises(ValidationError):
        client(MockTransport(lambda _r: MockResponse(204)), 5)
