"""OpenTelemetry SDK set-ups for the adapter's tests: in-memory span exporter and metric reader.

Each test gets its own providers (the global ones can be set only once per process); the
adapter is given them explicitly.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from store_async.instrumentation import ClientHooks, opentelemetry

__all__ = ["Telemetry", "points"]


class Telemetry:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def hooks(self) -> ClientHooks:
        return opentelemetry(self.tracer_provider, self.meter_provider)

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans_exporter.get_finished_spans())

    def metrics(self) -> MetricsData:
        """What the reader collects now (empty when nothing was recorded)."""
        return self.reader.get_metrics_data() or MetricsData(resource_metrics=[])

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def points(data: MetricsData, name: str) -> list[Any]:
    """Every data point of the metric ``name``."""
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
