"""The refund queue: Azure Storage queue operations over the Store's SAS URI.

:class:`RefundQueue` reads the queue with azure-storage-queue's asyncio client (the field's own
library: it signs nothing here, the SAS URI carries the authority). It receives with a
visibility timeout, peeks and deletes with the pop receipt, and keeps its SAS fresh: a new one
is fetched from the Store before the current one expires (``refresh_margin`` seconds ahead) and
once more when the queue answers 403 (a SAS revoked or rotated early).

Azure's errors and logs may carry the SAS URI; nothing of them is passed on. A failure becomes a
:class:`~store_async.errors.RefundQueueError` naming the operation, the HTTP status and the
storage error code, raised outside the ``except`` block so that no Azure exception (whose
response holds the signed URL) is chained to it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs

from store_async.errors import RefundQueueError, ValidationError
from store_async.models.refunds import RefundQueueSas

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

__all__ = ["QueueMessage", "RefundQueue", "SasSource"]

T = TypeVar("T")

_MAX_BATCH: Final = 32  # the Azure Storage limit per receive or peek
_INSTALL_HINT: Final = (
    "reading the refund queue needs azure-storage-queue: pip install 'store-async[refunds]'"
)


class SasSource(Protocol):
    """Anything that hands out the refund queue's SAS: a ``StoreClient``, or a test double."""

    async def get_refund_queue_sas(self) -> RefundQueueSas: ...


@attrs.frozen(kw_only=True)
class QueueMessage:
    """One received (or peeked) queue message; ``pop_receipt`` is ``None`` for a peek."""

    message_id: str
    text: str
    dequeue_count: int
    pop_receipt: str | None = attrs.field(default=None, repr=False)


def _import_queue_client() -> type[QueueClient]:
    try:
        from azure.storage.queue.aio import QueueClient
    except ImportError:
        raise ValidationError(_INSTALL_HINT) from None
    return QueueClient


class RefundQueue:
    """The refund queue behind a :class:`SasSource`. Use it as ``async with``.

    :param source: where SAS URIs come from (``StoreClient.get_refund_queue_sas``).
    :param visibility_timeout: seconds a received message stays hidden from other readers
        (the Store's documentation uses 30); it reappears if it is not deleted by then.
    :param refresh_margin: fetch a new SAS this many seconds before the current one expires.
    :param retry_total: Azure's own retries per queue operation (network errors, 5xx).
    :param clock: wall clock in epoch seconds (a SAS expiry is a wall-clock time).
    """

    def __init__(
        self,
        source: SasSource,
        *,
        visibility_timeout: int = 30,
        refresh_margin: float = 300.0,
        retry_total: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(visibility_timeout, bool) or not isinstance(visibility_timeout, int):
            raise ValidationError("visibility_timeout must be an int of seconds")
        if not 1 <= visibility_timeout <= 7 * 24 * 3600:
            raise ValidationError("visibility_timeout must be within 1 s .. 7 days")
        if not isinstance(refresh_margin, int | float) or refresh_margin < 0:
            raise ValidationError("refresh_margin must be a number of seconds >= 0")
        self._source = source
        self._visibility = visibility_timeout
        self._margin = timedelta(seconds=refresh_margin)
        self._retry_total = retry_total
        self._clock = clock
        self._sas: RefundQueueSas | None = None
        self._client: QueueClient | None = None
        self.sas_fetches = 0
        """How many SAS URIs were fetched (one at start, then one per refresh)."""

    async def __aenter__(self) -> RefundQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def sas(self) -> RefundQueueSas | None:
        """The SAS in use (its ``repr`` hides the signature)."""
        return self._sas

    # -- operations ----------------------------------------------------------------------------

    async def receive(self, max_messages: int = _MAX_BATCH) -> list[QueueMessage]:
        """Up to ``max_messages`` (at most 32) visible messages, hidden for the visibility
        timeout; an empty list when none is visible now."""
        count = _batch(max_messages)

        async def receive(client: QueueClient) -> list[QueueMessage]:
            received = client.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=self._visibility
            )
            return [_message(item, received=True) async for item in received]

        return await self._run("receive", receive)

    async def peek(self, max_messages: int = _MAX_BATCH) -> list[QueueMessage]:
        """Up to ``max_messages`` (at most 32) visible messages, left visible and unchanged."""
        count = _batch(max_messages)

        async def peek(client: QueueClient) -> list[QueueMessage]:
            return [_message(item, received=False) for item in await client.peek_messages(count)]

        return await self._run("peek", peek)

    async def delete(self, message: QueueMessage) -> bool:
        """Delete a received message with its pop receipt. ``False`` when the queue no longer
        holds it under that receipt (its visibility timeout passed and it was received again,
        or it was deleted already): the next reader of that copy settles it."""
        if message.pop_receipt is None:
            raise ValidationError("only a received message (with a pop receipt) can be deleted")

        async def delete(client: QueueClient) -> bool:
            from azure.core.exceptions import ResourceNotFoundError

            try:
                await client.delete_message(message.message_id, message.pop_receipt)
            except ResourceNotFoundError:  # 404 MessageNotFound / PopReceiptMismatch (400)
                return False
            return True

        try:
            return await self._run("delete", delete)
        except RefundQueueError as error:
            if error.code == "PopReceiptMismatch":
                return False
            raise

    async def approximate_count(self) -> int:
        """The queue's approximate message count, hidden (in-flight) messages included."""

        async def count(client: QueueClient) -> int:
            properties = await client.get_queue_properties()
            return int(properties.approximate_message_count or 0)

        return await self._run("properties", count)

    # -- SAS and errors ------------------------------------------------------------------------

    async def _run(self, operation: str, action: Callable[[QueueClient], Awaitable[T]]) -> T:
        """Run ``action`` with a fresh enough SAS; on 403, fetch a new SAS and run it once more."""
        from azure.core.exceptions import AzureError, HttpResponseError

        for attempt in (1, 2):
            client = await self._current_client(force=attempt == 2)
            failure: tuple[int | None, str | None, str] | None = None
            try:
                return await action(client)
            except HttpResponseError as error:
                status = error.status_code
                code = getattr(error, "error_code", None)
                code = code.value if isinstance(code, enum.Enum) else code  # StorageErrorCode
                failure = (status, str(code) if code is not None else None, type(error).__name__)
            except AzureError as error:  # no HTTP answer: connection refused, DNS, timeouts
                failure = (None, None, type(error).__name__)
            status, code, kind = failure
            if status == 403 and attempt == 1:
                continue  # a SAS revoked or rotated before its expiry: fetch a new one
            raise _queue_error(operation, status, code, kind)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _current_client(self, *, force: bool) -> QueueClient:
        sas = self._sas
        now = datetime.fromtimestamp(self._clock(), UTC)
        if force or sas is None or self._client is None or sas.expires_on - self._margin <= now:
            sas = await self._source.get_refund_queue_sas()
            self.sas_fetches += 1
            if not isinstance(sas, RefundQueueSas):
                raise ValidationError("get_refund_queue_sas must return a RefundQueueSas")
            old, self._client = self._client, None
            if old is not None:
                await old.close()
            queue_client = _import_queue_client()
            try:
                # Azure's own retries (network errors, 5xx) wait about 1, 4, 13 s instead of
                # its default 15 s first: a queue reader should notice trouble within seconds.
                self._client = queue_client.from_queue_url(
                    sas.uri, retry_total=self._retry_total, initial_backoff=1, increment_base=3
                )
            except ValueError:
                raise RefundQueueError(
                    f"the refund queue URI is not a queue URL: {sas.redacted_uri}"
                ) from None
            self._sas = sas
        assert self._client is not None
        return self._client

    def __repr__(self) -> str:
        where = self._sas.redacted_uri if self._sas is not None else "no SAS yet"
        return f"RefundQueue({where}, visibility_timeout={self._visibility})"


def _batch(max_messages: int) -> int:
    if isinstance(max_messages, bool) or not isinstance(max_messages, int):
        raise ValidationError("max_messages must be an int")
    if not 1 <= max_messages <= _MAX_BATCH:
        raise ValidationError(f"max_messages must be within 1..{_MAX_BATCH}")
    return max_messages


def _message(item: Any, *, received: bool) -> QueueMessage:
    content = item.content
    if isinstance(content, bytes):  # only with a custom decode policy; ours keeps text
        content = content.decode("utf-8", "replace")
    return QueueMessage(
        message_id=str(item.id),
        text=content if isinstance(content, str) else "",
        dequeue_count=int(item.dequeue_count or 0),
        pop_receipt=item.pop_receipt if received else None,
    )


def _queue_error(
    operation: str, status: int | None, code: str | None, kind: str
) -> RefundQueueError:
    if status is None:
        text = f"refund queue {operation}: no answer from the queue ({kind})"
    else:
        text = f"refund queue {operation}: HTTP {status}" + (f" {code}" if code else "")
        if status == 403:
            text += " (the SAS was refused even after fetching a new one)"
    error = RefundQueueError(text, status=status, code=code)
    # A missing queue or a refused SAS will not heal by itself; network trouble may.
    error.retryable = status is None or status >= 500 or status in (408, 429)
    return error
