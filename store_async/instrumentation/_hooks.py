"""The hook protocol: call and attempt events for metrics, tracing and logs.

    >>> def record(event: AttemptFinished) -> None:
    ...     latency.record(event.duration, {"operation": event.operation, "status": event.status})
    >>> StoreClient(credential, hooks=ClientHooks(on_attempt_end=record))   # doctest: +SKIP

Four events, each a frozen, slotted record: :class:`CallStarted` and :class:`CallFinished`
around every call (the end event fires on success, on error and on cancellation), and
:class:`AttemptStarted` and :class:`AttemptFinished` around every HTTP attempt of it (retries
included, so a call that took three attempts produces one call pair and three attempt pairs).
``call_id`` is unique per call within one client: an adapter maps attempt events to their call
with it.

Hooks are plain synchronous callables, called in the caller's task. They cost nothing when not
set (the client keeps its bare fast path). A hook that raises is logged once (WARNING: it is the
application's bug, not an error of ours) and ignored from then on without a word: a metrics bug
must never turn a fulfilled purchase into a failure. Events never carry a secret: no access
token, no body, no Store ID key; ``url`` holds none either (the Store's URLs carry no
credential), and ``idempotency_key`` (tracking id, transaction id or order id) identifies a
request but grants nothing.

:func:`combine_hooks` runs several hook sets, in order (``StoreClient(hooks=[a, b])`` does it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from store_async.errors import FailureKind, StoreError, ValidationError

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "CallFinished",
    "CallStarted",
    "ClientHooks",
    "combine_hooks",
]

_logger: Final = logging.getLogger("store_async")


@attrs.frozen(kw_only=True)
class CallStarted:
    """A call (one client method invocation: one or more attempts) begins."""

    operation: str
    """The route's name: ``consume``, ``query_products``, ``grant_free_product``, ..."""
    idempotency_key: str | None
    """Tracking id, transaction id or order id; ``None`` for operations without one."""
    call_id: int
    """Unique per call within one client (a counter): attempt events carry the same value."""
    cv_base: str
    """The call's correlation-vector base: attempt *N* sends ``MS-CV: <cv_base>.<N>``."""
    client_request_id: str | None
    """The caller's ``client_request_id=`` (then also ``cv_base``), else ``None``."""


@attrs.frozen(kw_only=True)
class CallFinished:
    """A call ended: with a result, a :class:`StoreError`, or cancelled."""

    operation: str
    idempotency_key: str | None
    call_id: int
    cv_base: str
    client_request_id: str | None
    attempts: int
    """Attempts started: one per :class:`AttemptStarted` event of the call (one that then
    failed *not sent* counts); 0 when the call ended before any could start (no access token
    or connection slot within its timeout)."""
    duration: float
    """Seconds from the start event (the client's monotonic clock)."""
    error: StoreError | None
    """The error raised to the caller; ``None`` on success *and* when the call was
    interrupted (see :attr:`interrupted`)."""
    interrupted: str | None = None
    """The class name of an exception other than a :class:`StoreError` that ended the call:
    ``"CancelledError"`` when the caller's task was cancelled; ``None`` otherwise."""

    @property
    def cancelled(self) -> bool:
        """The caller's task was cancelled during the call."""
        return self.interrupted == "CancelledError"

    @property
    def outcome(self) -> str:
        """``"ok"``, or the class name of what ended the call: ``"OutcomeUnknownError"``,
        ``"ThrottledError"``, ... or ``"CancelledError"``."""
        if self.error is not None:
            return type(self.error).__name__
        return self.interrupted or "ok"


@attrs.frozen(kw_only=True)
class AttemptStarted:
    """An attempt is about to be sent."""

    operation: str
    idempotency_key: str | None
    call_id: int
    attempt: int
    """1 for the first attempt of a call."""
    cv: str
    """The ``MS-CV`` header this attempt sends (``<cv_base>.<attempt>``)."""
    method: str
    """HTTP method: ``POST`` or ``GET``."""
    url: str
    """The full request URL. It never holds a secret: the Store's URLs carry no credential."""
    server_address: str
    server_port: int
    headers: dict[str, str]
    """A fresh, empty dict per attempt: a hook may *add* request headers to it (a tracing
    adapter adds ``traceparent``). They are sent with this attempt only, and never override
    ``Authorization``, ``Content-Type``, ``User-Agent`` or ``MS-CV`` (such names are dropped)."""

    @property
    def resend_count(self) -> int:
        """0 for the first attempt, then 1, 2, ... (``http.request.resend_count``)."""
        return self.attempt - 1


@attrs.frozen(kw_only=True)
class AttemptFinished:
    """An attempt ended, with an answer or an error."""

    operation: str
    idempotency_key: str | None
    call_id: int
    attempt: int
    method: str
    url: str
    server_address: str
    server_port: int
    duration: float
    """Seconds from the start event (the client's monotonic clock)."""
    status: int | None
    """HTTP status, or ``None`` when no answer arrived."""
    error: StoreError | None
    """``None`` when the attempt succeeded."""
    correlation_id: str | None = None
    """The answer's ``MS-CorrelationId``."""
    request_id: str | None = None
    """The answer's ``MS-RequestId``."""
    cv: str
    """The ``MS-CV`` this attempt *sent* (quote it to Microsoft support)."""
    retry_budget: float
    """Tokens left in the client's retry budget after this attempt."""
    server_cv: str | None = None
    """The ``MS-CV`` the server answered with, when it sent one other than :attr:`cv`."""
    interrupted: str | None = None
    """The class name of an exception other than a :class:`StoreError` that ended the attempt
    (``"CancelledError"``: the caller's task was cancelled while it was in flight); then
    ``status`` and ``error`` are ``None``."""

    @property
    def failure_kind(self) -> FailureKind | None:
        """*not sent*, *maybe applied* or *answered*; ``None`` on success (or interrupted)."""
        return None if self.error is None else self.error.kind

    @property
    def outcome(self) -> str:
        """``"ok"``, or the class name of the error (or interruption) that ended the attempt."""
        if self.error is not None:
            return type(self.error).__name__
        return self.interrupted or "ok"

    @property
    def resend_count(self) -> int:
        """0 for the first attempt, then 1, 2, ..."""
        return self.attempt - 1


def _call_safely(hook: Callable[[Any], None], event: object, reported: set[int]) -> None:
    try:
        hook(event)
    except Exception as error:  # a hook must never fail a call
        if id(hook) not in reported:  # once per hook: a broken hook must not flood the logs
            reported.add(id(hook))
            _logger.warning(
                "store_async hook %r raised %s (%s); ignored, and not reported again",
                hook,
                type(error).__name__,
                type(event).__name__,
            )


class _Fanout:
    """One hook slot of :func:`combine_hooks`: calls each hook in order, each one safely."""

    __slots__ = ("hooks", "reported")

    def __init__(self, hooks: tuple[Callable[[Any], None], ...]) -> None:
        self.hooks = hooks
        self.reported: set[int] = set()

    def __call__(self, event: object) -> None:
        for hook in self.hooks:
            _call_safely(hook, event, self.reported)

    def __repr__(self) -> str:
        return f"combined({', '.join(map(repr, self.hooks))})"


@attrs.frozen(kw_only=True)
class ClientHooks:
    """Callables the client calls around every call and attempt. Any may be left ``None``."""

    on_call_start: Callable[[CallStarted], None] | None = None
    on_call_end: Callable[[CallFinished], None] | None = None
    on_attempt_start: Callable[[AttemptStarted], None] | None = None
    on_attempt_end: Callable[[AttemptFinished], None] | None = None
    _reported: set[int] = attrs.field(factory=set, init=False, repr=False, eq=False)

    def call_started(self, event: CallStarted) -> None:
        """Call ``on_call_start`` (exceptions are logged once, not raised)."""
        if self.on_call_start is not None:
            _call_safely(self.on_call_start, event, self._reported)

    def call_finished(self, event: CallFinished) -> None:
        """Call ``on_call_end`` (exceptions are logged once, not raised)."""
        if self.on_call_end is not None:
            _call_safely(self.on_call_end, event, self._reported)

    def attempt_started(self, event: AttemptStarted) -> None:
        """Call ``on_attempt_start`` (exceptions are logged once, not raised)."""
        if self.on_attempt_start is not None:
            _call_safely(self.on_attempt_start, event, self._reported)

    def attempt_finished(self, event: AttemptFinished) -> None:
        """Call ``on_attempt_end`` (exceptions are logged once, not raised)."""
        if self.on_attempt_end is not None:
            _call_safely(self.on_attempt_end, event, self._reported)


def _fan(slots: Iterable[Callable[[Any], None] | None]) -> Callable[[Any], None] | None:
    present = tuple(hook for hook in slots if hook is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else _Fanout(present)


def combine_hooks(*hooks: ClientHooks | None) -> ClientHooks | None:
    """One :class:`ClientHooks` that runs each of ``hooks`` in order (``None`` items skipped).

    Each hook of each set is called safely on its own: one that raises does not keep the
    others from seeing the event.

    :returns: ``None`` when no set is given (the client then keeps its bare fast path), the set
        itself when only one is.
    :raises ValidationError: an item is neither a :class:`ClientHooks` nor ``None``.
    """
    present = [h for h in hooks if h is not None]
    for h in present:
        if not isinstance(h, ClientHooks):
            raise ValidationError(
                f"hooks must be ClientHooks instances (or a sequence of them), "
                f"not {type(h).__name__}"
            )
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return ClientHooks(
        on_call_start=_fan(h.on_call_start for h in present),
        on_call_end=_fan(h.on_call_end for h in present),
        on_attempt_start=_fan(h.on_attempt_start for h in present),
        on_attempt_end=_fan(h.on_attempt_end for h in present),
    )
