"""Little's law against a Store that answers in 100 ms: fulfillments/s by concurrency.

In flight = throughput x round trip (N = λ·W). With W = 0.1 s, 500 / 2,000 / 8,000
fulfillments/s need 50 / 200 / 800 consume calls in flight; the old default (64) caps a process
at ~640/s, the new one (512) allows ~5,000/s. This runs the real pipeline (``Fulfiller`` +
``SqliteJournal``, ``synchronous=FULL``) against a ``StoreEmulator(latency=0.1)`` in its own
process, at each concurrency for about ``--seconds`` (default 3) of predicted work, and prints
the achieved rate beside the prediction N / W. Where achieved falls short of predicted, the
bound is CPU (client or emulator: both share this machine), not the concurrency. Each
concurrency runs twice per round, with CPython's default collector threshold (700, a library
user's process) and with the ``store-async`` CLI's (``GC_THRESHOLD``): hundreds of calls in
flight make the default collect often.

    .venv/bin/python benchmarks/bench_latency.py [--latency 0.1] [--seconds 3]
        [--concurrency 50 64 200 512 800] [--rounds 1] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from store_async import Endpoints, StaticTokenCredential, StoreClient
from store_async.cli import GC_THRESHOLD
from store_async.fulfillment import Fulfiller, SqliteJournal, read_jsonl

TOKEN = "bench-latency-token"


def serve(port_queue: Any, latency: float) -> None:
    """The emulator process: every answer ``latency`` seconds late."""
    from store_async.emulator import StoreEmulator

    async def main() -> None:
        emulator = StoreEmulator(auto_create=True, dev_token=TOKEN, latency=latency)
        await emulator.start()
        port_queue.put(emulator.url)
        await asyncio.Event().wait()

    asyncio.run(main())


def write_input(path: Path, lines: int, prefix: str) -> None:
    with open(path, "wb") as file:
        for n in range(lines):
            line = {
                "key": f"{prefix}-{n}",
                "beneficiary": {"identityValue": f"user-{n % 500}", "localTicketReference": "r"},
                "itemId": f"{prefix}-{n}",
            }
            file.write(orjson.dumps(line) + b"\n")


async def run_once(
    url: str, directory: Path, concurrency: int, lines: int, name: str
) -> tuple[float, float]:
    """One run of ``lines`` through the real pipeline: lines/s, and CPU µs per line (this
    process: the event loop and the journal's writer thread). Set-up is not timed."""
    source = directory / f"in-{name}.jsonl"
    write_input(source, lines, name)
    async with (
        StoreClient(
            StaticTokenCredential(TOKEN),
            endpoints=Endpoints.single(url),
            limit=max(100, concurrency),
        ) as client,
        SqliteJournal(directory / f"journal-{name}") as journal,
    ):
        started, cpu_started = time.perf_counter(), time.process_time()
        report = await Fulfiller(client, journal, concurrency=concurrency).run(read_jsonl(source))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert report.done == lines, report.summary()
    source.unlink()
    return lines / elapsed, cpu / lines * 1e6


async def measure(url: str, directory: Path, args: argparse.Namespace) -> None:
    print(f"emulator answering in {args.latency * 1000:.0f} ms; Fulfiller + SqliteJournal (FULL)")
    print(
        "each concurrency with CPython's default collector threshold and with the CLI's "
        f"({GC_THRESHOLD}), {args.rounds} paired round(s), medians"
    )
    print(
        f"{'in flight':>10}{'predicted/s':>13}{'achieved/s':>12}{'/predicted':>11}"
        f"{'CLI gc/s':>10}{'/predicted':>11}{'CPU µs/line':>12}{'CLI gc':>8}"
    )
    default = gc.get_threshold()
    for concurrency in args.concurrency:
        predicted = concurrency / args.latency
        lines = max(concurrency * 4, int(predicted * args.seconds))
        rates: dict[str, list[float]] = {"default": [], "cli": []}
        cpus: dict[str, list[float]] = {"default": [], "cli": []}
        for round_number in range(args.rounds):
            order = ("default", "cli") if round_number % 2 == 0 else ("cli", "default")
            for setting in order:
                threshold = default[0] if setting == "default" else GC_THRESHOLD
                gc.set_threshold(threshold, *default[1:])
                name = f"c{concurrency}-{setting}-{round_number}"
                rate, cpu = await run_once(url, directory, concurrency, lines, name)
                rates[setting].append(rate)
                cpus[setting].append(cpu)
        gc.set_threshold(*default)
        achieved, tuned = statistics.median(rates["default"]), statistics.median(rates["cli"])
        print(
            f"{concurrency:>10}{predicted:>13,.0f}{achieved:>12,.0f}{achieved / predicted:>11.2f}"
            f"{tuned:>10,.0f}{tuned / predicted:>11.2f}"
            f"{statistics.median(cpus['default']):>12.0f}{statistics.median(cpus['cli']):>8.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 64, 200, 512, 800])
    parser.add_argument("--rounds", type=int, default=1, help="paired rounds per concurrency")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    server = context.Process(target=serve, args=(port_queue, args.latency), daemon=True)
    server.start()
    try:
        url = port_queue.get(timeout=60)
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as name:
            work = measure(url, Path(name), args)
            if args.uvloop:
                import uvloop

                uvloop.run(work)
            else:
                asyncio.run(work)
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
