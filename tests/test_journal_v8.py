"""The journals and the JSON Lines input with v8 consumes: the four deduplicated values are kept
and never resent changed, the first answer's order ids are kept, a version-1 file is upgraded,
and ``journal --export`` writes quantity and order ids back out.

The tests of the journals' rules run on both journals, SQLite and PostgreSQL: one rule, the
same outcomes and messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from store_async.cli.journal import to_input_line
from store_async.fulfillment import (
    ClaimOutcome,
    Fulfillment,
    JournalReader,
    JournalRow,
    LineError,
    RowState,
    SqliteJournal,
    _schema,
    parse_line,
)
from store_async.fulfillment.postgres_journal import PostgresJournal
from store_async.models import ConsumeRequest, ConsumeResult, OrderTransaction, UserIdentity
from store_async.models._checks import guid_for_caller_key

USER = UserIdentity(identity_value="eyJ-SECRET-key", local_ticket_reference="user-1")
TRACKING = "3eea1529-611e-4aee-915c-345494e4ee76"
ORDERS = (
    OrderTransaction(order_id="o-1", order_line_item_id="l-1", quantity_consumed=2),
    OrderTransaction(order_id="o-2", order_line_item_id="l-2", quantity_consumed=1),
)


def v8(key: str, quantity: int = 3, product_id: str = "9NCOINS", **options: object) -> Fulfillment:
    request = ConsumeRequest.for_quantity(
        USER,
        product_id,
        quantity,
        tracking_id=TRACKING,
        **options,  # type: ignore[arg-type]
    )
    return Fulfillment(key=key, request=request, caller_tracking_id=True)


def result(orders: tuple[OrderTransaction, ...], new_quantity: int) -> ConsumeResult:
    return ConsumeResult(
        tracking_id=TRACKING,
        transaction_id=None,
        attempts=1,
        new_quantity=new_quantity,
        order_transactions=orders,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fulfill.journal"


class Journals:
    """One journal's storage, SQLite or PostgreSQL: open a journal on it, read its rows."""

    def __init__(self, open_journal: Callable[[], SqliteJournal | PostgresJournal]) -> None:
        self.open = open_journal

    async def rows(self) -> dict[str, JournalRow]:
        journal = self.open()
        if isinstance(journal, SqliteJournal):
            with JournalReader(journal.path) as reader:
                return {row.key: row for row in reader.rows()}
        async with journal:
            return {row.key: row async for row in journal.rows()}


@pytest.fixture(params=["sqlite", "postgresql"])
def journals(request: pytest.FixtureRequest, path: Path) -> Journals:
    if request.param == "sqlite":
        return Journals(lambda: SqliteJournal(path))
    dsn = request.getfixturevalue("postgres_dsn")
    return Journals(lambda: PostgresJournal(dsn, pool_size=1))


async def test_a_key_is_never_resent_with_another_quantity_product_or_sandbox(
    journals: Journals,
) -> None:
    async with journals.open() as journal:
        await journal.begin_run()
        assert (await journal.claim(v8("order-1"))).outcome is ClaimOutcome.SEND
        await journal.begin_run()
        for changed, names in (
            (v8("order-1", quantity=4), "quantity differs"),
            (v8("order-1", product_id="9NOTHER"), "productId differs"),
            (v8("order-1", sandbox_id="XDKS.1"), "sandboxId differs"),
            (v8("order-1", quantity=1, product_id="9NOTHER"), "productId, quantity differ"),
        ):
            claim = await journal.claim(changed)
            assert claim.outcome is ClaimOutcome.CONFLICT
            assert claim.detail == (
                f"key 'order-1' is journaled (an earlier call, run 1) with a different request: "
                f"{names}"
            )
        v6 = Fulfillment.of(ConsumeRequest.for_item(USER, "item-1", TRACKING), key="order-1")
        assert (await journal.claim(v6)).detail == (
            "key 'order-1' is journaled (an earlier call, run 1) with a different request: "
            "the form (v8 productId+quantity vs v6) differs"
        )
        # The same four values: resent, under the journaled tracking id.
        same = await journal.claim(v8("order-1"))
        assert same.outcome is ClaimOutcome.RESEND
        assert same.request == v8("order-1").request
        # Another key cannot take a caller-chosen tracking id either.
        taken = await journal.claim(v8("order-2"))
        assert taken.outcome is ClaimOutcome.CONFLICT
        assert taken.detail == "its trackingId is already journaled under another key 'order-1'"


async def test_the_first_answers_order_ids_are_kept(journals: Journals) -> None:
    async with journals.open() as journal:
        await journal.begin_run()
        await journal.claim(v8("order-1", include_order_ids=True))
        await journal.mark_done("order-1", result(ORDERS, 7))
        # A later answer (a developer-managed replay) without order ids must not erase them.
        await journal.mark_done("order-1", result((), 7))
        await journal.flush()
    row = (await journals.rows())["order-1"]
    assert (row.state, row.new_quantity, row.order_transactions) == (RowState.DONE, 7, ORDERS)
    assert row.request == v8("order-1", include_order_ids=True).request


async def test_a_version_1_journal_is_upgraded_in_place(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in _schema._SCHEMA:  # exactly what store_async 0.1 created
        connection.execute(statement)
    connection.execute(
        "INSERT INTO beneficiaries (identity_type, identity_value, local_ticket_reference) "
        "VALUES ('b2b', 'eyJ-SECRET-key', 'user-1')"
    )
    connection.execute(
        "INSERT INTO fulfillments (key, idempotency_key, caller_chosen, item_id, beneficiary_id,"
        " run_id, created_at, updated_at) VALUES ('old', ?, 1, 'item-9', 1, 1, 0, 0)",
        (TRACKING,),
    )
    connection.close()
    with JournalReader(path) as reader:  # a reader reads version 1 without upgrading it
        old = reader.row("old")
    assert old is not None
    assert old.request.item_id == "item-9"
    assert not old.request.is_v8
    new_request = ConsumeRequest.for_quantity(USER, "9NCOINS", 2, key="new")
    async with SqliteJournal(path) as journal:
        await journal.begin_run()
        claim = await journal.claim(Fulfillment(key="new", request=new_request))
        assert claim.outcome is ClaimOutcome.SEND
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (2,)
    connection.close()
    with JournalReader(path) as reader:
        assert reader.row("old") == old
        new = reader.row("new")
    assert new is not None
    assert new.request == new_request


def test_v8_lines_parse() -> None:
    line = orjson.dumps(
        {
            "key": "order-1",
            "beneficiary": {"identityValue": "k", "localTicketReference": "r"},
            "productId": "9NCOINS",
            "quantity": 2,
            "sandboxId": "XDKS.1",
        }
    )
    parsed = parse_line(line, 4)
    assert isinstance(parsed, Fulfillment)
    assert (parsed.key, parsed.line, parsed.caller_tracking_id) == ("order-1", 4, False)
    request = parsed.request
    assert (request.product_id, request.remove_quantity, request.sandbox_id) == (
        "9NCOINS",
        2,
        "XDKS.1",
    )
    # No trackingId: derived from the key, the same on every run; order ids asked by default.
    assert request.tracking_id == guid_for_caller_key("order-1")
    assert request.include_order_ids is True
    keyless = parse_line(
        b'{"beneficiary": {"identityValue": "k", "localTicketReference": "r"}, '
        b'"productId": "p", "quantity": 1, "includeOrderIds": false, "trackingId": "'
        + TRACKING.encode()
        + b'"}',
        5,
    )
    assert isinstance(keyless, Fulfillment)
    assert (keyless.key, keyless.caller_tracking_id) == (TRACKING, True)
    assert keyless.request.include_order_ids is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"quantity": 0}, "'quantity' must be an integer from 1 to 2147483647"),
        ({"quantity": "2"}, "'quantity' must be an integer from 1 to 2147483647"),
        ({"itemId": "i"}, "a v8 line (productId + quantity) takes no 'itemId'"),
        ({"transactionId": TRACKING}, "a v8 line (productId + quantity) takes no 'transactionId'"),
        ({"includeOrderIds": 1}, "'includeOrderIds' must be true or false, not a number"),
        ({"sandboxId": ""}, "'sandboxId' must not be empty"),
        ({"productId": None}, "missing field 'productId'"),
        ({"key": None}, "missing field 'key' (required unless 'trackingId' is given)"),
    ],
)
def test_bad_v8_lines_name_the_field(changes: dict[str, object], message: str) -> None:
    line = {
        "key": "order-1",
        "beneficiary": {"identityValue": "SECRET", "localTicketReference": "r"},
        "productId": "9NCOINS",
        "quantity": 2,
    }
    line.update(changes)
    document = {name: value for name, value in line.items() if value is not None}
    parsed = parse_line(orjson.dumps(document), 9)
    assert isinstance(parsed, LineError)
    assert parsed.message == message
    assert "SECRET" not in parsed.message


def test_v6_lines_refuse_v8_fields() -> None:
    parsed = parse_line(
        b'{"key": "k", "beneficiary": {"identityValue": "v", "localTicketReference": "r"},'
        b' "itemId": "i", "sandboxId": "XDKS.1"}',
        1,
    )
    assert isinstance(parsed, LineError)
    assert parsed.message == "'sandboxId' belongs to a v8 line (productId + quantity)"


async def test_export_writes_quantity_and_order_ids_and_reads_back(journals: Journals) -> None:
    async with journals.open() as journal:
        await journal.begin_run()
        await journal.claim(v8("done", include_order_ids=True))
        await journal.mark_done("done", result(ORDERS, 4))
        pending = Fulfillment(
            key="pending",
            request=ConsumeRequest.for_quantity(USER, "9NCOINS", 2, key="pending"),
        )
        await journal.claim(pending)
    rows = await journals.rows()
    done_line = to_input_line(rows["done"])
    assert done_line == {
        "key": "done",
        "beneficiary": {"identityValue": "eyJ-SECRET-key", "localTicketReference": "user-1"},
        "productId": "9NCOINS",
        "quantity": 3,
        "trackingId": TRACKING,
        "newQuantity": 4,
        "orderTransactions": [
            {"orderId": "o-1", "orderLineItemId": "l-1", "quantityConsumed": 2},
            {"orderId": "o-2", "orderLineItemId": "l-2", "quantityConsumed": 1},
        ],
    }
    pending_line = to_input_line(rows["pending"])
    assert pending_line["includeOrderIds"] is False
    assert "orderTransactions" not in pending_line
    # Each exported line is fulfill input again, with the same four values.
    for key, line in (("done", done_line), ("pending", pending_line)):
        again = parse_line(orjson.dumps(line), 1)
        assert isinstance(again, Fulfillment)
        assert again.request == rows[key].request
