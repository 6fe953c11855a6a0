"""Seeding the emulator's store: consumables, other items, free products, business products.

Mixed into :class:`~store_async.emulator.StoreEmulator`; every method works before and after
``start()``.
"""

from __future__ import annotations

from typing import Literal, Unpack

from store_async.emulator.balances import RETAIL, Balance
from store_async.emulator.items import BusinessProduct, CatalogProduct, Item
from store_async.emulator.state import ItemOptions, StoreState
from store_async.emulator.subscriptions import Subscription
from store_async.emulator.wire import new_guid

__all__ = ["Seeding"]


class Seeding:
    """The emulator's seeding methods (over ``self._state``)."""

    _state: StoreState

    def add_consumable(self, user_id: str, product_id: str, **options: Unpack[ItemOptions]) -> Item:
        """Give ``user_id`` one unconsumed ``UnmanagedConsumable``; returns the live item
        (``item_id``, ``transaction_id``, ``consumed``...). Each call is one purchase with
        its own item id.

        :param options: ``sku_id``, ``item_id``, ``transaction_id``... (:class:`ItemOptions`).
        """
        return self._state.add_item(
            user_id, product_id, product_type="UnmanagedConsumable", **options
        )

    def add_item(
        self,
        user_id: str,
        product_id: str,
        *,
        product_type: str = "Durable",
        **options: Unpack[ItemOptions],
    ) -> Item:
        """Give ``user_id`` an item of any product type (``Application``, ``Durable``,
        ``Game``, ``UnmanagedConsumable``).

        :param options: ``sku_id``, ``item_id``, ``acquired``, ``end_date``, ``status``,
            ``parent_product_id``... (:class:`ItemOptions`).
        """
        return self._state.add_item(user_id, product_id, product_type=product_type, **options)

    def items_of(self, user_id: str) -> list[Item]:
        """All items of a user, consumed ones included, oldest first."""
        return self._state.items_of(user_id)

    def add_free_product(
        self,
        product_id: str,
        sku_id: str = "0010",
        *,
        availability_id: str | None = None,
        product_type: str = "Durable",
        title: str = "Emulated free product",
    ) -> CatalogProduct:
        """A product that grant accepts."""
        return self.add_product(
            product_id,
            sku_id,
            availability_id=availability_id,
            product_type=product_type,
            title=title,
            price=0.0,
        )

    def add_product(
        self,
        product_id: str,
        sku_id: str = "0010",
        *,
        availability_id: str | None = None,
        product_type: str = "Durable",
        title: str = "Emulated product",
        price: float = 4.99,
    ) -> CatalogProduct:
        """A catalog product; grant refuses it unless ``price`` is 0."""
        product = CatalogProduct(
            product_id=product_id,
            sku_id=sku_id,
            availability_id=availability_id or new_guid().replace("-", "")[:12].upper(),
            product_type=product_type,
            title=title,
            price=price,
        )
        return self._state.add_product(product)

    def add_business_product(
        self, product_id: str, sku_id: str = "0016", *, owned: bool = True, offline: bool = True
    ) -> BusinessProduct:
        """A Store for Business product: offline license 409 when not ``owned`` or not
        ``offline``; 404 for products never added."""
        product = BusinessProduct(product_id, sku_id, owned=owned, offline=offline)
        self._state.business[(product_id, sku_id)] = product
        return product

    # -- consumable balances (v8 consume; issue 9) ---------------------------------------

    def add_balance(
        self,
        user_id: str,
        product_id: str,
        quantity: int,
        *,
        managed: Literal["store", "developer"] = "store",
        sandbox_id: str | None = None,
        order_id: str | None = None,
    ) -> Balance:
        """One purchase of ``quantity`` units of a consumable (store-managed by default; a
        developer-managed purchase is ``quantity`` units to report fulfilled one by one), in
        RETAIL or the given sandbox; returns the live balance (``quantity``, ``consumed``...)."""
        return self._state.balances.add(
            user_id,
            product_id,
            quantity,
            managed=managed,
            sandbox_id=sandbox_id or RETAIL,
            order_id=order_id,
        )

    def balance_of(self, user_id: str, product_id: str, *, sandbox_id: str | None = None) -> int:
        """Units left of a consumable (0 when the user never had any)."""
        balance = self._state.balances.get(user_id, product_id, sandbox_id or RETAIL)
        return 0 if balance is None else balance.quantity

    def add_subscription(
        self,
        user_id: str,
        product_id: str,
        *,
        sku_id: str = "0010",
        state: str = "Active",
        days_left: float = 30.0,
        grace_days: float = 0.0,
        auto_renew: bool = True,
        is_trial: bool = False,
    ) -> Subscription:
        """A subscription of ``user_id`` (for purchase keys of that user) expiring in
        ``days_left`` days (negative: already expired), with ``grace_days`` of grace."""
        return self._state.subscriptions.add(
            user_id,
            product_id,
            sku_id=sku_id,
            state=state,
            days_left=days_left,
            grace_days=grace_days,
            auto_renew=auto_renew,
            is_trial=is_trial,
        )

    def refund_order(self, user_id: str, order_id: str, *, state: str = "Refunded") -> None:
        """Mark a consumable order ``Refunded`` or ``Revoked`` (a revoke removes the units
        left), as the orders query (clawback v1) then reports it."""
        self._state.balances.refund(user_id, order_id, state)
