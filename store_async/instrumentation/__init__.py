"""Instrumentation: hooks the client calls around every call and every attempt.

``StoreClient(hooks=ClientHooks(on_call_end=..., on_attempt_end=...))``; each event is a frozen
record (:class:`CallStarted`, :class:`CallFinished`, :class:`AttemptStarted`,
:class:`AttemptFinished`) that never carries a secret. :func:`combine_hooks` runs several sets.
:func:`opentelemetry` and :func:`prometheus` build ready-made sets (extras).
"""

from store_async.instrumentation._adapters import opentelemetry, prometheus
from store_async.instrumentation._hooks import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
    ClientHooks,
    combine_hooks,
)

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "CallFinished",
    "CallStarted",
    "ClientHooks",
    "combine_hooks",
    "opentelemetry",
    "prometheus",
]
