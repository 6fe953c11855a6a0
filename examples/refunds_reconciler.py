"""A refund reconciler: claw back consumed coins on Revoked, give them back on ChargebackReversal.

    python examples/refunds_reconciler.py --endpoint URL --token TOKEN \\
        --journal refunds.db --app app.db

The application's own database (``--app``) knows what each order line granted: a table
``grants(order_id, line_item_id, product_id, user_id, coins)`` written when the purchase was
fulfilled (refund events carry no user id, so the order line is the only link). This script
adds ``balances`` changes and a ``reconciled`` table keyed by the refund event id, both in **one
transaction per event**; then it marks the event handled in the refund journal. A crash between
the two hands the event out again, and the ``reconciled`` row makes the second pass a no-op:
each event changes a balance exactly once.

What each state means (STORE_API.md section 10):

- ``Revoked``: refunded, and the user kept what they consumed: claw the coins back;
- ``ChargebackReversal``: a chargeback was reversed: give back what was clawed back for that
  order line;
- ``Returned`` / ``Refunded``: nothing to take (the Store removed the entitlement, or the user
  keeps the item): recorded, nothing changed;
- any other state: recorded as ``unknown`` for a person to look at.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys

from store_async import StaticTokenCredential, StoreClient
from store_async.endpoints import Endpoints
from store_async.refunds import FeedEvent, RefundEventState, RefundFeed, open_refund_journal

APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    order_id TEXT NOT NULL, line_item_id TEXT NOT NULL, product_id TEXT NOT NULL,
    user_id TEXT NOT NULL, coins INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_item_id, product_id)
);
CREATE TABLE IF NOT EXISTS balances (user_id TEXT PRIMARY KEY, coins INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reconciled (
    event_id TEXT PRIMARY KEY, bundle_key TEXT NOT NULL, action TEXT NOT NULL,
    coins INTEGER NOT NULL
);
"""


def apply(app: sqlite3.Connection, refund: FeedEvent) -> str:
    """Apply one refund event to the application's database, once per event id."""
    data = refund.event.data
    with app:  # one transaction: the balance change and the record of having made it
        if app.execute(
            "SELECT 1 FROM reconciled WHERE event_id = ?", (refund.event_id,)
        ).fetchone():
            return "already reconciled"
        grant = app.execute(
            "SELECT user_id, coins FROM grants WHERE order_id = ? AND line_item_id = ? "
            "AND product_id = ?",
            (data.order_id, data.line_item_id, data.product_id),
        ).fetchone()
        action, change = "none", 0
        if refund.state is RefundEventState.REVOKED and grant is not None:
            action, change = "claw back", -grant[1]
        elif refund.state is RefundEventState.CHARGEBACK_REVERSAL and grant is not None:
            (clawed,) = app.execute(
                "SELECT coalesce(sum(coins), 0) FROM reconciled "
                "WHERE bundle_key = ? AND action = 'claw back'",
                (refund.bundle_key,),
            ).fetchone()
            (returned,) = app.execute(
                "SELECT coalesce(sum(coins), 0) FROM reconciled "
                "WHERE bundle_key = ? AND action = 'undo claw back'",
                (refund.bundle_key,),
            ).fetchone()
            action, change = "undo claw back", clawed - returned  # what is still clawed back
        elif not isinstance(refund.state, RefundEventState):
            action = "unknown"  # a state the Store added later: for a person to look at
        elif grant is None and refund.state is RefundEventState.REVOKED:
            action = "unknown"  # an order line we never granted: look at it
        if change and grant is not None:
            app.execute(
                "UPDATE balances SET coins = coins + ? WHERE user_id = ?", (change, grant[0])
            )
        app.execute(
            "INSERT INTO reconciled (event_id, bundle_key, action, coins) VALUES (?, ?, ?, ?)",
            (refund.event_id, refund.bundle_key, action, abs(change)),
        )
    return action


async def reconcile(store: StoreClient | None, journal_path: str, app_path: str) -> dict[str, int]:
    """Sync the queue into the journal and reconcile every unhandled event; returns counts."""
    app = sqlite3.connect(app_path)
    app.executescript(APP_SCHEMA)
    actions: dict[str, int] = {}
    try:
        async with await open_refund_journal(journal_path) as journal:
            async for refund in RefundFeed(store, journal):
                action = apply(app, refund)
                actions[action] = actions.get(action, 0) + 1
                await refund.mark_handled()
    finally:
        app.close()
    return actions


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="the Store's base URL (an emulator)")
    parser.add_argument("--token", required=True, help="bearer access token")
    parser.add_argument(
        "--journal", required=True, help="refund journal: a SQLite file or a postgresql:// DSN"
    )
    parser.add_argument("--app", required=True, help="the application's SQLite database")
    args = parser.parse_args(argv)
    credential = StaticTokenCredential(args.token)
    async with StoreClient(credential, endpoints=Endpoints.single(args.endpoint)) as store:
        actions = await reconcile(store, args.journal, args.app)
    print(" ".join(f"{action}={count}" for action, count in sorted(actions.items())))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
