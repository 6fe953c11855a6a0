"""Query filters and continuation tokens (docs/store-api.md section 3.1)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from store_async.emulator.items import Item
from store_async.emulator.wire import ApiError, lowered, parse_wire_time

__all__ = ["QueryFilters", "continuation_token", "read_continuation_token"]


@dataclass(frozen=True, slots=True)
class QueryFilters:
    modified_after: datetime | None
    parent_product_id: str | None
    product_skus: frozenset[tuple[str, str]] | None
    valid_only: bool

    @classmethod
    def read(cls, body: dict[str, Any]) -> QueryFilters:
        raw_after = body.get("modifiedafter")
        modified_after = parse_wire_time(raw_after) if raw_after is not None else None
        if raw_after is not None and modified_after is None:
            raise ApiError.invalid("modifiedAfter must be a date and time.", "modifiedAfter")
        parent = body.get("parentproductid")
        if parent is not None and not isinstance(parent, str):
            raise ApiError.invalid("parentProductId must be a string.", "parentProductId")
        skus = None
        raw_skus = body.get("productskuids")
        if raw_skus is not None:
            pairs = [lowered(entry) for entry in raw_skus] if isinstance(raw_skus, list) else [None]
            if any(p is None or not p.get("productid") or not p.get("skuid") for p in pairs):
                raise ApiError.invalid("productSkuIds needs productId and skuId.", "productSkuIds")
            skus = frozenset((p["productid"], p["skuid"]) for p in pairs if p is not None)
        validity = body.get("validitytype") or "All"
        if not isinstance(validity, str) or validity.lower() not in ("all", "valid"):
            raise ApiError.invalid("validityType must be All or Valid.", "validityType")
        return cls(modified_after, parent, skus, validity.lower() == "valid")

    def accept(self, item: Item, moment: datetime) -> bool:
        if self.modified_after is not None and item.modified_date <= self.modified_after:
            return False
        if self.parent_product_id is not None and item.parent_product_id != self.parent_product_id:
            return False
        if (
            self.product_skus is not None
            and (item.product_id, item.sku_id) not in self.product_skus
        ):
            return False
        return not self.valid_only or item.is_valid(moment)


def continuation_token(after_sequence: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after_sequence})).decode()


def read_continuation_token(token: Any) -> int:
    if token is None:
        return 0
    try:
        document = orjson.loads(base64.urlsafe_b64decode(token))
        after = document["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise ApiError.invalid("Unknown continuationToken.", "continuationToken") from None
    if type(after) is not int:
        raise ApiError.invalid("Unknown continuationToken.", "continuationToken")
    return after
