"""Subscriptions (recurrences): the documented examples (uwp/monetize get-subscriptions-for-a-
user and change-the-billing-state-of-a-subscription-for-a-user), "active now?", the pager, and
a change that is never repeated after it may have been applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from store_async import StoreClient, codec
from store_async._operations import CHANGE_SUBSCRIPTION
from store_async.emulator import FaultKind, FaultPlan, StoreEmulator
from store_async.errors import (
    ConflictError,
    NotFoundError,
    OutcomeUnknownError,
    ValidationError,
)
from store_async.models.subscriptions import (
    Subscription,
    SubscriptionChange,
    SubscriptionPage,
    SubscriptionQuery,
)

RECURRENCE = "mdr:0:bc0cb6960acd4515a0e1d638192d77b7:77d5ebee-0310-4d23-b204-83e8613baaac"
QUERY_REQUEST = b'{\n  "b2bKey":  "eyJ0eXAiOiJ..."\n}'
QUERY_RESPONSE = b"""{
  "items": [
    {
      "autoRenew":true,
      "beneficiary":"pub:gFVuEBiZHPXonkYvtdOi+tLE2h4g2Ss0ZId0RQOwzDg=",
      "expirationTime":"2017-06-11T03:07:49.2552941+00:00",
      "id":"mdr:0:bc0cb6960acd4515a0e1d638192d77b7:77d5ebee-0310-4d23-b204-83e8613baaac",
      "lastModified":"2017-01-08T21:07:51.1459644+00:00",
      "market":"US",
      "productId":"9NBLGGH52Q8X",
      "skuId":"0024",
      "startTime":"2017-01-10T21:07:49.2552941+00:00",
      "recurrenceState":"Active"
    }
  ]
}"""
CHANGE_REQUEST = b"""{
  "b2bKey":  "eyJ0eXAiOiJ...",
  "changeType": "Extend",
  "extensionTimeInDays": "5"
}"""
EXTENDED = {
    "autoRenew": True,
    "beneficiary": "pub:gFVuEBiZHPXonkYvtdOi+tLE2h4g2Ss0ZId0RQOwzDg=",
    "expirationTime": "2017-06-16T03:07:49.2552941+00:00",
    "id": RECURRENCE,
    "lastModified": "2017-01-10T21:08:13.1459644+00:00",
    "market": "US",
    "productId": "9NBLGGH52Q8X",
    "skuId": "0024",
    "startTime": "2017-01-10T21:07:49.2552941+00:00",
    "recurrenceState": "Active",
}


def test_the_query_examples() -> None:
    ours = SubscriptionQuery(b2b_key="eyJ0eXAiOiJ...")
    assert orjson.loads(codec.dumps(ours)) == orjson.loads(QUERY_REQUEST)
    assert "eyJ0" not in repr(ours)
    page = codec.loads(QUERY_RESPONSE, SubscriptionPage)
    assert page.continuation_token is None
    (subscription,) = page.items
    assert subscription == Subscription(
        id=RECURRENCE,
        product_id="9NBLGGH52Q8X",
        sku_id="0024",
        recurrence_state="Active",
        auto_renew=True,
        beneficiary="pub:gFVuEBiZHPXonkYvtdOi+tLE2h4g2Ss0ZId0RQOwzDg=",
        market="US",
        start_time=datetime(2017, 1, 10, 21, 7, 49, 255294, tzinfo=UTC),
        expiration_time=datetime(2017, 6, 11, 3, 7, 49, 255294, tzinfo=UTC),
        last_modified=datetime(2017, 1, 8, 21, 7, 51, 145964, tzinfo=UTC),
    )
    assert codec.loads(codec.dumps(page), SubscriptionPage) == page


def test_the_change_example_and_both_answer_shapes() -> None:
    ours = SubscriptionChange(
        b2b_key="eyJ0eXAiOiJ...", change_type="Extend", extension_time_in_days=5
    )
    # extensionTimeInDays is typed as a string, as the example sends it.
    assert orjson.loads(codec.dumps(ours)) == orjson.loads(CHANGE_REQUEST)
    wrapped = CHANGE_SUBSCRIPTION.parse((200, {}, orjson.dumps({"items": [EXTENDED]})), 1, None)
    bare = CHANGE_SUBSCRIPTION.parse((200, {}, orjson.dumps(EXTENDED)), 1, None)
    assert wrapped == bare
    assert wrapped.expiration_time == datetime(2017, 6, 16, 3, 7, 49, 255294, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"change_type": "Pause"}, "change_type must be one of"),
        ({"change_type": "Extend"}, "extension_time_in_days is required by Extend and only by it"),
        (
            {"change_type": "Cancel", "extension_time_in_days": 3},
            "required by Extend and only by it",
        ),
        ({"change_type": "Extend", "extension_time_in_days": "five"}, "whole number of days"),
        ({"change_type": "Extend", "extension_time_in_days": 1.5}, "whole number of days"),
        ({"change_type": "Cancel", "b2b_key": ""}, "b2b_key must not be empty"),
    ],
)
def test_bad_changes_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SubscriptionChange(**{"b2b_key": "k", **fields})  # type: ignore[arg-type]


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "expires", "grace", "active"),
    [
        ("Active", NOW + timedelta(days=1), None, True),
        ("Active", NOW - timedelta(hours=1), None, False),  # the state lags behind the time
        ("InDunning", NOW - timedelta(days=1), NOW + timedelta(days=2), True),  # in grace
        ("InDunning", NOW - timedelta(days=3), NOW - timedelta(days=1), False),
        ("Canceled", NOW + timedelta(days=9), NOW + timedelta(days=9), False),  # terminal
        ("Inactive", NOW + timedelta(days=9), None, False),
        ("Failed", NOW + timedelta(days=9), None, False),
        ("None", None, None, True),  # perpetual
        ("SomethingNew", NOW + timedelta(days=1), None, True),  # unknown state: the time
        ("Active", None, None, False),
    ],
)
def test_active_now(
    state: str, expires: datetime | None, grace: datetime | None, active: bool
) -> None:
    subscription = Subscription(
        id=RECURRENCE,
        recurrence_state=state,
        expiration_time=expires,
        expiration_time_with_grace=grace,
    )
    assert subscription.is_active(NOW) is active
    assert subscription.is_terminal is (state in ("Canceled", "Inactive", "Failed"))


def test_active_now_needs_an_aware_time() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Subscription(id="x", expiration_time=NOW).is_active(datetime(2026, 1, 1))


# -- through the client and the emulator -------------------------------------------------------


async def test_list_change_and_states() -> None:
    async with StoreEmulator() as emu:
        key = emu.mint_store_id_key("user-1", "purchase")
        ids = [emu.add_subscription("user-1", f"9NSUB{n:07}").id for n in range(60)]
        emu.add_subscription("user-2", "9NOTHERS")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            pages = [page async for page in store.list_subscriptions(key).by_page()]
            assert [len(page.items) for page in pages] == [25, 25, 10]
            listed = [subscription async for subscription in store.list_subscriptions(key)]
            assert [s.id for s in listed] == ids
            assert all(s.is_active() and s.recurrence_state == "Active" for s in listed)

            first = listed[0]
            extended = await store.change_subscription(
                first.id,
                SubscriptionChange(b2b_key=key, change_type="Extend", extension_time_in_days=5),
            )
            assert extended.expiration_time == first.expiration_time + timedelta(days=5)
            toggled = await store.change_subscription(
                first.id, SubscriptionChange(b2b_key=key, change_type="ToggleAutoRenew")
            )
            assert toggled.auto_renew is False
            canceled = await store.change_subscription(
                first.id, SubscriptionChange(b2b_key=key, change_type="Cancel")
            )
            assert canceled.recurrence_state == "Canceled"
            assert canceled.is_terminal
            assert not canceled.is_active()
            with pytest.raises(ConflictError) as ended:
                await store.change_subscription(
                    first.id, SubscriptionChange(b2b_key=key, change_type="Refund")
                )
            assert ended.value.inner_code == "SubscriptionNotActive"
            with pytest.raises(NotFoundError):
                await store.change_subscription(
                    "mdr:0:unknown", SubscriptionChange(b2b_key=key, change_type="Cancel")
                )
        assert emu.ledger.count("subscription_change") == 3


async def test_a_change_is_never_repeated_after_it_may_have_been_applied() -> None:
    plan = FaultPlan(script={"subscriptions": [FaultKind.DROP_AFTER_COMMIT]})
    async with StoreEmulator(faults=plan) as emu:
        key = emu.mint_store_id_key("user-1", "purchase")
        subscription = emu.add_subscription("user-1", "9NSUB")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            with pytest.raises(OutcomeUnknownError) as unknown:
                await store.change_subscription(
                    subscription.id, SubscriptionChange(b2b_key=key, change_type="Cancel")
                )
            assert unknown.value.attempts == 1
            assert unknown.value.idempotency_key is None
            assert "query the subscription (list_subscriptions)" in unknown.value.message
            assert key not in str(unknown.value)
            # It was applied once, and never sent again: the query says so.
            (after,) = [s async for s in store.list_subscriptions(key)]
            assert after.recurrence_state == "Canceled"
        assert emu.ledger.count("subscription_change") == 1
        assert emu.stats.requests["subscriptions"] == 2  # the change once, the query once


async def test_a_bare_item_answer_is_read_too() -> None:
    async with StoreEmulator(wire_variants=True) as emu:
        key = emu.mint_store_id_key("user-1", "purchase")
        subscription = emu.add_subscription("user-1", "9NSUB", state="InDunning", days_left=-1)
        subscription.grace = timedelta(days=3)
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            changed = await store.change_subscription(
                subscription.id, SubscriptionChange(b2b_key=key, change_type="ToggleAutoRenew")
            )
        assert (changed.id, changed.auto_renew, changed.recurrence_state) == (
            subscription.id,
            False,
            "InDunning",
        )
        assert changed.is_active()  # expired, but within its grace period
