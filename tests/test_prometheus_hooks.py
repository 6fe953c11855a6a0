"""The Prometheus adapter fed events directly: names, labels, sharing, bad arguments.

(Exact counts after a scripted fault sequence over a real emulator: tests/test_otel_emulator.py.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from store_async.errors import OutcomeUnknownError, ThrottledError, ValidationError
from store_async.instrumentation import prometheus
from tests.support.events import attempt_end, finished, unavailable


def test_names_labels_and_values_as_a_scrape_sees_them() -> None:
    registry = CollectorRegistry()
    hooks = prometheus(registry)
    hooks.attempt_finished(attempt_end(1, 429, ThrottledError("429", status=429)))
    hooks.attempt_finished(attempt_end(2, 503, unavailable()))
    hooks.attempt_finished(attempt_end(3, 200))
    hooks.call_finished(finished(3))
    hooks.call_finished(finished(1, OutcomeUnknownError("maybe")))
    value = registry.get_sample_value
    duration = "store_http_client_request_duration_seconds"
    labels = {"method": "POST", "server_address": "127.0.0.1", "server_port": "8081"}
    assert (
        value(f"{duration}_count", {**labels, "status_code": "429", "error_type": "ThrottledError"})
        == 1
    )
    assert (
        value(
            f"{duration}_sum",
            {**labels, "status_code": "503", "error_type": "ServiceUnavailableError"},
        )
        == 0.5
    )
    assert value(f"{duration}_count", {**labels, "status_code": "200", "error_type": ""}) == 1
    assert (
        value(
            f"{duration}_bucket", {**labels, "status_code": "200", "error_type": "", "le": "0.75"}
        )
        == 1
    )
    assert (
        value(f"{duration}_bucket", {**labels, "status_code": "200", "error_type": "", "le": "0.5"})
        == 0
    )
    assert value("store_client_retries_total", {"operation": "consume"}) == 2
    assert value("store_client_throttled_total", {"operation": "consume"}) == 1
    assert value("store_client_outcome_unknown_total", {"operation": "consume"}) == 1
    assert value("store_client_retry_budget") == 6.0  # 9 - the last attempt's number
    text = generate_latest(registry).decode()
    assert "k-1" not in text  # no idempotency key
    assert "cvbase" not in text  # no correlation vector


def test_a_second_call_for_the_same_registry_shares_the_collectors() -> None:
    registry = CollectorRegistry()
    first, second = prometheus(registry), prometheus(registry)
    first.attempt_finished(attempt_end(2, 200))
    second.attempt_finished(attempt_end(2, 200))
    assert registry.get_sample_value("store_client_retries_total", {"operation": "consume"}) == 2
    other = prometheus(registry, namespace="shop")
    other.attempt_finished(attempt_end(2, 200))
    assert registry.get_sample_value("shop_client_retries_total", {"operation": "consume"}) == 1


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(ValidationError, match="registry must be"):
        prometheus({})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="namespace must be"):
        prometheus(CollectorRegistry(), namespace="9lives")
    with pytest.raises(ValidationError, match="namespace must be"):
        prometheus(CollectorRegistry(), namespace=3)  # type: ignore[arg-type]
    taken = CollectorRegistry()
    Counter("store_client_retries", "someone else's", registry=taken)
    with pytest.raises(ValidationError, match="already holds a metric"):
        prometheus(taken)


def test_without_the_extra_the_factory_says_what_to_install() -> None:
    probe = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from store_async.errors import ValidationError\n"
        "from store_async.instrumentation import prometheus\n"
        "try:\n    prometheus()\nexcept ValidationError as e:\n    print(e)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert output.strip() == (
        "the Prometheus hooks need prometheus_client: pip install 'store-async[prometheus]'"
    )
