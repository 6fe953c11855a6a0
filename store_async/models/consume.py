"""Report a consumable as fulfilled: ``POST /v6.0/collections/consume`` (docs/store-api.md 3.2),
and consume a quantity of a consumable: ``POST /v8.0/collections/consume`` (sections 9, 10)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast
from uuid import UUID

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models.identities import UserIdentity

__all__ = [
    "MAX_QUANTITY",
    "ConsumeRequest",
    "ConsumeResult",
    "ConsumeV8Response",
    "OrderTransaction",
    "consume_result",
    "consume_v8_result",
]

_FORMS = (
    "give either item_id + tracking_id (ConsumeRequest.for_item) "
    "or product_id + transaction_id (ConsumeRequest.for_transaction) "
    "(v8: product_id + remove_quantity + tracking_id, ConsumeRequest.for_quantity)"
)
MAX_QUANTITY: Final = 2**31 - 1
"""The largest ``removeQuantity`` (the service's field is a 32-bit int)."""


def _tracking_id(value: str | UUID | None) -> str | None:
    return _checks.optional_guid(value, "ConsumeRequest.tracking_id")


def _transaction_id(value: str | UUID | None) -> str | None:
    return _checks.optional_guid(value, "ConsumeRequest.transaction_id")


@attrs.frozen(kw_only=True)
class ConsumeRequest:
    """Report one consumable as fulfilled, in one of the two documented forms.

    - **by item**: ``item_id`` (from a query) and ``tracking_id``, a GUID you choose. Resending
      the same tracking id returns the same answer and never consumes twice, so it is safe to
      retry forever. Build it with :meth:`for_item`, which generates the tracking id (persist the
      request, or its :attr:`idempotency_key`, *before* sending it) or derives it from your own
      id with ``key="order-42"`` (nothing to persist: the same key gives the same tracking id).
    - **by transaction**: ``product_id`` and ``transaction_id`` (from a purchase receipt or a
      query). Build it with :meth:`for_transaction`.

    - **by quantity** (v8, store-managed and developer-managed consumables): ``product_id``,
      ``remove_quantity`` and ``tracking_id``; sent to ``/v8.0/collections/consume``,
      which answers with the remaining balance. The Store deduplicates on the tracking id **and**
      the user, product and quantity: a tracking id sent again with other values is a *new*
      consume. The record is immutable, so a retry always carries the same four values. Build it
      with :meth:`for_quantity`.

    GUIDs may be given as strings in any usual spelling or as :class:`uuid.UUID`; they are stored
    lowercase and hyphenated. A request that mixes the forms, lacks a half of one, or carries an
    empty or malformed value raises :class:`~store_async.errors.ValidationError`.
    """

    beneficiary: UserIdentity
    """The user whose consumable it is."""
    item_id: str | None = None
    tracking_id: str | None = attrs.field(default=None, converter=_tracking_id)
    product_id: str | None = None
    transaction_id: str | None = attrs.field(default=None, converter=_transaction_id)
    remove_quantity: int | None = None
    """v8 only: how many units to remove from the balance (``removeQuantity``)."""
    include_order_ids: bool = False
    """v8 only: ask for the order ids the units came from (``includeOrderIds``)."""
    sandbox_id: str | None = None
    """v8 only: the sandbox (``sbx``), e.g. ``XDKS.1``; ``None`` for RETAIL."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.beneficiary, UserIdentity):
            raise ValidationError(
                "ConsumeRequest.beneficiary must be a UserIdentity, "
                f"not {type(self.beneficiary).__name__}"
            )
        if self.remove_quantity is not None:
            self._check_v8()
            return
        if self.include_order_ids is not False or self.sandbox_id is not None:
            raise ValidationError(
                "ConsumeRequest.include_order_ids and sandbox_id belong to the v8 form: "
                "use ConsumeRequest.for_quantity(beneficiary, product_id, quantity, ...)"
            )
        by_item = self.item_id is not None or self.tracking_id is not None
        by_transaction = self.product_id is not None or self.transaction_id is not None
        if by_item and by_transaction:
            raise ValidationError(f"ConsumeRequest: {_FORMS}, not both")
        if by_item:
            if self.tracking_id is None:
                raise ValidationError(
                    "ConsumeRequest.item_id needs a tracking_id; use "
                    "ConsumeRequest.for_item(beneficiary, item_id) to generate one"
                )
            if self.item_id is None:
                raise ValidationError(
                    "ConsumeRequest.tracking_id needs an item_id (the itemId from a query)"
                )
            _checks.text(self.item_id, "ConsumeRequest.item_id")
        elif by_transaction:
            if self.transaction_id is None:
                raise ValidationError("ConsumeRequest.product_id needs a transaction_id")
            if self.product_id is None:
                raise ValidationError("ConsumeRequest.transaction_id needs a product_id")
            _checks.text(self.product_id, "ConsumeRequest.product_id")
        else:
            raise ValidationError(f"ConsumeRequest: {_FORMS}")

    def _check_v8(self) -> None:
        quantity = self.remove_quantity
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            raise ValidationError(
                f"ConsumeRequest.remove_quantity must be an integer from 1 to {MAX_QUANTITY}"
            )
        if self.item_id is not None or self.transaction_id is not None:
            raise ValidationError(
                "ConsumeRequest: the v8 form (product_id + remove_quantity + tracking_id) takes no "
                "item_id or transaction_id"
            )
        if self.product_id is None:
            raise ValidationError("ConsumeRequest.remove_quantity needs a product_id")
        _checks.text(self.product_id, "ConsumeRequest.product_id")
        if self.tracking_id is None:
            raise ValidationError(
                "ConsumeRequest.remove_quantity needs a tracking_id; use "
                "ConsumeRequest.for_quantity(beneficiary, product_id, quantity) to generate one"
            )
        if type(self.include_order_ids) is not bool:
            raise ValidationError("ConsumeRequest.include_order_ids must be True or False")
        _checks.optional_text(self.sandbox_id, "ConsumeRequest.sandbox_id")

    @classmethod
    def for_item(
        cls,
        beneficiary: UserIdentity,
        item_id: str,
        tracking_id: str | UUID | None = None,
        *,
        key: str | None = None,
    ) -> ConsumeRequest:
        """Consume by item id, with a new random tracking id unless you pass one or a ``key``.

        Pass the tracking id you stored when resubmitting a request whose outcome is unknown.

        :param key: your own id for this fulfillment (a caller key, e.g. an order id): the
            tracking id is then derived from it
            (:func:`~store_async.models.guid_for_caller_key`), the same on every resend, so a
            web service needs no storage to resend safely. One key per consumable.
        :raises ValidationError: for both ``tracking_id`` and ``key``, or a bad value.
        """
        if key is not None:
            if tracking_id is not None:
                raise ValidationError("ConsumeRequest.for_item: give tracking_id or key, not both")
            tracking_id = _checks.guid_for_caller_key(key)
        elif tracking_id is None:
            tracking_id = _checks.new_guid()
        return cls(beneficiary=beneficiary, item_id=item_id, tracking_id=tracking_id)

    @classmethod
    def for_transaction(
        cls, beneficiary: UserIdentity, product_id: str, transaction_id: str | UUID
    ) -> ConsumeRequest:
        """Consume by product id and purchase transaction id."""
        if transaction_id is None:
            raise ValidationError("ConsumeRequest.for_transaction needs a transaction_id")
        return cls(beneficiary=beneficiary, product_id=product_id, transaction_id=transaction_id)

    @classmethod
    def for_quantity(
        cls,
        beneficiary: UserIdentity,
        product_id: str,
        quantity: int,
        *,
        tracking_id: str | UUID | None = None,
        include_order_ids: bool = False,
        sandbox_id: str | None = None,
        key: str | None = None,
    ) -> ConsumeRequest:
        """Consume ``quantity`` units of a consumable (v8, answered with the new balance).

        The tracking id is, in order: ``tracking_id`` if given; derived from your caller ``key``
        (an order id...) if given, the same on every run (:func:`guid_for_caller_key`); else
        a new random GUID. Resubmit an unsettled request with the same tracking id **and** the
        same user, product and quantity: with other values the Store consumes again.

        :param include_order_ids: ask for the order ids the units came from; a replay of a
            developer-managed consume returns none, so keep the first answer's.
        :param sandbox_id: the ``sbx`` of a development sandbox (omitted for RETAIL).
        :raises ValidationError: a bad value, or both ``tracking_id`` and ``key``.
        """
        if tracking_id is None:
            if key is None:
                tracking_id = _checks.new_guid()
            else:
                tracking_id = _checks.guid_for_caller_key(_checks.text(key, "key"))
        elif key is not None:
            raise ValidationError(
                "ConsumeRequest.for_quantity takes a tracking_id or a caller key, not both"
            )
        return cls(
            beneficiary=beneficiary,
            product_id=product_id,
            remove_quantity=quantity,
            tracking_id=tracking_id,
            include_order_ids=include_order_ids,
            sandbox_id=sandbox_id,
        )

    @property
    def is_v8(self) -> bool:
        """Whether this is the v8 form (sent to ``/v8.0/collections/consume``)."""
        return self.remove_quantity is not None

    @property
    def idempotency_key(self) -> str:
        """The GUID that makes resending safe: ``tracking_id`` or ``transaction_id``."""
        # Validation guarantees that exactly one of the two is set.
        return self.tracking_id if self.tracking_id is not None else cast(str, self.transaction_id)


@attrs.frozen(kw_only=True)
class OrderTransaction:
    """Where consumed units came from (v8 ``orderTransactions``, with ``include_order_ids``)."""

    order_id: str
    order_line_item_id: str | None = None
    quantity_consumed: int | None = None


def _order_transactions(value: Iterable[OrderTransaction]) -> tuple[OrderTransaction, ...]:
    return _checks.tuple_of(value, "order_transactions")


_checks.keeps_tuples(_order_transactions)


@attrs.frozen(kw_only=True)
class ConsumeV8Response:
    """The body of a v8 consume answer (200): ``{newQuantity, itemId, trackingId, productId,
    orderTransactions?}``. Every field is optional: a developer-managed replay carries less."""

    new_quantity: int | None = None
    item_id: str | None = None
    tracking_id: str | None = None
    product_id: str | None = None
    order_transactions: tuple[OrderTransaction, ...] = attrs.field(
        default=(), converter=_order_transactions
    )


@attrs.frozen(kw_only=True)
class ConsumeResult:
    """The outcome of a successful consume (v6 answers 204 with no body; v8 200 with one).

    ``attempts`` counts the sends it took; the ``correlation_id``, ``request_id`` and ``cv`` are
    the service's ``MS-CorrelationId``, ``MS-RequestId`` and ``MS-CV`` headers, for support.
    The last four fields come from a v8 answer (``None``/empty for v6): ``new_quantity`` is the
    balance left (0 for developer-managed consumables), ``order_transactions`` the orders the
    units came from (only with ``include_order_ids``; a replay may return none).
    """

    tracking_id: str | None
    transaction_id: str | None
    attempts: int
    correlation_id: str | None = None
    request_id: str | None = None
    cv: str | None = None
    new_quantity: int | None = None
    item_id: str | None = None
    product_id: str | None = None
    order_transactions: tuple[OrderTransaction, ...] = attrs.field(
        default=(), converter=_order_transactions
    )


# ``ConsumeResult(...)`` costs ~2-3 µs: attrs' frozen ``__init__`` sets each slot through
# ``object.__setattr__`` by name. ``consume`` builds one per call, millions of times, so the
# client builds it through the slot descriptors directly (same object, same frozen record: the
# descriptors are what ``object.__setattr__`` ends up calling). The field order is checked here,
# so adding a field to ConsumeResult without updating this fails at import, not at run time.
_RESULT_FIELDS: Final = (
    "tracking_id", "transaction_id", "attempts", "correlation_id", "request_id", "cv",
    "new_quantity", "item_id", "product_id", "order_transactions",
)  # fmt: skip
if tuple(field.name for field in attrs.fields(ConsumeResult)) != _RESULT_FIELDS:  # pragma: no cover
    raise ImportError("consume_result() is out of date with the fields of ConsumeResult")
_slots = ConsumeResult.__dict__
_set_tracking_id = _slots["tracking_id"].__set__
_set_transaction_id = _slots["transaction_id"].__set__
_set_attempts = _slots["attempts"].__set__
_set_correlation_id = _slots["correlation_id"].__set__
_set_request_id = _slots["request_id"].__set__
_set_cv = _slots["cv"].__set__
_set_new_quantity = _slots["new_quantity"].__set__
_set_item_id = _slots["item_id"].__set__
_set_product_id = _slots["product_id"].__set__
_set_order_transactions = _slots["order_transactions"].__set__
_new = object.__new__


def consume_result(
    tracking_id: str | None,
    transaction_id: str | None,
    attempts: int,
    correlation_id: str | None,
    request_id: str | None,
    cv: str | None,
) -> ConsumeResult:
    """``ConsumeResult(tracking_id=..., ...)`` at half the cost (hot path; no validation)."""
    result: ConsumeResult = _new(ConsumeResult)
    _set_tracking_id(result, tracking_id)
    _set_transaction_id(result, transaction_id)
    _set_attempts(result, attempts)
    _set_correlation_id(result, correlation_id)
    _set_request_id(result, request_id)
    _set_cv(result, cv)
    _set_new_quantity(result, None)
    _set_item_id(result, None)
    _set_product_id(result, None)
    _set_order_transactions(result, ())
    return result


def consume_v8_result(
    tracking_id: str,
    attempts: int,
    correlation_id: str | None,
    request_id: str | None,
    cv: str | None,
    answer: ConsumeV8Response,
) -> ConsumeResult:
    """The :class:`ConsumeResult` of a v8 answer, built like :func:`consume_result`."""
    result: ConsumeResult = _new(ConsumeResult)
    _set_tracking_id(result, tracking_id)
    _set_transaction_id(result, None)
    _set_attempts(result, attempts)
    _set_correlation_id(result, correlation_id)
    _set_request_id(result, request_id)
    _set_cv(result, cv)
    _set_new_quantity(result, answer.new_quantity)
    _set_item_id(result, answer.item_id)
    _set_product_id(result, answer.product_id)
    _set_order_transactions(result, answer.order_transactions)
    return result
