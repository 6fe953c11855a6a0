"""The OpenTelemetry and Prometheus adapters end to end: a real emulator, real sockets, faults.

What the SDK's in-memory exporters hold is checked against what the emulator received
(its request log): one call span per call, one CLIENT span per request received, each a child
of its call span, the ``traceparent`` each request carried naming its CLIENT span, one duration
point per attempt, and no access token or Store ID key anywhere in the exported data.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from store_async import StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.emulator import FaultKind, FaultPlan
from store_async.errors import OutcomeUnknownError, StoreError
from store_async.instrumentation import prometheus
from store_async.models import ConsumeRequest, UserIdentity
from tests.support.credentials import GOOD_TOKEN
from tests.support.emulator import emulator
from tests.support.otel import Telemetry, points

CALLS = 300
# Store ID keys as distinctive as a real one: none of it may reach a span or a metric.
STORE_ID_KEY = "eyJhbGciOiJSUzI1NiJ9.STOREIDKEY-SECRET-{n:03d}.c2lnbmF0dXJl"


async def no_wait(_seconds: float) -> None:
    """The client's retry sleep: retries go out at once (no real-time waits in tests)."""


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    made = Telemetry()
    yield made
    made.shutdown()


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def resend_count(span: ReadableSpan) -> int:
    """``http.request.resend_count``, absent on first attempts."""
    return int((span.attributes or {}).get("http.request.resend_count", 0))  # type: ignore[arg-type]


async def test_300_consumes_at_25_percent_faults_trace_every_request(tel: Telemetry) -> None:
    queue = [
        ConsumeRequest.for_item(
            UserIdentity(identity_value=STORE_ID_KEY.format(n=n), local_ticket_reference="r"),
            f"item-{n}",
        )
        for n in range(CALLS)
    ]
    # 25 % random faults, and four calls whose answers are always lost (applied, then the
    # connection dropped): outcome-unknown happens whatever the interleaving.
    lost = {request.tracking_id: FaultKind.DROP_AFTER_COMMIT for request in queue[::75]}
    plan = FaultPlan(rate=0.25, seed=1212, retry_after=0.0, slow_seconds=0.001, by_key=lost)
    tracer = tel.tracer_provider.get_tracer("the-application")
    outcomes: Counter[str] = Counter()
    async with (
        emulator(plan) as emu,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN),
            endpoints=emu.endpoints,
            hooks=tel.hooks(),
            sleep=no_wait,
        ) as store,
    ):

        async def worker() -> None:
            while queue:
                request = queue.pop()
                try:
                    await store.consume(request, attempts=3)  # few: outcome-unknown happens
                except StoreError as error:
                    outcomes[type(error).__name__] += 1
                else:
                    outcomes["ok"] += 1

        with tracer.start_as_current_span("fulfil-batch") as batch:
            await asyncio.gather(*(worker() for _ in range(16)))
        received = emu.request_log.of("consume")
        assert len(received) == len(emu.request_log)  # nothing but consumes was sent

    spans = [span for span in tel.spans() if span.name != "fulfil-batch"]
    calls = {span.context.span_id: span for span in spans if span.kind is SpanKind.INTERNAL}
    posts = [span for span in spans if span.kind is SpanKind.CLIENT]
    # One call span per call, each a child of the caller's current span; outcomes agree.
    assert len(calls) == CALLS
    assert sum(outcomes.values()) == CALLS
    assert outcomes["ok"] < CALLS  # the faults really failed some calls...
    assert outcomes["OutcomeUnknownError"] >= len(lost)  # ...including maybe-applied ones
    assert Counter(str((s.attributes or {})["store.outcome"]) for s in calls.values()) == outcomes
    for call in calls.values():
        assert call.name == "StoreClient.consume"
        assert call.parent is not None
        assert call.parent.span_id == batch.get_span_context().span_id
        failed = (call.attributes or {})["store.outcome"] != "ok"
        assert (call.status.status_code is StatusCode.ERROR) == failed
    # One CLIENT span per request the emulator received, each the child of a call span.
    assert len(posts) == len(received) > CALLS
    children: dict[int, list[ReadableSpan]] = {}
    for post in posts:
        assert post.name == "POST"
        assert post.parent is not None
        assert post.parent.span_id in calls
        children.setdefault(post.parent.span_id, []).append(post)
    for span_id, attempts in children.items():
        call = calls[span_id]
        attributes = call.attributes or {}
        assert attributes["store.attempts"] == len(attempts)
        # resend counts 0 (absent), 1, 2... and every attempt's MS-CV extends the call's base
        resends = sorted(resend_count(post) for post in attempts)
        assert resends == list(range(len(attempts)))
        for post in attempts:
            cv = (post.attributes or {})["store.cv"]
            assert cv == f"{attributes['store.cv_base']}.{resend_count(post) + 1}"
    assert sum(len(a) for a in children.values()) == len(posts)
    # Each request carried the traceparent of its own CLIENT span (and the MS-CV it names).
    by_parent = {traceparent(post): post for post in posts}
    assert len(by_parent) == len(posts)
    for request in received:
        post = by_parent[request.headers["traceparent"]]
        assert request.headers["MS-CV"] == (post.attributes or {})["store.cv"]
        status = (post.attributes or {}).get("http.response.status_code")
        if request.status:  # answered (0: the emulator cut the connection)
            assert status == request.status
    assert {request.headers["traceparent"] for request in received} == set(by_parent)
    # Metrics: one duration point per attempt; counters agree with the spans.
    data = tel.metrics()
    assert sum(p.count for p in points(data, "http.client.request.duration")) == len(posts)
    retries = sum(p.value for p in points(data, "store.client.retries"))
    assert retries == len(posts) - CALLS
    throttled = sum(p.value for p in points(data, "store.client.throttled"))
    assert throttled == sum(1 for r in received if r.status == 429) > 0
    unknown = sum(p.value for p in points(data, "store.client.outcome_unknown"))
    assert unknown == outcomes["OutcomeUnknownError"]
    for point in points(data, "http.client.request.duration"):
        assert set(point.attributes) <= {
            "http.request.method",
            "server.address",
            "server.port",
            "http.response.status_code",
            "error.type",
        }
    # No secret anywhere in what an exporter would send.
    exported = "\n".join(span.to_json() for span in tel.spans()) + data.to_json()
    assert GOOD_TOKEN not in exported
    assert "STOREIDKEY-SECRET" not in exported
    assert "Bearer" not in exported


async def test_a_caller_cancelled_mid_attempt_leaves_both_spans_ended(
    tel: Telemetry, beneficiary: UserIdentity
) -> None:
    hooks = tel.hooks()
    async with (
        emulator(FaultPlan.always(FaultKind.HANG)) as emu,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN), endpoints=emu.endpoints, hooks=hooks
        ) as store,
    ):
        call = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "i")))
        await emu.wait_for_hanging(1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    owner = getattr(hooks.on_call_start, "__self__", None)
    assert owner is not None
    assert owner._calls == {}  # the open-call table forgot the call: no leak
    post, consume = tel.spans()
    assert (post.name, consume.name) == ("POST", "StoreClient.consume")
    assert (post.attributes or {})["error.type"] == "CancelledError"
    assert (consume.attributes or {})["store.outcome"] == "CancelledError"
    assert consume.status.status_code is StatusCode.ERROR
    assert post.parent is not None
    assert post.parent.span_id == consume.context.span_id


async def test_the_callers_client_request_id_is_the_call_spans_cv_base(
    tel: Telemetry, beneficiary: UserIdentity
) -> None:
    incoming = "tul4NUsfs9Cl7mOf.3"  # a caller's own correlation vector, extended
    async with (
        emulator(FaultPlan(script={"consume": [FaultKind.HTTP_503, None]})) as emu,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN),
            endpoints=emu.endpoints,
            hooks=tel.hooks(),
            sleep=no_wait,
        ) as store,
    ):
        await store.consume(ConsumeRequest.for_item(beneficiary, "i"), client_request_id=incoming)
        sent = [request.headers["MS-CV"] for request in emu.request_log]
    first, second, call = tel.spans()
    assert (call.attributes or {})["store.client_request_id"] == incoming
    assert (call.attributes or {})["store.cv_base"] == incoming
    assert sent == [f"{incoming}.1", f"{incoming}.2"]
    assert [(s.attributes or {})["store.cv"] for s in (first, second)] == sent
    for post in (first, second):
        assert post.parent is not None
        assert post.parent.span_id == call.context.span_id


async def test_prometheus_counts_a_scripted_fault_sequence_exactly(
    beneficiary: UserIdentity,
) -> None:
    registry = CollectorRegistry()
    script = [
        FaultKind.HTTP_429,  # call 1: throttled, resent
        FaultKind.HTTP_503,  # call 1: resent again
        None,  # call 1: succeeds at its third attempt
        FaultKind.DROP_AFTER_COMMIT,  # call 2: applied, answer lost, three times
        FaultKind.DROP_AFTER_COMMIT,
        FaultKind.DROP_AFTER_COMMIT,
        None,  # call 3: first attempt succeeds
    ]
    plan = FaultPlan(script={"consume": script}, retry_after=0.0)
    async with (
        emulator(plan) as emu,
        StoreClient(
            StaticTokenCredential(GOOD_TOKEN),
            endpoints=emu.endpoints,
            hooks=prometheus(registry),
            sleep=no_wait,
        ) as store,
    ):
        await store.consume(ConsumeRequest.for_item(beneficiary, "a"), attempts=3)
        with pytest.raises(OutcomeUnknownError):
            await store.consume(ConsumeRequest.for_item(beneficiary, "b"), attempts=3)
        await store.consume(ConsumeRequest.for_item(beneficiary, "c"), attempts=3)
        assert len(emu.request_log) == 7
        port = emu.endpoints.collections.rpartition(":")[2].split("/")[0]
    value = registry.get_sample_value
    consume = {"operation": "consume"}
    assert value("store_client_retries_total", consume) == 4
    assert value("store_client_throttled_total", consume) == 1
    assert value("store_client_outcome_unknown_total", consume) == 1
    duration = "store_http_client_request_duration_seconds_count"
    labels = {"method": "POST", "server_address": "127.0.0.1", "server_port": port}
    counts = {
        (sample.labels["status_code"], sample.labels["error_type"]): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == duration
    }
    assert counts == {
        ("429", "ThrottledError"): 1,
        ("503", "ServiceUnavailableError"): 1,
        ("204", ""): 2,  # consume answers 204 No Content
        ("", "TransportError"): 3,
    }
    for status_code, error_type in counts:
        assert (
            value(duration, {**labels, "status_code": status_code, "error_type": error_type})
            == counts[(status_code, error_type)]
        )
