"""The OpenTelemetry adapter fed events directly: span shapes, parentage, metrics, clean-up.

(End to end, over a real emulator with faults: tests/test_otel_emulator.py.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from store_async.errors import (
    FailureKind,
    OutcomeUnknownError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from store_async.instrumentation import (
    ClientHooks,
    opentelemetry,
)
from store_async.instrumentation._semconv import safe_url
from tests.support.events import URL, attempt, attempt_end, finished, started, unavailable
from tests.support.otel import Telemetry, points


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    made = Telemetry()
    yield made
    made.shutdown()


def open_calls(hooks: ClientHooks) -> dict[Any, Any]:
    """The adapter's table of open calls (white box: the leak checks read it)."""
    owner = getattr(hooks.on_call_start, "__self__", None)
    assert owner is not None
    table: dict[Any, Any] = owner._calls
    return table


def test_a_retried_call_is_one_internal_span_with_a_client_span_per_attempt(
    tel: Telemetry,
) -> None:
    hooks = tel.hooks()
    tracer = tel.tracer_provider.get_tracer("the-application")
    with tracer.start_as_current_span("handle-purchase") as outer:
        hooks.call_started(started())
        first = attempt(1)
        hooks.attempt_started(first)
        hooks.attempt_finished(attempt_end(1, 503, unavailable()))
        second = attempt(2)
        hooks.attempt_started(second)
        hooks.attempt_finished(attempt_end(2, 200))
        hooks.call_finished(finished(2))
    spans = {span.name: span for span in tel.spans() if span.name != "POST"}
    posts = [span for span in tel.spans() if span.name == "POST"]
    call = spans["StoreClient.consume"]
    assert call.kind is SpanKind.INTERNAL
    assert call.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id
    assert dict(call.attributes or {}) == {
        "store.operation": "consume",
        "store.cv_base": "cvbase",
        "store.idempotency_key": "k-1",
        "store.attempts": 2,
        "store.outcome": "ok",
    }
    assert call.status.status_code is StatusCode.UNSET
    assert len(posts) == 2
    for span, event in zip(posts, (first, second), strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == call.context.span_id
        assert span.context.trace_id == outer.get_span_context().trace_id
        # traceparent: version-traceid-spanid-flags, naming this attempt's span
        assert event.headers == {
            "traceparent": f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
            f"{span.context.trace_flags:02x}"
        }
    assert dict(posts[0].attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": 8081,
        "url.full": URL,
        "store.cv": "cvbase.1",
        "http.response.status_code": 503,
        "error.type": "ServiceUnavailableError",
        "store.failure_kind": "maybe_applied",
        "store.correlation_id": "corr-1",
        "store.request_id": "req-1",
    }
    assert posts[0].status.status_code is StatusCode.ERROR
    assert dict(posts[1].attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": 8081,
        "url.full": URL,
        "store.cv": "cvbase.2",
        "http.request.resend_count": 1,
        "http.response.status_code": 200,
        "store.correlation_id": "corr-2",
        "store.request_id": "req-2",
    }
    assert posts[1].status.status_code is StatusCode.UNSET
    assert open_calls(hooks) == {}


def test_a_failed_call_has_an_error_status_and_its_error_type(tel: Telemetry) -> None:
    hooks = tel.hooks()
    hooks.call_started(started())
    hooks.attempt_started(attempt(1))
    lost = TransportError("the connection was cut", kind=FailureKind.MAYBE_APPLIED)
    hooks.attempt_finished(attempt_end(1, None, lost))
    hooks.call_finished(finished(1, OutcomeUnknownError("maybe applied")))
    post, call = tel.spans()
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["store.outcome"] == "OutcomeUnknownError"
    assert call.attributes["error.type"] == "OutcomeUnknownError"
    assert call.parent is None  # no current span in the caller's context: a root span
    assert post.attributes is not None
    assert "http.response.status_code" not in post.attributes
    assert post.attributes["error.type"] == "TransportError"
    assert post.attributes["store.failure_kind"] == "maybe_applied"


def test_metrics_have_one_duration_point_per_attempt_and_bounded_attributes(
    tel: Telemetry,
) -> None:
    hooks = tel.hooks()
    hooks.call_started(started())
    for number, status, error in (
        (1, 429, ThrottledError("429", status=429)),
        (2, 503, unavailable()),
        (3, 200, None),
    ):
        hooks.attempt_started(attempt(number))
        hooks.attempt_finished(attempt_end(number, status, error))
    hooks.call_finished(finished(3))
    hooks.call_started(started(call_id=8))
    hooks.attempt_started(attempt(1, call_id=8))
    hooks.attempt_finished(attempt_end(1, 503, unavailable(), call_id=8))
    hooks.call_finished(finished(1, OutcomeUnknownError("maybe"), call_id=8))
    data = tel.metrics()
    durations = {
        tuple(sorted(point.attributes.items())): (point.count, point.sum)
        for point in points(data, "http.client.request.duration")
    }
    base = (
        ("http.request.method", "POST"),
        ("server.address", "127.0.0.1"),
        ("server.port", 8081),
    )
    assert durations == {
        tuple(
            sorted((*base, ("http.response.status_code", 429), ("error.type", "ThrottledError")))
        ): (1, 0.25),
        tuple(
            sorted(
                (
                    *base,
                    ("http.response.status_code", 503),
                    ("error.type", "ServiceUnavailableError"),
                )
            )
        ): (2, 0.5 + 0.25),
        tuple(sorted((*base, ("http.response.status_code", 200)))): (1, 0.75),
    }
    assert [(p.attributes, p.value) for p in points(data, "store.client.retries")] == [
        ({"store.operation": "consume"}, 2)
    ]
    assert [(p.attributes, p.value) for p in points(data, "store.client.throttled")] == [
        ({"store.operation": "consume"}, 1)
    ]
    assert [(p.attributes, p.value) for p in points(data, "store.client.outcome_unknown")] == [
        ({"store.operation": "consume"}, 1)
    ]
    assert [p.value for p in points(data, "store.client.retry_budget")] == [8.0]


@pytest.mark.parametrize("attempt_end_event", [True, False])
def test_a_call_cancelled_mid_attempt_ends_both_spans_and_forgets_the_call(
    tel: Telemetry, attempt_end_event: bool
) -> None:
    """The engine sends an interrupted attempt end, then the call end; without the former
    (a hook set combined oddly, a future engine) the call end still closes the attempt span."""
    hooks = tel.hooks()
    hooks.call_started(started())
    hooks.attempt_started(attempt(1))
    assert len(open_calls(hooks)) == 1
    if attempt_end_event:
        hooks.attempt_finished(attempt_end(1, None, interrupted="CancelledError"))
    hooks.call_finished(finished(1, interrupted="CancelledError"))
    assert open_calls(hooks) == {}
    post, call = tel.spans()
    assert post.attributes is not None
    assert post.attributes["error.type"] == "CancelledError"
    assert "http.response.status_code" not in post.attributes
    assert post.status.status_code is StatusCode.ERROR
    assert post.end_time is not None
    assert call.attributes is not None
    assert call.attributes["store.outcome"] == "CancelledError"
    assert call.status.status_code is StatusCode.ERROR
    durations = points(tel.metrics(), "http.client.request.duration")
    assert [p.attributes.get("error.type") for p in durations] == (
        ["CancelledError"] if attempt_end_event else []
    )


def test_one_hooks_set_serves_two_clients_whose_call_ids_collide(tel: Telemetry) -> None:
    """``call_id`` is unique per client only: the correlation-vector base tells calls apart."""
    hooks = tel.hooks()
    hooks.call_started(started(call_id=1, cv_base="clientA"))
    hooks.call_started(started(call_id=1, cv_base="clientB"))
    hooks.attempt_started(attempt(1, call_id=1, cv_base="clientB"))
    hooks.attempt_started(attempt(1, call_id=1, cv_base="clientA"))
    hooks.attempt_finished(attempt_end(1, 200, call_id=1, cv_base="clientA"))
    hooks.attempt_finished(attempt_end(1, 200, call_id=1, cv_base="clientB"))
    hooks.call_finished(finished(1, call_id=1, cv_base="clientB"))
    hooks.call_finished(finished(1, call_id=1, cv_base="clientA"))
    calls = {
        s.attributes["store.cv_base"]: s
        for s in tel.spans()
        if s.attributes and "store.cv_base" in s.attributes
    }
    for span in tel.spans():
        if span.name == "POST":
            assert span.attributes is not None
            base = str(span.attributes["store.cv"]).rpartition(".")[0]
            assert span.parent is not None
            assert span.parent.span_id == calls[base].context.span_id
    assert open_calls(hooks) == {}


def test_with_no_sdk_the_hooks_are_no_ops_that_still_forward_the_callers_trace() -> None:
    hooks = opentelemetry(trace.NoOpTracerProvider())
    upstream = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
    )
    token_context = trace.set_span_in_context(trace.NonRecordingSpan(upstream))
    from opentelemetry import context

    token = context.attach(token_context)
    try:
        hooks.call_started(started())
        event = attempt(1)
        hooks.attempt_started(event)
        hooks.attempt_finished(attempt_end(1, 200))
        hooks.call_finished(finished(1))
    finally:
        context.detach(token)
    assert event.headers == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    }
    assert open_calls(hooks) == {}


@pytest.mark.parametrize("with_baggage", [False, True])
def test_with_no_sdk_and_no_caller_trace_attempts_are_skipped_but_metrics_kept(
    tel: Telemetry, with_baggage: bool
) -> None:
    """The no-op tracer with nothing to forward: no span, no header (the propagator is the
    costly part); the caller's baggage alone still travels."""
    from opentelemetry import baggage, context

    hooks = opentelemetry(trace.NoOpTracerProvider(), tel.meter_provider)
    token = context.attach(baggage.set_baggage("tenant", "contoso")) if with_baggage else None
    try:
        hooks.call_started(started())
        event = attempt(1)
        hooks.attempt_started(event)
        hooks.attempt_finished(attempt_end(1, 204))
        hooks.call_finished(finished(1))
    finally:
        if token is not None:
            context.detach(token)
    assert event.headers == ({"baggage": "tenant=contoso"} if with_baggage else {})
    assert open_calls(hooks) == {}
    assert [p.count for p in points(tel.metrics(), "http.client.request.duration")] == [1]


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        (URL, URL),
        (
            "https://user:pw@store.example/v6?sig=abc&sv=1",
            "https://REDACTED:REDACTED@store.example/v6?sig=REDACTED&sv=REDACTED",
        ),
    ],
)
def test_url_full_never_carries_credentials(url: str, safe: str) -> None:
    assert safe_url(url) == safe


def test_bad_providers_are_typed_errors() -> None:
    with pytest.raises(ValidationError, match="tracer_provider must be"):
        opentelemetry(tracer_provider="jaeger")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="meter_provider must be"):
        opentelemetry(meter_provider=object())  # type: ignore[arg-type]


def test_without_the_extra_the_factory_says_what_to_install() -> None:
    probe = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from store_async.errors import ValidationError\n"
        "from store_async.instrumentation import opentelemetry\n"
        "try:\n    opentelemetry()\nexcept ValidationError as e:\n    print(e)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert output.strip() == (
        "the OpenTelemetry hooks need opentelemetry-api: pip install 'store-async[otel]'"
    )
