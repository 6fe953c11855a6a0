"""The refund queue end to end against a real Azurite and the emulator: SAS from the Store,
receive/peek/delete, SAS refresh (expiry, 403), sync once per event id, and RefundFeed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store_async import StaticTokenCredential, StoreClient
from store_async.emulator import StoreEmulator
from store_async.emulator.refunds import encode_message, refund_event
from store_async.errors import (
    AuthenticationError,
    RefundQueueError,
    RefundQueueNotOnboardedError,
    ValidationError,
)
from store_async.models import RefundQueueSas
from store_async.refunds import (
    QueueMessage,
    RefundFeed,
    RefundQueue,
    RefundSync,
    SqliteRefundJournal,
    open_refund_journal,
)
from tests.azurite import Azurite, azurite  # noqa: F401 - the fixture
from tests.test_refund_journal import journal_spec  # noqa: F401 - SQLite and PostgreSQL


class SasList:
    """A SAS source handing out the given SAS URIs in turn (the last one for ever)."""

    def __init__(self, *uris: str, expires_on: datetime | None = None) -> None:
        self.uris = list(uris)
        self.fetches = 0
        self.expires_on = expires_on or datetime.now(UTC) + timedelta(hours=2)

    async def get_refund_queue_sas(self) -> RefundQueueSas:
        uri = self.uris[min(self.fetches, len(self.uris) - 1)]
        self.fetches += 1
        return RefundQueueSas(uri=uri, expires_on=self.expires_on)


@pytest.fixture
async def emulator(azurite: Azurite) -> AsyncIterator[StoreEmulator]:  # noqa: F811
    queue = azurite.new_queue()
    async with StoreEmulator(refund_queue=azurite.sas_uri(queue)) as running:
        yield running


async def test_the_store_serves_the_queue_sas_and_the_client_reads_it(
    emulator: StoreEmulator,
) -> None:
    async with StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store:
        sas = await store.get_refund_queue_sas()
    assert sas.uri == emulator.refunds.queue_url
    expected = datetime.now(UTC) + timedelta(hours=2)  # Azurite's SAS: se = now + 2 h
    assert abs((sas.expires_on - expected).total_seconds()) < 120
    assert sas.expires_on.second == 0  # minute precision on the wire
    assert emulator.refunds.sas_requests == 1


async def test_a_queue_never_onboarded_is_a_clear_typed_error() -> None:
    async with (
        StoreEmulator() as emulator,
        StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
    ):
        with pytest.raises(RefundQueueNotOnboardedError) as caught:
            await store.get_refund_queue_sas()
    error = caught.value
    assert error.status == 400
    assert error.inner_code == "ClawbackNotOnboarded"
    assert "not set up" in str(error)
    assert "onboard to clawback v2" in str(error)


async def test_a_bad_token_is_an_authentication_error_not_an_onboarding_one() -> None:
    async with (
        StoreEmulator(refund_queue="https://acct.queue.core.windows.net/q?sig=s") as emulator,
        StoreClient(StaticTokenCredential("wrong"), endpoints=emulator.endpoints) as store,
    ):
        with pytest.raises(AuthenticationError):
            await store.get_refund_queue_sas(attempts=1)


async def test_receive_peek_and_delete_with_the_pop_receipt(azurite: Azurite) -> None:  # noqa: F811
    name = azurite.new_queue()
    source = SasList(azurite.sas_uri(name))
    issuer_event = refund_event(order_id="o-1", line_item_id="l-1", product_id="p-1")
    async with StoreEmulator(refund_queue=azurite.sas_uri(name)) as emulator:
        await emulator.refunds.put([encode_message(issuer_event), "poison!"])
    async with RefundQueue(source, visibility_timeout=60) as queue:
        peeked = await queue.peek()
        assert [m.text for m in peeked] == [encode_message(issuer_event), "poison!"]
        assert all(m.pop_receipt is None for m in peeked)
        received = await queue.receive()
        assert [m.text for m in received] == [encode_message(issuer_event), "poison!"]
        assert [m.dequeue_count for m in received] == [1, 1]
        assert await queue.receive() == []  # hidden for 60 s
        assert await queue.peek() == []
        assert await queue.approximate_count() == 2  # hidden, not gone
        assert await queue.delete(received[0]) is True
        assert await queue.delete(received[0]) is False  # gone already: not an error
        assert await queue.delete(received[1]) is True
        assert await queue.approximate_count() == 0
    assert source.fetches == 1


async def test_the_sas_is_fetched_again_before_it_expires(azurite: Azurite) -> None:  # noqa: F811
    name = azurite.new_queue()
    now = [datetime.now(UTC).timestamp()]
    source = SasList(azurite.sas_uri(name), expires_on=datetime.now(UTC) + timedelta(minutes=10))
    async with RefundQueue(source, refresh_margin=300, clock=lambda: now[0]) as queue:
        await queue.receive()
        await queue.peek()
        assert source.fetches == 1
        now[0] += 4 * 60  # 6 minutes left: more than the margin
        await queue.receive()
        assert source.fetches == 1
        now[0] += 2 * 60  # 4 minutes left: within the 5-minute margin
        await queue.receive()
        assert source.fetches == 2


async def test_a_403_fetches_a_new_sas_once_and_a_second_403_is_a_typed_error(
    azurite: Azurite,  # noqa: F811
) -> None:
    name = azurite.new_queue()
    good, bad = azurite.sas_uri(name), azurite.sas_uri(name, bad=True)
    rotated = SasList(bad, good)
    async with RefundQueue(rotated) as queue:
        assert await queue.receive() == []
        assert rotated.fetches == 2
        assert queue.sas is not None
        assert queue.sas.uri == good
    revoked = SasList(bad)
    async with RefundQueue(revoked) as queue:
        with pytest.raises(RefundQueueError) as caught:
            await queue.receive()
    error = caught.value
    assert (error.status, error.code, error.retryable) == (403, "AuthenticationFailed", False)
    assert str(error) == (
        "refund queue receive: HTTP 403 AuthenticationFailed (the SAS was refused even after "
        "fetching a new one) (status=403, code=AuthenticationFailed)"
    )
    assert error.__cause__ is None
    assert error.__context__ is None
    assert revoked.fetches == 2


async def test_a_missing_queue_and_an_unreachable_account_are_typed_errors(
    azurite: Azurite,  # noqa: F811
) -> None:
    async with RefundQueue(SasList(azurite.sas_uri("no-such-queue"))) as queue:
        with pytest.raises(RefundQueueError, match="HTTP 404 QueueNotFound"):
            await queue.receive()
    unreachable = "http://127.0.0.1:9/devstoreaccount1/q?sv=1&sig=s"
    async with RefundQueue(SasList(unreachable), retry_total=0) as queue:
        with pytest.raises(RefundQueueError, match="no answer from the queue") as caught:
            await queue.peek()
    assert caught.value.retryable is True


async def test_sync_records_each_event_once_rejects_poison_and_empties_the_queue(
    emulator: StoreEmulator,
    journal_spec: str,  # noqa: F811
) -> None:
    issued = await emulator.refunds.issue(
        count=30, duplicates=9, bundles=3, base64url_share=0.5, poison=3, seed=5
    )
    assert issued["messages"] == 42
    async with (
        StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
        await open_refund_journal(journal_spec) as journal,
        RefundQueue(store) as queue,
    ):
        report = await RefundSync(queue, journal).run()
        assert (report.received, report.recorded, report.duplicates, report.rejected) == (
            42,
            30,
            9,
            3,
        )
        assert (report.deleted, report.drained) == (42, True)
        ids = [event.event_id async for event in journal.events()]
        assert sorted(ids) == sorted(issued["eventIds"])
        keys = {event.bundle_key async for event in journal.events()}
        assert keys == set(issued["bundleKeys"])
        bundle_keys = [key for key in keys if ":9NBUNDLE" in key]
        assert len(bundle_keys) == 9  # 3 bundles of 3 products sharing order and line item
        assert len({key.rsplit(":", 1)[0] for key in bundle_keys}) == 3
        assert len([r async for r in journal.rejected()]) == 3
        assert await queue.approximate_count() == 0


class Crash(Exception):
    pass


async def test_a_handler_that_crashes_midway_reruns_and_handles_every_event_once(
    emulator: StoreEmulator,
    journal_spec: str,  # noqa: F811
) -> None:
    issued = await emulator.refunds.issue(count=25, duplicates=5, seed=9)
    effects: dict[str, int] = {}  # the application's side: one claw-back row per event id
    calls: list[str] = []

    async def run_feed(crash_at: int | None) -> None:
        async with (
            StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
            await open_refund_journal(journal_spec) as journal,
        ):
            async for refund in RefundFeed(store, journal):
                calls.append(refund.event_id)
                if crash_at is not None and len(calls) == crash_at:
                    raise Crash(refund.event_id)  # before its effect: nothing applied
                effects[refund.event_id] = effects.get(refund.event_id, 0) + 1
                assert await refund.mark_handled() is True

    with pytest.raises(Crash) as crashed:
        await run_feed(crash_at=11)
    assert len(effects) == 10
    await run_feed(crash_at=None)
    assert effects == {event_id: 1 for event_id in issued["eventIds"]}
    assert calls.count(str(crashed.value)) == 2  # handed out again after the crash
    assert len(calls) == 26
    async with await open_refund_journal(journal_spec, create=False) as journal:
        counts = await journal.counts()
    assert (counts.events, counts.handled, counts.deliveries) == (25, 25, 30)


async def test_a_feed_without_a_store_hands_out_only_what_the_journal_holds(
    emulator: StoreEmulator, tmp_path: Path
) -> None:
    await emulator.refunds.issue(count=4, seed=1)
    async with (
        StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
        SqliteRefundJournal(tmp_path / "refunds.db") as journal,
        RefundQueue(store) as queue,
    ):
        await RefundSync(queue, journal).run()
        await emulator.refunds.issue(count=3, seed=2)  # left on the queue
        seen = [refund.event_id async for refund in RefundFeed(None, journal)]
        assert len(seen) == 4
        again = [refund.event_id async for refund in RefundFeed(None, journal)]
        assert again == seen  # nothing was marked handled
        assert await queue.approximate_count() == 3


async def test_two_feeds_on_one_journal_may_both_hand_out_an_event_one_mark_wins(
    emulator: StoreEmulator,
    journal_spec: str,  # noqa: F811
) -> None:
    """What the guide promises two consumers of one journal (two processes: two journal
    objects): no exclusive hand-out, but exactly one ``mark_handled()`` answers ``True``."""
    await emulator.refunds.issue(count=6, seed=3)
    async with (
        StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
        await open_refund_journal(journal_spec) as first,
        await open_refund_journal(journal_spec) as second,
        RefundQueue(store) as queue,
    ):
        await RefundSync(queue, first).run()
        one, two = RefundFeed(None, first).__aiter__(), RefundFeed(None, second).__aiter__()
        marks: dict[str, list[bool]] = {}
        for _ in range(6):
            a, b = await anext(one), await anext(two)
            assert a.event_id == b.event_id  # both were handed the same event
            for refund in (b, a):
                marks.setdefault(refund.event_id, []).append(await refund.mark_handled())
        assert len(marks) == 6
        assert all(answers == [True, False] for answers in marks.values())
        assert (await second.counts()).unhandled == 0
        assert [refund async for refund in RefundFeed(None, first)] == []


async def test_bad_queue_and_feed_arguments_are_validation_errors(
    azurite: Azurite,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = SasList(azurite.sas_uri(azurite.new_queue()))
    for options in ({"visibility_timeout": 0}, {"visibility_timeout": 1.5},
                    {"visibility_timeout": True}, {"refresh_margin": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            RefundQueue(source, **options)  # type: ignore[arg-type]
    async with RefundQueue(source) as queue:
        for count in (0, 33, True):
            with pytest.raises(ValidationError, match="max_messages"):
                await queue.receive(count)
        with pytest.raises(ValidationError, match="pop receipt"):
            await queue.delete(QueueMessage(message_id="m", text="t", dequeue_count=0))
    async with SqliteRefundJournal(tmp_path / "refunds.db") as journal:
        with pytest.raises(ValidationError, match="page"):
            RefundFeed(None, journal, page=0)
        with pytest.raises(ValidationError, match="poll_interval"):
            RefundFeed(None, journal, poll_interval=0)

    class NotASas:
        async def get_refund_queue_sas(self) -> object:
            return "https://x/q?sig=s"

    async with RefundQueue(NotASas()) as queue:  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="RefundQueueSas"):
            await queue.peek()


class Enough(Exception):
    pass


async def test_a_following_feed_polls_and_hands_out_events_issued_later(
    emulator: StoreEmulator, tmp_path: Path
) -> None:
    await emulator.refunds.issue(count=2, seed=1)
    polls: list[float] = []

    async def sleep(seconds: float) -> None:  # the feed's wait between polls
        polls.append(seconds)
        if len(polls) == 1:
            await emulator.refunds.issue(count=3, seed=2)  # arrives while the feed waits
        else:
            raise Enough

    seen = []
    async with (
        StoreClient(emulator.credential(), endpoints=emulator.endpoints) as store,
        SqliteRefundJournal(tmp_path / "refunds.db") as journal,
    ):
        feed = RefundFeed(store, journal, follow=True, poll_interval=7.5, sleep=sleep)

        async def handle_all() -> None:
            async for refund in feed:
                seen.append(refund.event_id)
                await refund.mark_handled()

        with pytest.raises(Enough):
            await handle_all()
        assert (feed.report.recorded, feed.report.received) == (5, 5)
    assert len(set(seen)) == len(seen) == 5
    assert polls == [7.5, 7.5]
