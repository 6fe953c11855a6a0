"""Attempt hooks: feed metrics, tracing or OpenTelemetry from every HTTP attempt.

    >>> def record(event: AttemptFinished) -> None:
    ...     latency.record(event.duration, {"operation": event.operation, "status": event.status})
    >>> StoreClient(credential, hooks=ClientHooks(on_attempt_end=record))   # doctest: +SKIP

Hooks are plain synchronous callables, called in the caller's task right before an attempt is
sent and right after it ends (retries included, so a call that took three attempts produces three
pairs). They cost nothing when not set. An exception raised by a hook is logged and ignored: a
metrics bug must never turn a fulfilled purchase into a failure. Events never carry a secret
(no token, no body, no Store ID key); ``idempotency_key`` is the tracking id, transaction id or
order id, which identify a request but grant nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import attrs

from store_async.errors import FailureKind, StoreError

__all__ = ["AttemptFinished", "AttemptStarted", "ClientHooks"]

_logger: Final = logging.getLogger("store_async")


@attrs.frozen(kw_only=True)
class AttemptStarted:
    """An attempt is about to be sent."""

    operation: str
    """``consume``, ``query_products``, ``grant_free_product``, ``get_offline_license`` or
    ``renew_store_id_key``."""
    idempotency_key: str | None
    """Tracking id, transaction id or order id; ``None`` for operations without one."""
    attempt: int
    """1 for the first attempt of a call."""


@attrs.frozen(kw_only=True)
class AttemptFinished:
    """An attempt ended, with an answer or an error."""

    operation: str
    idempotency_key: str | None
    attempt: int
    duration: float
    """Seconds from the start event (the client's monotonic clock)."""
    status: int | None
    """HTTP status, or ``None`` when no answer arrived."""
    error: StoreError | None
    """``None`` when the attempt succeeded."""
    correlation_id: str | None = None
    request_id: str | None = None
    cv: str | None = None

    @property
    def failure_kind(self) -> FailureKind | None:
        """*not sent*, *maybe applied* or *answered*; ``None`` on success."""
        return None if self.error is None else self.error.kind


def _call_safely(hook: Callable[[object], None], event: object) -> None:
    try:
        hook(event)
    except Exception as error:  # a hook must never fail a call
        _logger.warning("attempt hook %r raised %s; ignored", hook, type(error).__name__)


@attrs.frozen(kw_only=True)
class ClientHooks:
    """Callables the client calls around every attempt. Either may be left ``None``."""

    on_attempt_start: Callable[[AttemptStarted], None] | None = None
    on_attempt_end: Callable[[AttemptFinished], None] | None = None

    def attempt_started(self, event: AttemptStarted) -> None:
        """Call ``on_attempt_start`` (exceptions are logged, not raised)."""
        if self.on_attempt_start is not None:
            _call_safely(self.on_attempt_start, event)  # type: ignore[arg-type]

    def attempt_finished(self, event: AttemptFinished) -> None:
        """Call ``on_attempt_end`` (exceptions are logged, not raised)."""
        if self.on_attempt_end is not None:
            _call_safely(self.on_attempt_end, event)  # type: ignore[arg-type]
