"""OpenTelemetry hooks: a span per call, a ``CLIENT`` span per attempt, HTTP client metrics.

Built on ``opentelemetry-api`` alone (the ``otel`` extra): the application picks the SDK, the
exporters and the providers; with no SDK configured every operation here is a no-op. This
module is imported only by :func:`store_async.instrumentation.opentelemetry`, so
``import store_async`` never loads OpenTelemetry.

What is emitted (names per the OpenTelemetry HTTP semantic conventions where one exists):

- an ``INTERNAL`` span ``StoreClient.<operation>`` per call, a child of the caller's current
  span, with ``store.operation``, ``store.idempotency_key``, ``store.cv_base``,
  ``store.attempts`` and ``store.outcome``, and an error status on failure;
- a ``CLIENT`` span per HTTP attempt, named by its method (``POST``), a child of the call
  span, whose context travels to the server in a ``traceparent`` header (the global
  propagator);
- the histogram ``http.client.request.duration`` (seconds, per attempt) and the counters
  ``store.client.retries``, ``store.client.throttled``, ``store.client.outcome_unknown`` and the
  gauge ``store.client.retry_budget``. Metric attributes have bounded cardinality: method,
  server, status or error class, operation; never a key, a correlation vector or a user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from opentelemetry import baggage, metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from store_async._version import __version__
from store_async.errors import OutcomeUnknownError, ThrottledError, ValidationError
from store_async.instrumentation._hooks import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
    ClientHooks,
)
from store_async.instrumentation._semconv import DURATION_BUCKETS, safe_url

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["opentelemetry_hooks"]

_SCOPE: Final = "store_async"
_ERROR: Final = Status(StatusCode.ERROR)


def _call_key(call_id: int, cv_base: str) -> tuple[int, str]:
    # call_id is unique within one client; one set of hooks may serve several clients, so the
    # call's correlation-vector base (random per call) is part of the key.
    return call_id, cv_base


class _OtelHooks:
    """The state behind one :func:`opentelemetry_hooks` set: open spans by call."""

    __slots__ = (
        "_budget",
        "_calls",
        "_duration",
        "_labels",
        "_names",
        "_outcome_unknown",
        "_retries",
        "_throttled",
        "_tracer",
    )

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self._tracer = tracer
        # (call_id, cv_base) -> [call span, open attempt span or None, dark]; removed at call end.
        self._calls: dict[tuple[int, str], list[Any]] = {}
        self._names: dict[str, str] = {}
        self._labels: dict[tuple[str, str, int, int | None, str | None], dict[str, Any]] = {}
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests (one per attempt).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._retries = meter.create_counter(
            "store.client.retries",
            unit="{retry}",
            description="Attempts that resent a request (second and later attempts).",
        )
        self._throttled = meter.create_counter(
            "store.client.throttled",
            unit="{attempt}",
            description="Attempts the Store answered with 429 Too Many Requests.",
        )
        self._outcome_unknown = meter.create_counter(
            "store.client.outcome_unknown",
            unit="{call}",
            description="Calls that ended in OutcomeUnknownError (maybe applied by the Store).",
        )
        # A synchronous gauge: the budget is known at each attempt's end, not on a schedule.
        self._budget = meter.create_gauge(
            "store.client.retry_budget",
            unit="{token}",
            description="Tokens left in the client's retry budget after the latest attempt.",
        )

    def hooks(self) -> ClientHooks:
        return ClientHooks(
            on_call_start=self.call_started,
            on_call_end=self.call_finished,
            on_attempt_start=self.attempt_started,
            on_attempt_end=self.attempt_finished,
        )

    def call_started(self, event: CallStarted) -> None:
        operation = event.operation
        name = self._names.get(operation)
        if name is None:
            name = self._names[operation] = "StoreClient." + operation
        attributes: dict[str, Any] = {"store.operation": operation, "store.cv_base": event.cv_base}
        if event.idempotency_key is not None:
            attributes["store.idempotency_key"] = event.idempotency_key
        if event.client_request_id is not None:
            attributes["store.client_request_id"] = event.client_request_id
        # No context given: the span's parent is whatever span is current in the caller's task.
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        # Decided once per call: with no SDK (no-op tracer) and no trace or baggage from the
        # caller, attempts have nothing to trace or propagate; the propagator alone would cost
        # more than the rest of these hooks.
        dark = not span.get_span_context().is_valid and not baggage.get_all()
        self._calls[_call_key(event.call_id, event.cv_base)] = [span, None, dark]

    def attempt_started(self, event: AttemptStarted) -> None:
        entry = self._calls.get(_call_key(event.call_id, event.cv.rpartition(".")[0]))
        if entry is not None and entry[2]:
            return
        parent = trace.set_span_in_context(entry[0]) if entry is not None else None
        attributes: dict[str, Any] = {
            "http.request.method": event.method,
            "server.address": event.server_address,
            "server.port": event.server_port,
            "url.full": safe_url(event.url),
            "store.cv": event.cv,
        }
        resends = event.attempt - 1
        if resends > 0:
            attributes["http.request.resend_count"] = resends
        span = self._tracer.start_span(
            event.method, context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        if entry is not None:
            entry[1] = span
        # The global propagator (W3C trace context by default) writes `traceparent`.
        propagate.inject(event.headers, context=trace.set_span_in_context(span))
        if entry is None:
            span.end()  # no call to hang it on (an attempt event without its call): never leak

    def attempt_finished(self, event: AttemptFinished) -> None:
        status = event.status
        error = event.error
        # The error's class, or the interruption's (CancelledError): bounded values.
        error_type = event.interrupted if error is None else type(error).__name__
        entry = self._calls.get(_call_key(event.call_id, event.cv.rpartition(".")[0]))
        span = None
        if entry is not None:
            span, entry[1] = entry[1], None
        if span is not None:
            if span.is_recording():  # one set_attributes: the SDK locks once per call
                attributes: dict[str, Any] = {}
                if status is not None:
                    attributes["http.response.status_code"] = status
                if error_type is not None:
                    attributes["error.type"] = error_type
                    span.set_status(_ERROR)
                if error is not None:
                    attributes["store.failure_kind"] = error.kind.value
                if event.correlation_id is not None:
                    attributes["store.correlation_id"] = event.correlation_id
                if event.request_id is not None:
                    attributes["store.request_id"] = event.request_id
                span.set_attributes(attributes)
            span.end()
        # Metric attributes: bounded (method, server, status or error class): one dict each.
        label_key = (event.method, event.server_address, event.server_port, status, error_type)
        labels = self._labels.get(label_key)
        if labels is None:
            labels = {
                "http.request.method": event.method,
                "server.address": event.server_address,
                "server.port": event.server_port,
            }
            if status is not None:
                labels["http.response.status_code"] = status
            if error_type is not None:
                labels["error.type"] = error_type
            self._labels[label_key] = labels
        self._duration.record(event.duration, labels)
        self._budget.set(event.retry_budget)
        if event.attempt > 1:
            self._retries.add(1, {"store.operation": event.operation})
        if isinstance(error, ThrottledError):
            self._throttled.add(1, {"store.operation": event.operation})

    def call_finished(self, event: CallFinished) -> None:
        entry = self._calls.pop(_call_key(event.call_id, event.cv_base), None)
        outcome = event.outcome
        if isinstance(event.error, OutcomeUnknownError):
            self._outcome_unknown.add(1, {"store.operation": event.operation})
        if entry is None:
            return
        span: Span = entry[0]
        attempt: Span | None = entry[1]
        if attempt is not None:  # no attempt end event came (the engine always sends one)
            if attempt.is_recording():
                attempt.set_attribute("error.type", outcome)
                attempt.set_status(_ERROR)
            attempt.end()
        if span.is_recording():
            if outcome == "ok":
                span.set_attributes({"store.attempts": event.attempts, "store.outcome": outcome})
            else:
                span.set_attributes(
                    {
                        "store.attempts": event.attempts,
                        "store.outcome": outcome,
                        "error.type": outcome,
                    }
                )
                span.set_status(_ERROR)
        span.end()


def opentelemetry_hooks(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> ClientHooks:
    """See :func:`store_async.instrumentation.opentelemetry`."""
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        raise ValidationError(
            "tracer_provider must be an opentelemetry.trace.TracerProvider or None (the global "
            f"one), not {type(tracer_provider).__name__}"
        )
    if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
        raise ValidationError(
            "meter_provider must be an opentelemetry.metrics.MeterProvider or None (the global "
            f"one), not {type(meter_provider).__name__}"
        )
    # With None, the API hands out proxies that follow the global providers, even ones set
    # after this call.
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
    meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
    return _OtelHooks(tracer, meter).hooks()
