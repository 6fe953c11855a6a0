"""The v8 ``b2bLicensePreview`` and v9 ``publisherQuery`` answers (docs/store-api.md 9, 10).

Entries are the user's owned items (RETAIL) and consumable balances (per sandbox; ``quantity``
is the balance left), in a stable order. Pages are cut by an offset carried in a continuation
token that *looks like JSON*, as the real one does: a client that parses it is wrong.

Limits (documented): more than 100 ``productSkuIds`` is 400; ``maxPageSize`` at most 100 (v8)
or 200 (v9); v9 requires ``productSkuIds``. A v8 query without ``productSkuIds`` "can cause the
call to time out": we answer 400 instead (**our choice**, so tests do not hang).
"""

from __future__ import annotations

import base64
import os
from typing import Any, Final

import orjson

from store_async.emulator.balances import RETAIL, Balance, Balances
from store_async.emulator.items import Item
from store_async.emulator.wire import END_OF_TIME, ApiError, lowered, now, wire_time

__all__ = ["license_page"]

_MAX_SKUS: Final = 100
_DEFAULT_PAGE: Final = 100
_KINDS: Final = {
    "UnmanagedConsumable": "UnmanagedConsumable",
    "Durable": "Durable",
    "Game": "Game",
    "Application": "Game",
}


def license_page(
    users: list[tuple[str, str, list[Item]]],
    balances: Balances,
    body: dict[str, Any],
    *,
    v9: bool,
) -> dict[str, Any]:
    """One page over ``(user id, localTicketReference, items)`` of every beneficiary (``body``
    has lowercase keys)."""
    largest = 200 if v9 else 100
    size = body.get("maxpagesize")
    if size is None:
        size = _DEFAULT_PAGE
    if type(size) is not int or not 1 <= size <= largest:
        raise ApiError.invalid(
            f"maxPageSize must be an integer from 1 to {largest}.", "maxPageSize"
        )
    wanted = _product_skus(body.get("productskuids"), v9=v9)
    kinds = _kinds(body.get("entitlementfilters"))
    validity = body.get("validitytype") or "All"
    if not isinstance(validity, str) or validity.lower() not in ("all", "valid", "invalid"):
        raise ApiError.invalid("validityType must be All, Valid or Invalid.", "validityType")
    sandbox = body.get("sbx", body.get("sandbox")) or RETAIL
    if not isinstance(sandbox, str):
        raise ApiError.invalid("sbx must be a string.", "sbx")
    offset = _read_token(body.get("continuationtoken"))
    moment = now()
    entries: list[dict[str, Any]] = []
    validity = validity.lower()
    for user_id, reference, items in users:
        for item in items if sandbox == RETAIL else ():
            if item.consumed or not _wanted(wanted, item.product_id, item.sku_id):
                continue
            valid = item.is_valid(moment)
            if (validity == "valid" and not valid) or (validity == "invalid" and valid):
                continue
            entries.append(_item_entry(item, reference, v9=v9))
        for balance in balances.of_user(user_id, sandbox):
            if _wanted(wanted, balance.product_id, "0010") and validity != "invalid":
                entries.append(_balance_entry(balance, reference, v9=v9))
    if kinds is not None:
        entries = [entry for entry in entries if entry["productKind"].lower() in kinds]
    page: dict[str, Any] = {"items": entries[offset : offset + size]}
    if offset + size < len(entries):
        page["continuationToken"] = _token(offset + size)
    return page


def _product_skus(raw: Any, *, v9: bool) -> list[tuple[str, str | None]]:
    if raw is None or raw == []:
        raise ApiError.invalid(
            "productSkuIds is required (a v8 query without it would time out).", "productSkuIds"
        )
    if not isinstance(raw, list):
        raise ApiError.invalid("productSkuIds must be a list.", "productSkuIds")
    if len(raw) > _MAX_SKUS:
        raise ApiError.invalid("productSkuIds takes at most 100 entries.", "productSkuIds")
    pairs = []
    for entry in raw:
        pair = lowered(entry)
        product = pair.get("productid") if pair else None
        sku = pair.get("skuid") if pair else None
        if not isinstance(product, str) or not product or (sku is None and not v9):
            raise ApiError.invalid("productSkuIds needs productId and skuId.", "productSkuIds")
        if sku is not None and not isinstance(sku, str):
            raise ApiError.invalid("skuId must be a string.", "productSkuIds")
        pairs.append((product, sku))
    return pairs


def _wanted(wanted: list[tuple[str, str | None]], product_id: str, sku_id: str) -> bool:
    return any(product == product_id and sku in (None, sku_id) for product, sku in wanted)


def _kinds(raw: Any) -> set[str] | None:
    """``entitlementFilters`` like ``"*:Consumable"``: the kinds after the colon."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(entry, str) for entry in raw):
        raise ApiError.invalid(
            "entitlementFilters must be a list of strings.", "entitlementFilters"
        )
    return {entry.rpartition(":")[2].lower() for entry in raw}


def _token(offset: int) -> str:
    # JSON-looking, as the service's tokens are, with a nonce so that no two runs match.
    nonce = base64.b64encode(os.urandom(6)).decode()
    return orjson.dumps({"offset": offset, "nonce": nonce}).decode()


def _read_token(token: Any) -> int:
    if token is None:
        return 0
    try:
        offset = orjson.loads(token)["offset"] if isinstance(token, str) else None
    except (orjson.JSONDecodeError, TypeError, KeyError):
        offset = None
    if type(offset) is not int or offset < 0:
        raise ApiError.invalid("Unknown continuationToken.", "continuationToken")
    return offset


def _common(reference: str, v9: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "acquisitionType": "Single",
        "localTicketReference": reference,
        "productFamily": "Games",
        "purchasedCountry": "US",
        "satisfiedByProductIds": [],
        "tags": [],
        "trialData": {"isInTrialPeriod": False, "isTrial": False, "trialTimeRemaining": "00:00:00"},
    }
    if not v9:
        document.update(sharingSource="None", legacyOfferInstanceId="", legacyProductId="")
    return document


def _item_entry(item: Item, reference: str, *, v9: bool) -> dict[str, Any]:
    return {
        **_common(reference, v9),
        "id": item.item_id,
        "productId": item.product_id,
        "skuId": item.sku_id,
        "productKind": _KINDS.get(item.product_type, item.product_type),
        "status": item.status,
        "quantity": 1,
        "acquiredDate": wire_time(item.acquired_date),
        "startDate": wire_time(item.start_date),
        "endDate": wire_time(item.end_date) if item.end_date else END_OF_TIME,
        "modifiedDate": wire_time(item.modified_date),
        "transactionId": item.transaction_id,
    }


def _balance_entry(balance: Balance, reference: str, *, v9: bool) -> dict[str, Any]:
    moment = wire_time(now())
    kind = "Consumable" if balance.managed == "store" else "UnmanagedConsumable"
    return {
        **_common(reference, v9),
        "id": balance.item_id,
        "productId": balance.product_id,
        "skuId": "0010",
        "productKind": kind,
        "status": "Active",
        "quantity": balance.quantity,
        "acquiredDate": moment,
        "startDate": moment,
        "endDate": END_OF_TIME,
        "modifiedDate": moment,
    }
