"""Micro-benchmark: what the OpenTelemetry and Prometheus hooks cost per successful consume.

``StoreClient.consume`` against a stub session that returns a canned 204 (no network, as in
``bench_engine.py``), with:

- ``unset``: no hooks (the engine's bare fast path);
- ``empty``: four hooks that do nothing (the engine's hooked path and its events, no adapter);
- ``otel-noop``: ``instrumentation.opentelemetry()`` with OpenTelemetry's no-op providers;
- ``otel-sdk``: the same with the SDK's providers (a span processor with an exporter that drops
  spans, and an in-memory metric reader: the SDK's own cost, no I/O);
- ``prometheus``: ``instrumentation.prometheus()`` on a private registry.

Rounds are paired: each round runs every variant once, in a rotated order, so machine noise
hits them alike. Measures this process's CPU time (``time.process_time``: everything runs in one
event loop, no thread), which a machine shared with other jobs disturbs far less than the wall
clock. Prints CPU µs per call (median and min-max over rounds) and the cost over ``unset``
computed within each round (median).

    .venv/bin/python benchmarks/bench_otel.py [--calls 50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry

from store_async import StoreClient
from store_async._transport import AiohttpTransport
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.instrumentation import ClientHooks, opentelemetry, prometheus
from store_async.models import ConsumeRequest, UserIdentity


class CannedResponse:
    status = 204
    headers = CIMultiDictProxy(
        CIMultiDict({"MS-CorrelationId": "c", "MS-RequestId": "r", "MS-CV": "v"})
    )

    def release(self) -> None:
        pass


class StubSession:
    """Just enough of ``aiohttp.ClientSession`` for the success path."""

    async def post(self, url: Any, **_kwargs: Any) -> CannedResponse:
        return CannedResponse()

    async def request(self, method: str, url: Any, **_kwargs: Any) -> CannedResponse:
        return CannedResponse()


class DropExporter(SpanExporter):
    """Takes spans and drops them: the SDK's cost without any I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _ignore(_event: object) -> None:
    pass


def variants() -> dict[str, Callable[[], ClientHooks | None]]:
    def sdk() -> ClientHooks:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        return opentelemetry(tracer_provider, meter_provider)

    return {
        "unset": lambda: None,
        "empty": lambda: ClientHooks(
            on_call_start=_ignore,
            on_call_end=_ignore,
            on_attempt_start=_ignore,
            on_attempt_end=_ignore,
        ),
        "otel-noop": lambda: opentelemetry(NoOpTracerProvider(), NoOpMeterProvider()),
        "otel-sdk": sdk,
        "prometheus": lambda: prometheus(CollectorRegistry()),
    }


async def run(hooks: ClientHooks | None, calls: int, request: ConsumeRequest) -> float:
    """CPU seconds per call of ``calls`` sequential consumes."""
    transport = AiohttpTransport(
        StubSession(),  # type: ignore[arg-type]
        max_response_bytes=1 << 20,
        attempt_timeout=10.0,
        connect_timeout=5.0,
    )
    client = StoreClient(
        StaticTokenCredential("bench-token"),
        endpoints=Endpoints.single("http://127.0.0.1:1"),
        transport=transport,
        hooks=hooks,
    )
    async with client:
        for _ in range(100):  # warm the token cache and the adapters' caches
            await client.consume(request)
        started = time.process_time()
        for _ in range(calls):
            await client.consume(request)
        return (time.process_time() - started) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    request = ConsumeRequest.for_item(
        UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref"), "item-1"
    )
    made = variants()
    names = list(made)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(await run(made[name](), args.calls, request))
    print(f"{args.calls} consumes x {args.rounds} paired rounds (CPU µs per call)")
    header = "cost vs unset (median of pairs)"
    print(f"  {'hooks':<12} {'median':>8} {'min':>8} {'max':>8} {header:>34}")
    for name in names:
        values = [s * 1e6 for s in seconds[name]]
        pairs = [(a - b) * 1e6 for a, b in zip(seconds[name], seconds["unset"], strict=True)]
        cost = "" if name == "unset" else f"{statistics.median(pairs):+8.2f}"
        print(
            f"  {name:<12} {statistics.median(values):8.2f} {min(values):8.2f} "
            f"{max(values):8.2f} {cost:>34}"
        )


if __name__ == "__main__":
    asyncio.run(main())
