"""Journaled fulfillment vs the same Fulfiller with an in-memory journal vs a bare consume loop.

1. Throughput. A minimal server answering ``POST /v6.0/collections/consume`` with 204 runs in
   its own process (a server that costs next to nothing makes the client side the bottleneck,
   the hardest case for the journal): by default ``_consume_server.serve_raw``, an
   ``asyncio.Protocol`` (~55 µs of CPU per call), or with ``--server aiohttp`` the aiohttp.web
   server the other benchmarks use (~100 µs: on 2 cores it competes with the journal's writer
   process for the core the client's loop leaves, which a remote Store never does). In this
   process, on generated JSON Lines
   inputs of the same shape (``--lines``, default 30,000; Store ID keys of 1,100 characters like
   real ones), in rounds whose order rotates (a noisy moment of the shared machine should not
   always hit one contender):

   - ``bare``: ``read_jsonl`` feeding a bounded queue + N workers calling
     ``StoreClient.consume`` (no journal at all; the input is read by one task, as the
     Fulfiller reads it, not by the workers in turn under a lock, which made the old baseline
     slower than the Fulfiller itself);
   - ``memory``: ``Fulfiller`` + :class:`MemoryJournal` (a minimal in-memory journal: what the
     pipeline costs without any storage);
   - ``sqlite``: ``Fulfiller`` + ``SqliteJournal`` (``synchronous=FULL``, a fresh file), its
     writer a thread of this process;
   - ``process``: the same, its writer a process of its own (``writer="process"``).

   All at the same concurrency (``--concurrency``, default 64) over one client. Prints per
   contender the median and min-max of fulfillments/s and of CPU time per line (this process,
   all threads, plus the writer process for ``process``: less sensitive to a busy machine than
   wall time), and for each journal the per-round ratios to memory (target >= 0.90) and to
   bare (target >= 0.85): median and min-max.

2. Memory. A child process runs ``Fulfiller`` + ``SqliteJournal`` over a generated
   ``--rss-lines`` input (default 1,000,000) with an instant in-process client (no network: this
   measures the pipeline, whose memory must not grow with the input), and reports its peak RSS
   (target < 100 MiB), next to the same for a tenth of the lines.

Everything is written to a temporary directory removed at the end. Bounded by the line counts.

    .venv/bin/python benchmarks/bench_fulfillment.py [--lines 30000] [--rounds 3]
        [--concurrency 64] [--rss-lines 1000000] [--uvloop] [--gc-threshold N]
        [--server raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
from _consume_server import serve, serve_raw

from store_async import Endpoints, StaticTokenCredential, StoreClient
from store_async.errors import StoreError
from store_async.fulfillment import (
    Claim,
    ClaimOutcome,
    Fulfiller,
    Fulfillment,
    Journal,
    SqliteJournal,
    read_jsonl,
)
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


class MemoryJournal:
    """A minimal in-memory :class:`~store_async.fulfillment.Journal` (no durability at all):
    the Fulfiller's own cost, the baseline the SQLite journal is measured against."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    async def begin_run(self, *, retry_failed: bool = False) -> int:
        return 1

    def claim(self, fulfillment: Fulfillment) -> Awaitable[Claim]:
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        if fulfillment.key in self.states:
            future.set_result(Claim(outcome=ClaimOutcome.DUPLICATE))
        else:
            self.states[fulfillment.key] = "pending"
            future.set_result(Claim(outcome=ClaimOutcome.SEND, request=fulfillment.request))
        return future

    async def mark_done(self, key: str, result: ConsumeResult) -> None:
        self.states[key] = "done"

    async def mark_failed(self, key: str, error: StoreError) -> None:
        self.states[key] = "failed"

    async def mark_unknown(self, key: str, error: StoreError) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def bare(client: StoreClient, path: Path, concurrency: int) -> int:
    """The same calls, same input reading, same concurrency; no Fulfiller, no journal: one
    task reads the input into a bounded queue, N workers take from it and consume."""
    queue: asyncio.Queue[Fulfillment | None] = asyncio.Queue(2 * concurrency)
    sent = 0

    async def feed() -> None:
        async for item in read_jsonl(path):
            assert isinstance(item, Fulfillment)
            await queue.put(item)
        for _ in range(concurrency):
            await queue.put(None)

    async def worker() -> None:
        nonlocal sent
        while (item := await queue.get()) is not None:
            await client.consume(item.request)
            sent += 1

    await asyncio.gather(feed(), *(worker() for _ in range(concurrency)))
    return sent


async def fulfill(client: StoreClient, path: Path, journal: Journal, concurrency: int) -> int:
    report = await Fulfiller(client, journal, concurrency=concurrency).run(read_jsonl(path))
    assert report.done == report.total, report.summary()
    return report.done


def _spread(values: list[float], unit: str = "") -> str:
    return (
        f"median {statistics.median(values):,.2f}{unit} "
        f"(min {min(values):,.2f}, max {max(values):,.2f})"
    )


async def throughput(
    directory: Path, lines: int, rounds: int, url: str, concurrency: int, server: str
) -> None:
    names = ("bare", "memory", "sqlite", "process")
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}  # µs per fulfillment
    async with StoreClient(
        StaticTokenCredential("t" * 1200),
        endpoints=Endpoints.single(url),
        limit=max(100, concurrency),
    ) as client:
        warm = directory / "warm.jsonl"
        write_input(warm, min(lines, 2_000), 1100, "warm")
        await bare(client, warm, concurrency)  # connections, token, code paths
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                source = directory / f"{name}-{round_number}.jsonl"
                write_input(source, lines, 1100, f"{name}{round_number}")
                if name == "bare":
                    started, cpu_started = time.perf_counter(), _cpu()
                    count = await bare(client, source, concurrency)
                elif name == "memory":
                    started, cpu_started = time.perf_counter(), _cpu()
                    count = await fulfill(client, source, MemoryJournal(), concurrency)
                else:
                    # Opened (and the writer process started) before the clock starts, as the
                    # client is: a run is timed, not the set-up. Its CPU is counted.
                    writer: Any = "thread" if name == "sqlite" else "process"
                    journal_path = directory / f"journal-{name}-{round_number}"
                    cpu_started = _cpu()
                    async with SqliteJournal(journal_path, writer=writer) as journal:
                        started = time.perf_counter()
                        count = await fulfill(client, source, journal, concurrency)
                rate = count / (time.perf_counter() - started)
                rates[name].append(rate)
                cpu[name].append((_cpu() - cpu_started) / count * 1e6)
                print(f"  round {round_number + 1} {name:<7} {rate:>9,.0f} fulfillments/s")
                source.unlink()
    print(
        f"{lines:,} fulfillments per run, concurrency {concurrency}, {rounds} rounds, "
        f"collector threshold {gc.get_threshold()[0]}, {server} server:"
    )
    for name in names:
        print(f"  {name:<7} {_spread(rates[name], '/s')}; CPU {_spread(cpu[name], ' µs')}/line")
    for mine in ("sqlite", "process"):
        for baseline, target in (("memory", 0.90), ("bare", 0.85)):
            ratios = [
                ours / theirs for ours, theirs in zip(rates[mine], rates[baseline], strict=True)
            ]
            verdict = "OK" if statistics.median(ratios) >= target else "BELOW TARGET"
            print(
                f"  {mine} / {baseline:<7} paired {_spread(ratios)}  "
                f"(target >= {target}: {verdict})"
            )
            cost = [ours / theirs for ours, theirs in zip(cpu[mine], cpu[baseline], strict=True)]
            print(f"    CPU per line, {mine} / {baseline}: paired {_spread(cost)}")


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the writer process)."""
    own = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


class InstantClient:
    """Answers every consume at once (the RSS run measures the pipeline, not a network)."""

    async def consume(self, request: ConsumeRequest) -> ConsumeResult:
        return ConsumeResult(tracking_id=request.tracking_id, transaction_id=None, attempts=1)


def _peak_rss_kib(pid: int | str = "self") -> int:
    """A process's peak RSS (``VmHWM``), in KiB. Not ``ru_maxrss``: Linux carries that across
    ``exec``, so a child's figure would include its parent's resident pages at ``fork``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def rss_child(input_path: str, journal_path: str, writer: Any) -> None:
    """In a child process: run the whole input, print the report, its peak RSS and the writer
    process's (0 for a writer thread), read before the writer exits."""

    async def main() -> None:
        async with SqliteJournal(journal_path, writer=writer) as journal:
            fulfiller = Fulfiller(InstantClient(), journal, concurrency=CONCURRENCY)
            report = await fulfiller.run(read_jsonl(input_path))
            await journal.flush()
            process = journal._process  # the writer process, if any (a private attribute)
            writer_kib = _peak_rss_kib(process._process.pid) if process is not None else 0
        assert report.done == report.total, report.summary()
        print(report.done, _peak_rss_kib(), writer_kib)

    asyncio.run(main())


def memory(directory: Path, lines: int) -> None:
    print("peak RSS of a fulfill process (Fulfiller + SqliteJournal, instant client):")
    for writer in ("thread", "process"):
        for count in (lines // 10, lines):
            source = directory / f"rss-{count}.jsonl"
            journal = directory / f"rss-{count}.journal"
            write_input(source, count, 100, f"rss{count}")
            started = time.perf_counter()
            child = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(source), str(journal), writer],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            done, peak_kib, writer_kib = (int(value) for value in child.stdout.split())
            elapsed = time.perf_counter() - started
            size = source.stat().st_size / 2**20
            extra = f" + writer process {writer_kib / 1024:,.1f} MiB" if writer_kib else ""
            print(
                f"  {writer:<7} {done:>9,} lines ({size:,.0f} MiB input): peak RSS "
                f"{peak_kib / 1024:,.1f} MiB{extra} in {elapsed:,.1f}s ({done / elapsed:,.0f}/s)"
                "  (target < 100 MiB)",
                flush=True,
            )
            for path in directory.glob(f"rss-{count}*"):
                path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (store-async[speed])")
    parser.add_argument("--rss-lines", type=int, default=1_000_000)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="the collector's first threshold for every contender (the CLI's: 10000; "
        "default: CPython's, 700)",
    )
    parser.add_argument(
        "--server",
        choices=("raw", "aiohttp"),
        default="raw",
        help="the consume server: an asyncio.Protocol (default) or aiohttp.web",
    )
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    with tempfile.TemporaryDirectory(prefix="bench-fulfillment-") as name:
        directory = Path(name)
        if args.lines:
            port_queue: Any = multiprocessing.Queue()
            target = serve_raw if args.server == "raw" else serve
            server = multiprocessing.Process(target=target, args=(port_queue,), daemon=True)
            server.start()
            try:
                port = port_queue.get(timeout=30)
                url = f"http://127.0.0.1:{port}"
                work = throughput(
                    directory, args.lines, args.rounds, url, args.concurrency, args.server
                )
                if args.uvloop:
                    import uvloop

                    uvloop.run(work)
                else:
                    asyncio.run(work)
            finally:
                server.terminate()
                server.join()
        if args.rss_lines:
            memory(directory, args.rss_lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
