"""Microsoft Store for Business: offline licenses (docs/store-api.md section 7)."""

from __future__ import annotations

import attrs

__all__ = ["OfflineLicense", "ProductKey"]


def _blob_repr(value: str) -> str:
    # A license blob is an installable license and can run to kilobytes: show only its size.
    return f"<{len(value)} characters>"


@attrs.frozen(kw_only=True)
class ProductKey:
    """Identifies a product and SKU in the Store for Business."""

    product_id: str
    sku_id: str


@attrs.frozen(kw_only=True)
class OfflineLicense:
    """The answer of ``POST /V1/Products/{productId}/{skuId}/OfflineLicense/{contentId}``."""

    product_key: ProductKey
    license_blob: str = attrs.field(repr=_blob_repr)
    """The Base64 offline license, installable through a CSP. ``repr`` shows only its length."""
    license_instance_id: str
    """The version of the license."""
    requestor_id: str
    """The organization that requested it."""
    content_id: str
    """The license an application requires."""
