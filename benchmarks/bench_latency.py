"""Little's law against a Store that answers in 100 ms: fulfillments/s by concurrency.

In flight = throughput x round trip (N = λ·W). With W = 0.1 s, 500 / 2,000 / 8,000
fulfillments/s need 50 / 200 / 800 consume calls in flight; the old default (64) caps a process
at ~640/s, the new one (512) allows ~5,000/s. This runs the real pipeline (``Fulfiller`` +
``SqliteJournal``, ``synchronous=FULL``) against a ``StoreEmulator(latency=0.1)`` in its own
process, at each concurrency for about ``--seconds`` (default 3) of predicted work, and prints
the achieved rate beside the prediction N / W. Where achieved falls short of predicted, the
bound is CPU (client or emulator: both share this machine), not the concurrency.

    .venv/bin/python benchmarks/bench_latency.py [--latency 0.1] [--seconds 3]
        [--concurrency 50 64 200 512 800] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from store_async import Endpoints, StaticTokenCredential, StoreClient
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


async def measure(url: str, directory: Path, args: argparse.Namespace) -> None:
    print(f"emulator answering in {args.latency * 1000:.0f} ms; Fulfiller + SqliteJournal (FULL)")
    print(f"{'in flight':>10}{'predicted/s':>13}{'achieved/s':>12}{'achieved/predicted':>20}")
    for concurrency in args.concurrency:
        predicted = concurrency / args.latency
        lines = max(concurrency * 4, int(predicted * args.seconds))
        source = directory / f"in-{concurrency}.jsonl"
        write_input(source, lines, f"c{concurrency}")
        async with (
            StoreClient(
                StaticTokenCredential(TOKEN),
                endpoints=Endpoints.single(url),
                limit=max(100, concurrency),
            ) as client,
            SqliteJournal(directory / f"journal-{concurrency}") as journal,
        ):
            started = time.perf_counter()
            report = await Fulfiller(client, journal, concurrency=concurrency).run(
                read_jsonl(source)
            )
            elapsed = time.perf_counter() - started
        assert report.done == lines, report.summary()
        achieved = lines / elapsed
        print(
            f"{concurrency:>10}{predicted:>13,.0f}{achieved:>12,.0f}{achieved / predicted:>20.2f}",
            flush=True,
        )
        source.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 64, 200, 512, 800])
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
