"""Store ID key lifecycle in the Fulfiller, against the emulator's real keys (RS256 JWTs) and its
renew endpoint: renew once per key, fail expired keys without a request, journal the new key."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from store_async import ConsumeRequest, StoreClient, StoreIdKey, UserIdentity
from store_async.emulator import StoreEmulator
from store_async.fulfillment import Fulfiller, Fulfillment, SqliteJournal
from store_async.models import ConsumeResult

DAY = 24 * 3600.0


def keyed_rows(emu: StoreEmulator, keys: dict[str, str], rows_per_user: int) -> list[Fulfillment]:
    rows = []
    for user, key in keys.items():
        for number in range(rows_per_user):
            item = emu.add_consumable(user, "gems")
            beneficiary = UserIdentity(identity_value=key, local_ticket_reference=user)
            request = ConsumeRequest.for_item(beneficiary, item.item_id)
            rows.append(Fulfillment.of(request, f"{user}-{number}"))
    return rows


def journaled_keys(path: Path) -> dict[str, tuple[str, str]]:
    """caller key -> (state, Store ID key) as journaled."""
    with sqlite3.connect(path) as db:
        found = db.execute(
            "SELECT f.key, f.state, b.identity_value FROM fulfillments AS f "
            "JOIN beneficiaries AS b ON b.id = f.beneficiary_id"
        ).fetchall()
    return {key: (state, value) for key, state, value in found}


async def test_keys_past_refresh_are_renewed_once_and_expired_ones_fail_without_a_request(
    tmp_path: Path,
) -> None:
    now = time.time()
    async with StoreEmulator(strict_keys=True) as emu:
        keys: dict[str, str] = {}
        for number in range(40):
            user = f"user-{number}"
            if number < 4:  # 10 %: past the 14-day refresh time, still valid
                keys[user] = emu.mint_store_id_key(
                    user, issued_at=now - 15 * DAY, lifetime=30 * DAY
                )
            elif number < 6:  # 5 %: expired
                keys[user] = emu.mint_store_id_key(
                    user, issued_at=now - 31 * DAY, lifetime=30 * DAY
                )
            else:
                keys[user] = emu.mint_store_id_key(user)
        rows = keyed_rows(emu, keys, 3)
        journal_path = tmp_path / "journal"
        async with (
            StoreClient(emu.credential(), endpoints=emu.endpoints) as store,
            SqliteJournal(journal_path, synchronous="normal") as journal,
        ):
            report = await Fulfiller(store, journal, concurrency=16).run(rows)
            assert (report.done, report.failed, report.pending) == (114, 6, 0)
            assert (report.keys_renewed, report.keys_refused) == (4, 2)
            assert emu.stats.requests["renew"] == 4  # once per key, not per row
            assert emu.stats.requests["consume"] == 114  # no request for an expired key
            assert emu.ledger.total == 114
            expired_at = StoreIdKey.parse(keys["user-4"]).expires_at.isoformat()
            failed = {row.key: row.failure for row in report.failures}
            assert sorted(failed) == [f"user-{u}-{n}" for u in (4, 5) for n in range(3)]
            assert failed["user-4-0"].error_type == "InvalidStoreIdKeyError"
            assert failed["user-4-0"].message == (
                f"Store ID key expired at {expired_at}; the client app must issue a new one"
            )
            assert "Store ID keys: 4 renewed, 2 expired or refused" in report.summary()
            journaled = journaled_keys(journal_path)
            for user in ("user-0", "user-3"):
                state, value = journaled[f"{user}-2"]
                assert state == "done"
                assert value != keys[user]  # the renewed key replaced the old one
                renewed = StoreIdKey.parse(value)
                assert renewed.user_id == user
                assert not renewed.needs_refresh()
            assert journaled["user-10-0"] == ("done", keys["user-10"])

            # A rerun over the same input (old keys) does nothing: no renewal, no consume.
            again = await Fulfiller(store, journal, concurrency=16).run(rows)
        assert (again.already_done, again.already_failed, again.done, again.failed) == (
            114,
            6,
            0,
            0,
        )
        assert (again.keys_renewed, again.keys_refused) == (0, 0)
        assert emu.stats.requests["renew"] == 4
        assert emu.stats.requests["consume"] == 114


async def test_a_refused_renewal_fails_the_rows_of_that_key(tmp_path: Path) -> None:
    now = time.time()
    async with StoreEmulator(strict_keys=True) as emu:
        revoked = emu.mint_store_id_key("gone", issued_at=now - 20 * DAY, lifetime=30 * DAY)
        emu.revoke_store_id_key(revoked)
        fine = emu.mint_store_id_key("fine")
        rows = keyed_rows(emu, {"gone": revoked, "fine": fine}, 2)
        renewals: list[str] = []

        class Client:
            def __init__(self, store: StoreClient) -> None:
                self.store = store
                self.consume = store.consume

            async def renew_store_id_key(self, key: StoreIdKey | str) -> StoreIdKey:
                renewals.append(str(key))
                return await self.store.renew_store_id_key(key)

        async with (
            StoreClient(emu.credential(), endpoints=emu.endpoints) as store,
            SqliteJournal(tmp_path / "j", synchronous="normal") as journal,
        ):
            report = await Fulfiller(Client(store), journal).run(rows)
        assert (report.done, report.failed, report.keys_refused) == (2, 2, 1)
        assert len(renewals) == 1  # one renewal call for the key's two rows
        # (the engine resends a 401 once, in case it was about the access token)
        assert emu.stats.requests["renew"] == 2
        failure = report.failures[0].failure
        assert failure.status == 401
        assert failure.inner_code == "AuthenticationTokenInvalid"
        assert failure.message.startswith("Store ID key renewal was refused (AuthenticationError")
        assert failure.message.endswith("the client app must issue a new one")
        assert revoked not in str(report.to_dict())


async def test_opaque_keys_are_sent_as_they_are_and_renewal_can_be_turned_off(
    tmp_path: Path,
) -> None:
    now = time.time()
    async with StoreEmulator() as emu:
        old = emu.mint_store_id_key("old", issued_at=now - 20 * DAY, lifetime=30 * DAY)
        rows = keyed_rows(emu, {"opaque-user": "opaque-user", "old": old}, 2)
        seen: list[str] = []

        class Client:
            def __init__(self, store: StoreClient) -> None:
                self.store = store

            async def consume(self, request: ConsumeRequest) -> ConsumeResult:
                seen.append(request.beneficiary.identity_value)
                return await self.store.consume(request)

        async with (
            StoreClient(emu.credential(), endpoints=emu.endpoints) as store,
            SqliteJournal(tmp_path / "j", synchronous="normal") as journal,
        ):
            report = await Fulfiller(Client(store), journal, renew_keys=False).run(rows)
        assert report.done == 4
        assert sorted(seen) == sorted(["opaque-user"] * 2 + [old] * 2)
        assert emu.stats.requests["renew"] == 0
