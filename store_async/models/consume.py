"""Report a consumable as fulfilled: ``POST /v6.0/collections/consume`` (docs/store-api.md 3.2)."""

from __future__ import annotations

from typing import Final, cast
from uuid import UUID

import attrs

from store_async.errors import ValidationError
from store_async.models import _checks
from store_async.models.identities import UserIdentity

__all__ = ["ConsumeRequest", "ConsumeResult", "consume_result"]

_FORMS = (
    "give either item_id + tracking_id (ConsumeRequest.for_item) "
    "or product_id + transaction_id (ConsumeRequest.for_transaction)"
)


def _tracking_id(value: str | UUID | None) -> str | None:
    return _checks.optional_guid(value, "ConsumeRequest.tracking_id")


def _transaction_id(value: str | UUID | None) -> str | None:
    return _checks.optional_guid(value, "ConsumeRequest.transaction_id")


@attrs.frozen(kw_only=True)
class ConsumeRequest:
    """Report one consumable as fulfilled, in one of the two documented forms.

    - **by item**: ``item_id`` (from a query) and ``tracking_id``, a GUID you choose. Resending
      the same tracking id returns the same answer and never consumes twice, so it is safe to
      retry forever. Build it with :meth:`for_item`, which generates the tracking id; persist the
      request (or its :attr:`idempotency_key`) *before* sending it.
    - **by transaction**: ``product_id`` and ``transaction_id`` (from a purchase receipt or a
      query). Build it with :meth:`for_transaction`.

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

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.beneficiary, UserIdentity):
            raise ValidationError(
                "ConsumeRequest.beneficiary must be a UserIdentity, "
                f"not {type(self.beneficiary).__name__}"
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

    @classmethod
    def for_item(
        cls,
        beneficiary: UserIdentity,
        item_id: str,
        tracking_id: str | UUID | None = None,
    ) -> ConsumeRequest:
        """Consume by item id, with a new random tracking id unless you pass one.

        Pass the tracking id you stored when resubmitting a request whose outcome is unknown.
        """
        if tracking_id is None:
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

    @property
    def idempotency_key(self) -> str:
        """The GUID that makes resending safe: ``tracking_id`` or ``transaction_id``."""
        # Validation guarantees that exactly one of the two is set.
        return self.tracking_id if self.tracking_id is not None else cast(str, self.transaction_id)


@attrs.frozen(kw_only=True)
class ConsumeResult:
    """The outcome of a successful consume (the service answers 204 with no body).

    ``attempts`` counts the sends it took; the ``correlation_id``, ``request_id`` and ``cv`` are
    the service's ``MS-CorrelationId``, ``MS-RequestId`` and ``MS-CV`` headers, for support.
    """

    tracking_id: str | None
    transaction_id: str | None
    attempts: int
    correlation_id: str | None = None
    request_id: str | None = None
    cv: str | None = None


# ``ConsumeResult(...)`` costs ~2-3 µs: attrs' frozen ``__init__`` sets each slot through
# ``object.__setattr__`` by name. ``consume`` builds one per call, millions of times, so the
# client builds it through the slot descriptors directly (same object, same frozen record: the
# descriptors are what ``object.__setattr__`` ends up calling). The field order is checked here,
# so adding a field to ConsumeResult without updating this fails at import, not at run time.
_RESULT_FIELDS: Final = (
    "tracking_id", "transaction_id", "attempts", "correlation_id", "request_id", "cv"
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
    return result
