"""The public factories of the adapters (extras): :func:`opentelemetry` and
:func:`prometheus`. Their modules import OpenTelemetry or ``prometheus_client``, so they are
imported on call: ``import store_async.instrumentation`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from store_async.errors import ValidationError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from store_async.instrumentation._hooks import ClientHooks

__all__ = ["opentelemetry", "prometheus"]


def opentelemetry(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> ClientHooks:
    """Hooks that trace every call and attempt with OpenTelemetry and record HTTP client
    metrics: ``StoreClient(credential, hooks=opentelemetry())``.

    One ``INTERNAL`` span ``StoreClient.<operation>`` per call (a child of the caller's current
    span), one ``CLIENT`` span per HTTP attempt (a child of it, propagated to the server in
    ``traceparent``), the histogram ``http.client.request.duration`` and the counters and gauge
    of docs/guides/observability.md. Needs the ``otel`` extra (``opentelemetry-api``); the
    application configures the SDK and its exporters.

    :param tracer_provider: where spans go; ``None``: the global provider (also one set later).
    :param meter_provider: where metrics go; ``None``: the global provider.
    :returns: hooks for ``StoreClient(hooks=...)``; one set may serve several clients.
    :raises ValidationError: ``opentelemetry-api`` is not installed, or a provider is not one.
    """
    try:
        from store_async.instrumentation._otel import opentelemetry_hooks
    except ImportError as missing:
        if not (missing.name or "").startswith("opentelemetry"):
            raise
        raise ValidationError(
            "the OpenTelemetry hooks need opentelemetry-api: pip install 'store-async[otel]'"
        ) from None
    return opentelemetry_hooks(tracer_provider, meter_provider)


def prometheus(registry: CollectorRegistry | None = None, namespace: str = "store") -> ClientHooks:
    """Hooks that record the OpenTelemetry adapter's metrics with ``prometheus_client``:
    ``StoreClient(credential, hooks=prometheus())``.

    Calling it again with the same registry and namespace shares the same collectors (a
    registry refuses a second metric of the same name). Needs the ``prometheus`` extra.

    :param registry: where the collectors are registered; ``None``: ``prometheus_client``'s
        default registry.
    :param namespace: the metric name prefix (``store_client_retries_total``...).
    :returns: hooks for ``StoreClient(hooks=...)``.
    :raises ValidationError: ``prometheus_client`` is not installed, ``registry`` is not a
        ``CollectorRegistry``, ``namespace`` is not a valid name prefix, or the registry already
        holds another collector with one of these names.
    """
    try:
        from store_async.instrumentation._prometheus import prometheus_hooks
    except ImportError as missing:
        if not (missing.name or "").startswith("prometheus_client"):
            raise
        raise ValidationError(
            "the Prometheus hooks need prometheus_client: pip install 'store-async[prometheus]'"
        ) from None
    return prometheus_hooks(registry, namespace)
