"""Per-user pacing: one hot user among many, against the emulator's per-user limit.

The scenario of issue 17: an input of 100 lines of one user followed by 200 lines of 200 other
users; the emulator (``store-async emulator --user-limit 20/2``, in its own process, a fresh one
per run) limits each user to 20 consumes in any 2 s, like the Store's 200 per 300 s scaled down.
Interleaved in rounds, on the same input shape:

- ``paced``: ``Fulfiller(user_rate=UserRate(20, 2))`` (``store-async fulfill --user-rate 20/2``);
- ``unpaced``: the same without pacing (the client honours each ``Retry-After`` and resends).

Both use ``StoreClient``'s default retry policy and a SQLite journal (``synchronous=normal``)
in a temporary directory. Printed per mode, median and range over the rounds:

- 429 answers (counted by a client hook on every attempt);
- when the last line of the *other* users was applied (seconds from the start);
- when the hot user's backlog was drained (its last line applied), next to the time its limit
  allows: ``(100 / 20 - 1) × 2 s = 8 s``;
- lines not done (pending or failed).

Bounded: 300 lines per run, each run stops by itself; ``--rounds`` (default 3).

    .venv/bin/python benchmarks/bench_pacing.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from store_async import (
    AttemptFinished,
    ClientHooks,
    ConsumeRequest,
    Endpoints,
    StaticTokenCredential,
    StoreClient,
    UserIdentity,
)
from store_async.fulfillment import Fulfiller, Fulfillment, SqliteJournal
from store_async.models import ConsumeResult
from store_async.pacing import UserRate

HOT_LINES, OTHER_USERS, OPS, SECONDS = 100, 200, 20, 2.0
CLI = "import sys; from store_async.cli import main; sys.exit(main())"
LIMIT = f"{OPS}/{SECONDS:g}"
ALLOWED_DRAIN = (HOT_LINES / OPS - 1) * SECONDS  # the first window goes at once


class Timed:
    """The client, noting when each user's line was applied."""

    def __init__(self, store: StoreClient, started: float) -> None:
        self.store = store
        self.started = started
        self.hot_done: list[float] = []
        self.other_done: list[float] = []

    async def consume(self, request: ConsumeRequest) -> ConsumeResult:
        result = await self.store.consume(request)
        moment = time.perf_counter() - self.started
        if request.beneficiary.identity_value == "hot":
            self.hot_done.append(moment)
        else:
            self.other_done.append(moment)
        return result


def rows() -> list[Fulfillment]:
    users = ["hot"] * HOT_LINES + [f"user-{n}" for n in range(OTHER_USERS)]
    return [
        Fulfillment.of(
            ConsumeRequest.for_item(
                UserIdentity(identity_value=user, local_ticket_reference="r"), str(uuid.uuid4())
            ),
            f"line-{number}",
        )
        for number, user in enumerate(users)
    ]


def start_emulator() -> tuple[subprocess.Popen[str], str, str]:
    emulator = subprocess.Popen(
        [sys.executable, "-c", CLI, "emulator", "--port", "0", "--user-limit", LIMIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert emulator.stdout is not None
    return emulator, emulator.stdout.readline().strip(), emulator.stdout.readline().strip()


def one_run(paced: bool, folder: Path) -> dict[str, float]:
    emulator, url, token = start_emulator()
    try:
        return asyncio.run(fulfill(paced, folder, url, token))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


async def fulfill(paced: bool, folder: Path, url: str, token: str) -> dict[str, float]:
    throttled = 0

    def count(event: AttemptFinished) -> None:
        nonlocal throttled
        throttled += event.status == 429

    work = rows()
    journal_path = folder / f"journal-{uuid.uuid4().hex}"
    async with (
        StoreClient(
            StaticTokenCredential(token),
            endpoints=Endpoints.single(url),
            hooks=ClientHooks(on_attempt_end=count),
        ) as store,
        SqliteJournal(journal_path, synchronous="normal") as journal,
    ):
        started = time.perf_counter()
        client = Timed(store, started)
        rate = UserRate(OPS, SECONDS) if paced else None
        report = await Fulfiller(client, journal, concurrency=64, user_rate=rate).run(work)
    return {
        "429s": throttled,
        "others applied by (s)": max(client.other_done, default=float("nan")),
        "hot backlog drained (s)": max(client.hot_done, default=float("nan")),
        "not done": report.pending + report.failed,
    }


def show(name: str, runs: list[dict[str, float]]) -> None:
    print(f"{name}:")
    for metric in runs[0]:
        values = [run[metric] for run in runs]
        print(
            f"  {metric:26} median {statistics.median(values):7.2f}  "
            f"range {min(values):7.2f} .. {max(values):7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"paced": [], "unpaced": []}
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as folder:
        for _ in range(args.rounds):
            for mode in ("paced", "unpaced"):  # paired rounds
                results[mode].append(one_run(mode == "paced", Path(folder)))
    print(
        f"{HOT_LINES} lines of one user, then {OTHER_USERS} lines of {OTHER_USERS} users; "
        f"limit {OPS} per {SECONDS:g} s per user; the hot user's limit allows its backlog "
        f"to drain in {ALLOWED_DRAIN:.1f} s; {args.rounds} rounds"
    )
    for mode, runs in results.items():
        show(mode, runs)
    paced = statistics.median(run["hot backlog drained (s)"] for run in results["paced"])
    print(f"paced drain / allowed: {paced / ALLOWED_DRAIN:.2f}x (target <= 1.6x)")


if __name__ == "__main__":
    main()
