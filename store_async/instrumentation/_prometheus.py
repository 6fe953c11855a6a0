"""Prometheus hooks (``prometheus_client``): the OpenTelemetry adapter's metrics, for teams
without OpenTelemetry.

With ``namespace="store"`` (the default) a registry gets:

- ``store_http_client_request_duration_seconds`` (histogram, per attempt; labels ``method``,
  ``server_address``, ``server_port``, ``status_code``, ``error_type``: an empty string when
  there is none);
- ``store_client_retries_total``, ``store_client_throttled_total`` (per attempt) and
  ``store_client_outcome_unknown_total`` (per call), labelled by ``operation``;
- ``store_client_retry_budget`` (gauge): tokens left in the retry budget after the latest
  attempt.

Labels have bounded cardinality: never a key, a correlation vector or a user. This module is
imported only by :func:`store_async.instrumentation.prometheus`.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from store_async.errors import OutcomeUnknownError, ThrottledError, ValidationError
from store_async.instrumentation._hooks import AttemptFinished, CallFinished, ClientHooks
from store_async.instrumentation._semconv import DURATION_BUCKETS

__all__ = ["prometheus_hooks"]

_NAMESPACE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class _PrometheusMetrics:
    """The collectors of one (registry, namespace): registered once, shared by every hooks set
    made for them (a registry refuses a second collector with the same name)."""

    __slots__ = ("budget", "children", "duration", "outcome_unknown", "retries", "throttled")

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.duration = Histogram(
            "http_client_request_duration",
            "Duration of HTTP client requests to the Store (one per attempt).",
            ("method", "server_address", "server_port", "status_code", "error_type"),
            namespace=namespace,
            unit="seconds",
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.retries = Counter(
            "client_retries",
            "Attempts that resent a request (second and later attempts).",
            ("operation",),
            namespace=namespace,
            registry=registry,
        )
        self.throttled = Counter(
            "client_throttled",
            "Attempts the Store answered with 429 Too Many Requests.",
            ("operation",),
            namespace=namespace,
            registry=registry,
        )
        self.outcome_unknown = Counter(
            "client_outcome_unknown",
            "Calls that ended in OutcomeUnknownError (the Store may have applied them).",
            ("operation",),
            namespace=namespace,
            registry=registry,
        )
        self.budget = Gauge(
            "client_retry_budget",
            "Tokens left in the client's retry budget after the latest attempt.",
            namespace=namespace,
            registry=registry,
        )
        # Label children by their values: `.labels()` validates and locks on every call.
        self.children: dict[tuple[str, str, int, int | None, str | None], Any] = {}

    def attempt_finished(self, event: AttemptFinished) -> None:
        status = event.status
        error = event.error
        error_type = event.interrupted if error is None else type(error).__name__
        key = (event.method, event.server_address, event.server_port, status, error_type)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self.duration.labels(
                event.method,
                event.server_address,
                str(event.server_port),
                "" if status is None else str(status),
                error_type or "",
            )
        child.observe(event.duration)
        self.budget.set(event.retry_budget)
        if event.attempt > 1:
            self.retries.labels(event.operation).inc()
        if isinstance(error, ThrottledError):
            self.throttled.labels(event.operation).inc()

    def call_finished(self, event: CallFinished) -> None:
        if isinstance(event.error, OutcomeUnknownError):
            self.outcome_unknown.labels(event.operation).inc()


_MADE: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _PrometheusMetrics]] = (
    weakref.WeakKeyDictionary()
)


def prometheus_hooks(
    registry: CollectorRegistry | None = None, namespace: str = "store"
) -> ClientHooks:
    """See :func:`store_async.instrumentation.prometheus`."""
    if registry is None:
        registry = REGISTRY
    elif not isinstance(registry, CollectorRegistry):
        raise ValidationError(
            "registry must be a prometheus_client.CollectorRegistry or None (the default "
            f"registry), not {type(registry).__name__}"
        )
    if not isinstance(namespace, str) or (namespace and not _NAMESPACE.fullmatch(namespace)):
        raise ValidationError(
            f"namespace must be a Prometheus name prefix like 'store' (letters, digits, '_', "
            f"':'; not starting with a digit), got {namespace!r}"
        )
    made = _MADE.setdefault(registry, {})
    collectors = made.get(namespace)
    if collectors is None:
        try:
            collectors = _PrometheusMetrics(registry, namespace)
        except ValueError as error:  # a collector of another library already has the name
            raise ValidationError(
                f"the registry already holds a metric named like ours ({error}); pass another "
                "namespace= or registry="
            ) from None
        made[namespace] = collectors
    return ClientHooks(
        on_attempt_end=collectors.attempt_finished, on_call_end=collectors.call_finished
    )
