"""The public API named in docs/design.md is importable exactly as documented."""

from __future__ import annotations

import importlib

import store_async

# docs/design.md, "Public API (a contract: outside tests call these names)".
CONTRACT = [
    "StoreClient",
    "Endpoints",
    "RetryPolicy",
    "StaticTokenCredential",
    "UserIdentity",
    "ConsumeRequest",
    "ConsumeResult",
    "QueryRequest",
    "QueryResult",
    "CollectionItem",
    "ProductSkuId",
    "GrantRequest",
    "Order",
    "OrderLineItem",
    "IdentityV6",
    "OfflineLicense",
    "ProductKey",
    "StoreIdKey",
    "StoreError",
    "AuthenticationError",
    "InvalidRequestError",
    "NotFoundError",
    "ConflictError",
    "ThrottledError",
    "ServiceUnavailableError",
    "TransportError",
    "OutcomeUnknownError",
]


def test_every_contract_name_is_exported_from_the_package_root() -> None:
    missing = [name for name in CONTRACT if name not in store_async.__all__]
    assert missing == []
    for name in store_async.__all__:
        assert getattr(store_async, name) is not None, name


def test_every_error_is_a_store_error() -> None:
    for name in store_async.__all__:
        value = getattr(store_async, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, store_async.StoreError), name


def test_sub_modules_of_the_contract() -> None:
    codec = importlib.import_module("store_async.codec")
    emulator = importlib.import_module("store_async.emulator")
    assert codec.converter is not None
    assert emulator.StoreEmulator is not None
    assert emulator.FaultPlan is not None


def test_version_matches_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert store_async.__version__ == version("store-async")
