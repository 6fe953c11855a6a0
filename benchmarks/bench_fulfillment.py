"""Fulfillment through the SQLite journal vs the same calls without it; memory for 1M lines.

1. Throughput. A minimal aiohttp.web server answering ``POST /v6.0/collections/consume`` with
   204 runs in its own process (a server that costs next to nothing makes the client side the
   bottleneck, the hardest case for the journal). In this process, on the same generated JSON
   Lines input (``--lines``, default 100,000; Store ID keys of 1,100 characters like real
   ones), interleaved in rounds:

   - ``plain``: ``read_jsonl`` + 64 workers calling ``StoreClient.consume`` (no journal);
   - ``journaled``: ``Fulfiller`` + ``SqliteJournal`` (``synchronous=FULL``, a fresh file)
     over the same input and client, concurrency 64.

   Prints fulfillments/s and the ratio journaled / plain (target >= 0.8).

2. Memory. A child process runs ``Fulfiller`` + ``SqliteJournal`` over a generated
   ``--rss-lines`` input (default 1,000,000) with an instant in-process client (no network: this
   measures the pipeline, whose memory must not grow with the input), and reports its peak RSS
   (target < 150 MB), next to the same for a tenth of the lines.

Everything is written to a temporary directory removed at the end. Bounded by the line counts.

    .venv/bin/python benchmarks/bench_fulfillment.py [--lines 100000] [--rounds 2]
        [--rss-lines 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _consume_server import serve

from store_async import StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.fulfillment import Fulfiller, Fulfillment, SqliteJournal, read_jsonl
from store_async.models import ConsumeRequest, ConsumeResult

CONCURRENCY = 64
USERS = 50


def write_input(path: Path, lines: int, key_length: int, prefix: str) -> None:
    """``lines`` item lines for ``USERS`` users, with Store-ID-key-sized identity values."""
    users = [
        {"identityValue": f"u{n:03}-" + "k" * (key_length - 5), "localTicketReference": f"r{n}"}
        for n in range(USERS)
    ]
    with open(path, "wb") as file:
        for n in range(lines):
            line = {
                "key": f"{prefix}-{n}",
                "beneficiary": users[n % USERS],
                "itemId": f"{prefix}-{n}",
            }
            file.write(orjson.dumps(line) + b"\n")


async def plain(client: StoreClient, path: Path) -> int:
    """The same calls, same input reading, same concurrency; no journal."""
    source = read_jsonl(path)
    lock = asyncio.Lock()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while True:
            async with lock:  # one reader of the async generator at a time
                item = await anext(source, None)
            if item is None:
                return
            assert isinstance(item, Fulfillment)
            await client.consume(item.request)
            sent += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return sent


async def journaled(client: StoreClient, path: Path, journal_path: Path) -> int:
    async with SqliteJournal(journal_path) as journal:
        report = await Fulfiller(client, journal, concurrency=CONCURRENCY).run(read_jsonl(path))
    assert report.done == report.total, report.summary()
    return report.done


async def throughput(directory: Path, lines: int, rounds: int, url: str) -> None:
    rates: dict[str, list[float]] = {"plain": [], "journaled": []}
    async with StoreClient(
        StaticTokenCredential("t" * 1200), endpoints=Endpoints.single(url)
    ) as client:
        for round_number in range(rounds):
            for name in ("plain", "journaled"):
                source = directory / f"{name}-{round_number}.jsonl"
                write_input(source, lines, 1100, f"{name}{round_number}")
                started = time.perf_counter()
                if name == "plain":
                    count = await plain(client, source)
                else:
                    count = await journaled(client, source, directory / f"journal-{round_number}")
                rate = count / (time.perf_counter() - started)
                rates[name].append(rate)
                print(
                    f"  round {round_number + 1} {name:<10} {rate:>9,.0f} fulfillments/s",
                    flush=True,
                )
                source.unlink()
    print(f"{lines:,} fulfillments per run, concurrency {CONCURRENCY}, {rounds} rounds:")
    for name, values in rates.items():
        print(
            f"  {name:<10} best {max(values):>9,.0f}/s  median {statistics.median(values):>9,.0f}/s"
        )
    best = max(rates["journaled"]) / max(rates["plain"])
    median = statistics.median(rates["journaled"]) / statistics.median(rates["plain"])
    verdict = "OK" if best >= 0.8 else "BELOW TARGET"
    print(f"  journaled / plain: best {best:.2f}, median {median:.2f} (target >= 0.80: {verdict})")


class InstantClient:
    """Answers every consume at once (the RSS run measures the pipeline, not a network)."""

    async def consume(self, request: ConsumeRequest) -> ConsumeResult:
        return ConsumeResult(tracking_id=request.tracking_id, transaction_id=None, attempts=1)


def rss_child(input_path: str, journal_path: str) -> None:
    """In a child process: run the whole input, print the report and peak RSS."""

    async def main() -> None:
        async with SqliteJournal(journal_path) as journal:
            fulfiller = Fulfiller(InstantClient(), journal, concurrency=CONCURRENCY)
            report = await fulfiller.run(read_jsonl(input_path))
        assert report.done == report.total, report.summary()
        print(report.done, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    asyncio.run(main())


def memory(directory: Path, lines: int) -> None:
    print("peak RSS of a fulfill process (Fulfiller + SqliteJournal, instant client):")
    for count in (lines // 10, lines):
        source, journal = directory / f"rss-{count}.jsonl", directory / f"rss-{count}.journal"
        write_input(source, count, 100, f"rss{count}")
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(source), str(journal)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        done, peak_kib = (int(value) for value in child.stdout.split())
        elapsed = time.perf_counter() - started
        size = source.stat().st_size / 2**20
        print(
            f"  {done:>9,} lines ({size:,.0f} MiB input): peak RSS {peak_kib / 1024:,.1f} MiB "
            f"in {elapsed:,.1f}s ({done / elapsed:,.0f}/s)  (target < 150 MiB)",
            flush=True,
        )
        for path in directory.glob(f"rss-{count}*"):
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss-lines", type=int, default=1_000_000)
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-fulfillment-") as name:
        directory = Path(name)
        if args.lines:
            port_queue: Any = multiprocessing.Queue()
            server = multiprocessing.Process(target=serve, args=(port_queue,), daemon=True)
            server.start()
            try:
                port = port_queue.get(timeout=30)
                asyncio.run(
                    throughput(directory, args.lines, args.rounds, f"http://127.0.0.1:{port}")
                )
            finally:
                server.terminate()
                server.join()
        if args.rss_lines:
            memory(directory, args.rss_lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
