"""What a fulfillment run did: live counters while it runs, a report when it ends.

Counts are per input item (line): a line whose key appears twice counts twice (once as a
duplicate). Lists of failures and rejected lines are capped so that memory stays flat; the
counts are always exact, and the journal keeps every failed row.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from store_async.fulfillment.journal import FailureInfo
from store_async.fulfillment.source import LineError

__all__ = ["ExitCode", "FailedRow", "FulfillmentReport", "FulfillmentStats"]


class ExitCode(enum.IntEnum):
    """Process exit codes of ``store-async fulfill`` (see :attr:`FulfillmentReport.exit_code`)."""

    ALL_DONE = 0
    """Every line was done (in this run or an earlier one)."""
    USAGE = 1
    """A usage or configuration error: nothing was sent."""
    FAILED = 2
    """The Store refused some fulfillments for good."""
    PENDING = 3
    """Some fulfillments are not settled: run the same command again."""
    REJECTED = 4
    """Every well-formed line was done, but some lines were malformed and skipped: fix them and
    run again (done lines are skipped)."""


def plural(count: int, noun: str) -> str:
    """``"1 attempt"``, ``"2 attempts"``: a count with its noun (English ``-s`` plurals only)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@attrs.frozen(kw_only=True)
class FailedRow:
    """A fulfillment the Store refused for good. ``previously`` if it failed in an earlier run."""

    key: str
    line: int | None
    idempotency_key: str
    failure: FailureInfo
    previously: bool = False

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        when = " (in an earlier run)" if self.previously else ""
        return f"{where}key {self.key!r} failed{when}: {self.failure}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "line": self.line,
            "idempotencyKey": self.idempotency_key,
            "previously": self.previously,
            "error": self.failure.error_type,
            "status": self.failure.status,
            "code": self.failure.code,
            "innerCode": self.failure.inner_code,
            "message": self.failure.message,
            "cv": self.failure.cv,
        }


@attrs.define(kw_only=True)
class FulfillmentStats:
    """Live counters of a run (read them for a progress display; the fulfiller writes them)."""

    done: int = 0
    """Confirmed by the Store in this run."""
    already_done: int = 0
    """Done in an earlier run: skipped."""
    failed: int = 0
    """Refused for good in this run."""
    already_failed: int = 0
    """Failed in an earlier run: skipped (``retry_failed`` re-drives them)."""
    pending: int = 0
    """Outcome unknown, or claimed but not sent when the run stopped: run again to settle."""
    duplicates: int = 0
    """The same key and request again later in the input: skipped."""
    rejected: int = 0
    """Malformed lines and conflicting duplicates: not journaled, not sent."""
    in_flight: int = 0
    """Being sent right now."""
    throttled: int = 0
    """429 answers the fulfiller saw (each parked its user; the row was sent again later)."""
    parked_users: int = 0
    """Users parked right now (over their rate, or after a 429)."""
    parked_rows: int = 0
    """Rows parked right now, waiting for their user's rate."""
    keys_renewed: int = 0
    """Store ID keys renewed (set when the run ends)."""
    keys_refused: int = 0
    """Store ID keys whose rows failed: expired, or renewal refused (set when the run ends)."""

    @property
    def settled(self) -> int:
        """Items with a final answer for this run (everything but the in-flight ones)."""
        return (
            self.done + self.already_done + self.failed + self.already_failed + self.pending
            + self.duplicates + self.rejected
        )  # fmt: skip


@attrs.frozen(kw_only=True)
class FulfillmentReport:
    """The result of :meth:`Fulfiller.run <store_async.fulfillment.Fulfiller.run>`."""

    done: int
    already_done: int
    failed: int
    already_failed: int
    pending: int
    duplicates: int
    rejected: int
    complete: bool
    """The whole input was read and every item got an answer (the run was not stopped)."""
    stop_reason: str | None
    """Why the run stopped early (a signal, repeated authentication failures), if it did."""
    elapsed: float
    """Seconds the run took."""
    failures: tuple[FailedRow, ...] = ()
    """Failed rows (this run's and earlier runs'), at most the fulfiller's ``max_listed``, in
    input line order."""
    rejections: tuple[LineError, ...] = ()
    """Rejected lines, at most the fulfiller's ``max_listed``, in input line order."""
    throttled: int = 0
    """429 answers the fulfiller saw (the rows were sent again after their user's park)."""
    users_parked: int = 0
    """Times a user was parked by per-user pacing (over its rate, or after a 429)."""
    keys_renewed: int = 0
    """Store ID keys renewed (once each, however many rows carried them)."""
    keys_refused: int = 0
    """Store ID keys whose rows failed without a request: expired, or renewal refused."""

    @property
    def total(self) -> int:
        """Input items accounted for."""
        return (
            self.done + self.already_done + self.failed + self.already_failed + self.pending
            + self.duplicates + self.rejected
        )  # fmt: skip

    @property
    def exit_code(self) -> ExitCode:
        """``PENDING`` (3) if anything is left to do (run again), else ``FAILED`` (2) if the Store
        refused any line, else ``REJECTED`` (4) if malformed lines were skipped, else
        ``ALL_DONE`` (0).

        Pending wins over failed: running again is needed to settle pending rows; the rerun then
        reports the failures with code 2. A rejected line never reached the Store, so it is not
        "some failed": a script can tell "fix the input" (4) from "the Store said no" (2).
        """
        if self.pending or not self.complete:
            return ExitCode.PENDING
        if self.failed or self.already_failed:
            return ExitCode.FAILED
        if self.rejected:
            return ExitCode.REJECTED
        return ExitCode.ALL_DONE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no secrets: Store ID keys are never part of a report)."""
        return {
            "exitCode": int(self.exit_code),
            "complete": self.complete,
            "stopReason": self.stop_reason,
            "elapsedSeconds": round(self.elapsed, 3),
            "counts": {
                "total": self.total,
                "done": self.done,
                "alreadyDone": self.already_done,
                "failed": self.failed,
                "alreadyFailed": self.already_failed,
                "pending": self.pending,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
            },
            "failures": [row.to_dict() for row in self.failures],
            "failuresListed": len(self.failures),
            "rejections": [
                {"line": error.line, "key": error.key, "message": error.message}
                for error in self.rejections
            ],
            "rejectionsListed": len(self.rejections),
            "pacing": {"throttled": self.throttled, "usersParked": self.users_parked},
            "storeIdKeys": {"renewed": self.keys_renewed, "refused": self.keys_refused},
        }

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{plural(self.total, 'fulfillment')}: {self.done} done, {self.already_done} already "
            f"done, {self.failed + self.already_failed} failed ({self.already_failed} in earlier "
            f"runs), {self.pending} pending, {plural(self.duplicates, 'duplicate line')}, "
            f"{plural(self.rejected, 'rejected line')}, in {self.elapsed:.1f} s"
        ]
        if self.users_parked or self.throttled:
            lines.append(
                f"pacing: users parked {self.users_parked} times, {self.throttled} answers 429"
            )
        if self.keys_renewed or self.keys_refused:
            lines.append(
                f"Store ID keys: {self.keys_renewed} renewed, {self.keys_refused} expired or "
                "refused (their rows failed: the client app must issue new keys)"
            )
        if self.stop_reason:
            lines.append(f"stopped early: {self.stop_reason}")
        if self.pending or not self.complete:
            lines.append("some fulfillments are not settled: run the same command again")
        elif self.rejected and not (self.failed or self.already_failed):
            lines.append("malformed lines were skipped: fix them and run the same command again")
        return "\n".join(lines)
