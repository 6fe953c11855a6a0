"""``examples/refunds_reconciler.py`` runs as documented: claw back on Revoked, undo on
ChargebackReversal, nothing on Returned/Refunded, each event applied once across reruns."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from store_async.emulator.refunds import refund_event
from tests.azurite import Azurite, azurite  # noqa: F401 - the fixture
from tests.test_cli_fulfill import TOKEN, EmulatorThread
from tests.test_cli_refunds import control

EXAMPLE = Path(__file__).parent.parent / "examples" / "refunds_reconciler.py"


def test_the_reconciler_example_claws_back_and_undoes_exactly_once(
    azurite: Azurite,  # noqa: F811
    tmp_path: Path,
) -> None:
    app, journal = tmp_path / "app.db", tmp_path / "refunds.db"
    lines = {  # order line -> (user, coins granted)
        ("o-1", "l-1", "p-coins"): ("alice", 500),
        ("o-2", "l-1", "p-coins"): ("bob", 300),
        ("o-3", "l-1", "p-coins"): ("carol", 200),
        ("o-4", "l-1", "p-coins"): ("dave", 100),
    }
    with sqlite3.connect(app) as db:
        db.executescript(
            "CREATE TABLE grants (order_id TEXT, line_item_id TEXT, product_id TEXT, "
            "user_id TEXT, coins INTEGER, PRIMARY KEY (order_id, line_item_id, product_id));"
            "CREATE TABLE balances (user_id TEXT PRIMARY KEY, coins INTEGER NOT NULL);"
        )
        for (order, line, product), (user, coins) in lines.items():
            db.execute(
                "INSERT INTO grants VALUES (?, ?, ?, ?, ?)", (order, line, product, user, coins)
            )
            db.execute("INSERT INTO balances VALUES (?, 1000)", (user,))

    def event(event_id: str, order: str, state: str) -> dict[str, object]:
        return refund_event(
            event_id=event_id, order_id=order, line_item_id="l-1", product_id="p-coins", state=state
        )

    command = [
        *(sys.executable, str(EXAMPLE), "--token", TOKEN),
        *("--journal", str(journal), "--app", str(app)),
    ]
    queue = azurite.new_queue()
    with EmulatorThread(refund_queue=azurite.sas_uri(queue)) as emulator:
        command += ["--endpoint", emulator.emulator.url]
        first = [
            event("e-1", "o-1", "Revoked"),
            event("e-2", "o-2", "Revoked"),
            event("e-3", "o-3", "Returned"),
            event("e-4", "o-4", "Refund"),
        ]
        control(emulator, {"events": first, "duplicates": 4, "seed": 1})
        run1 = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert run1.returncode == 0, run1.stderr
        assert run1.stdout.split() == ["claw", "back=2", "none=2"]
        # Later: a chargeback on alice's order is reversed; an unknown state arrives.
        control(
            emulator,
            {"events": [event("e-5", "o-1", "ChargebackReversal"), event("e-6", "o-2", "Odd")]},
        )
        run2 = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert run2.returncode == 0, run2.stderr
        assert run2.stdout.split() == ["undo", "claw", "back=1", "unknown=1"]
        run3 = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert (run3.returncode, run3.stdout.strip()) == (0, "")
        assert azurite.count(queue) == 0
    with sqlite3.connect(app) as db:
        balances = dict(db.execute("SELECT user_id, coins FROM balances").fetchall())
        reconciled = db.execute("SELECT event_id, action, coins FROM reconciled ORDER BY 1")
        assert reconciled.fetchall() == [
            ("e-1", "claw back", 500),
            ("e-2", "claw back", 300),
            ("e-3", "none", 0),
            ("e-4", "none", 0),
            ("e-5", "undo claw back", 500),
            ("e-6", "unknown", 0),
        ]
    assert balances == {"alice": 1000, "bob": 700, "carol": 1000, "dave": 1000}
    exported = subprocess.run(
        [sys.executable, "-c", "import sys; from store_async.cli import main; sys.exit(main())",
         "refunds", "export", "--journal", str(journal), "--unhandled"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (exported.returncode, exported.stdout) == (0, "")  # every event handled
