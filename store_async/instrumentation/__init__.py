"""Instrumentation: hooks the client calls around every attempt.

``StoreClient(hooks=ClientHooks(on_attempt_start=..., on_attempt_end=...))``; each event is a
frozen record (:class:`AttemptStarted`, :class:`AttemptFinished`) that never carries a secret.
"""

from store_async.instrumentation._adapters import opentelemetry, prometheus
from store_async.instrumentation._hooks import AttemptFinished, AttemptStarted, ClientHooks

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "ClientHooks",
    "opentelemetry",
    "prometheus",
]
