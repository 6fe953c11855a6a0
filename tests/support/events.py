"""Hook events built by hand, for adapter tests that feed hooks directly."""

from __future__ import annotations

from store_async.errors import ServiceUnavailableError, StoreError
from store_async.instrumentation import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
)

__all__ = ["URL", "attempt", "attempt_end", "finished", "started", "unavailable"]

URL = "http://127.0.0.1:8081/v6.0/collections/consume"


def started(call_id: int = 7, cv_base: str = "cvbase", key: str | None = "k-1") -> CallStarted:
    return CallStarted(
        operation="consume",
        idempotency_key=key,
        call_id=call_id,
        cv_base=cv_base,
        client_request_id=None,
    )


def attempt(number: int, call_id: int = 7, cv_base: str = "cvbase") -> AttemptStarted:
    return AttemptStarted(
        operation="consume",
        idempotency_key="k-1",
        call_id=call_id,
        attempt=number,
        cv=f"{cv_base}.{number}",
        method="POST",
        url=URL,
        server_address="127.0.0.1",
        server_port=8081,
        headers={},
    )


def attempt_end(
    number: int,
    status: int | None,
    error: StoreError | None = None,
    call_id: int = 7,
    cv_base: str = "cvbase",
    interrupted: str | None = None,
) -> AttemptFinished:
    return AttemptFinished(
        operation="consume",
        idempotency_key="k-1",
        call_id=call_id,
        attempt=number,
        method="POST",
        url=URL,
        server_address="127.0.0.1",
        server_port=8081,
        duration=0.25 * number,
        status=status,
        error=error,
        correlation_id=f"corr-{number}",
        request_id=f"req-{number}",
        cv=f"{cv_base}.{number}",
        retry_budget=9.0 - number,
        interrupted=interrupted,
    )


def finished(
    attempts: int,
    error: StoreError | None = None,
    interrupted: str | None = None,
    call_id: int = 7,
    cv_base: str = "cvbase",
) -> CallFinished:
    return CallFinished(
        operation="consume",
        idempotency_key="k-1",
        call_id=call_id,
        cv_base=cv_base,
        client_request_id=None,
        attempts=attempts,
        duration=1.0,
        error=error,
        interrupted=interrupted,
    )


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("503 from the Store", status=503)
