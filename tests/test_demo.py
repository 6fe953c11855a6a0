"""``store-async demo``: the exactly-once audit, end to end and on a doctored ledger."""

from __future__ import annotations

import re

import pytest

from store_async.cli import main
from store_async.cli.demo import audit
from store_async.emulator import Ledger
from store_async.models import ConsumeRequest, UserIdentity


@pytest.mark.slow
def test_demo_consumes_2000_under_faults_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--count", "2000", "--fault-rate", "0.1", "--seed", "5", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        "store-async demo: 2000 consumables for 200 users, fault rate 10%, seed 5, concurrency 64"
    )
    assert "consumed exactly once: 2000 / 2000" in lines
    assert "duplicates:            0" in lines
    assert "lost:                  0" in lines
    assert "still pending:         0" in lines
    assert lines[-1] == "exactly-once: OK"
    faults = next(line for line in lines if line.startswith("faults injected:"))
    for kind in ("drop_after_commit", "http_429", "http_500", "http_503", "reset_before_commit"):
        assert re.search(rf"{kind} [1-9]\d*", faults), faults
    attempts = next(line for line in lines if line.startswith("attempts:"))
    total, retries = map(int, re.findall(r"(\d+) \((\d+) retries", attempts)[0])
    assert total == 2000 + retries
    assert retries > 0
    assert re.search(r"^throughput: +[\d,]+ consumes/s \(\d+\.\d s\)$", out, re.MULTILINE)
    assert re.search(r"^latency: +p50 \d+\.\d ms, p99 \d+\.\d ms$", out, re.MULTILINE)


def test_demo_without_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--count", "40", "--fault-rate", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "consumed exactly once: 40 / 40" in out
    assert "faults injected:       none" in out
    assert "failed attempts:       none" in out
    assert "attempts:              40 (0 retries, 0 resent from the journal" in out
    assert "still pending:         0" in out


def requests(count: int) -> list[ConsumeRequest]:
    user = UserIdentity(identity_value="u", local_ticket_reference="r")
    return [ConsumeRequest.for_item(user, f"item-{n}") for n in range(count)]


def test_the_audit_catches_duplicates_and_losses() -> None:
    batch = requests(4)
    keys = [request.idempotency_key for request in batch]
    ledger = Ledger()
    ledger.record("consume", keys[0], user_id="u", subject="item-0")
    ledger.record("consume", keys[1], user_id="u", subject="item-1")
    ledger.record("consume", keys[1], user_id="u", subject="item-1")  # applied twice
    ledger.record("consume", keys[3], user_id="u", subject="item-3")
    consumed_by = {keys[0]: keys[0], keys[1]: keys[1], keys[3]: keys[3]}  # item-2 untouched
    verdict = audit(batch, {keys[3]}, ledger, consumed_by)  # keys[3]'s call failed
    assert (verdict.exactly_once, verdict.duplicates, verdict.lost) == (1, 1, 2)
    assert verdict.failed_requests == [keys[2], keys[3]]
    assert not verdict.ok


def test_the_audit_passes_when_every_key_applied_once() -> None:
    batch = requests(3)
    ledger = Ledger()
    for request in batch:
        ledger.record("consume", request.idempotency_key, user_id="u", subject="i")
    keys = {request.idempotency_key: request.idempotency_key for request in batch}
    verdict = audit(batch, set(), ledger, keys)
    assert (verdict.exactly_once, verdict.duplicates, verdict.lost, verdict.ok) == (3, 0, 0, True)
    verdict.pending = 1  # a journal row never settled fails the audit even if the ledger is clean
    assert not verdict.ok


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--count", "0"], "must be >= 1"),
        (["--fault-rate", "1.5"], "must be within 0..1"),
        (["--concurrency", "x"], "not a whole number"),
    ],
)
def test_bad_options_are_usage_errors(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *option])
    assert exited.value.code == 1  # usage error: 2 would mean "some failed"
    assert message in capsys.readouterr().err
