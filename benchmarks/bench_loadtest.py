"""Self-check of ``store-async loadtest``: does the generator measure a known server truly?

The server (its own process, loopback) answers every consume after exactly 50 ms. A generator
whose numbers can be trusted reports p50 within 50-55 ms at every rate it sustains. For each
rate of a ladder, one process and then ``--processes 2`` each run ``--rounds`` times (paired:
one, then two, per round); the table prints medians and spread (min-max) of p50, p99, achieved
rate, late starts and client CPU per call, beside the ideal (the server's fixed 50 ms).

The highest rate with ``late_starts`` = 0 in every round and p50 within 50-55 ms is the
generator's limit on this machine; the server and the generator share its cores, so the number
is a floor, not the generator's ceiling.

    .venv/bin/python benchmarks/bench_loadtest.py [--rates 250,500,1000,2000] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
from typing import Any

from store_async.loadtest import LoadTest, run_load_test

DELAY = 0.050
PATH = "/v6.0/collections/consume"


def serve(port_queue: Any) -> None:
    """The server process: 204 after exactly ``DELAY`` seconds (a query answers at once)."""
    from aiohttp import web

    async def consume(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(DELAY)
        return web.Response(status=204)

    async def query(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"items": []})

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, consume)
        app.router.add_post("/v6.0/collections/query", query)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _spread(values: list[float], digits: int = 1) -> str:
    middle = statistics.median(values)
    return f"{middle:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000,1500,2000,3000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("store_async").addHandler(logging.NullHandler())

    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    server = context.Process(target=serve, args=(port_queue,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{port_queue.get(timeout=60)}"
        rates = [float(rate) for rate in args.rates.split(",")]
        print(
            f"server: fixed {DELAY * 1000:.0f} ms per consume (the ideal p50); "
            f"{args.duration:g} s per run, {args.rounds} paired rounds; median (min-max)"
        )
        print(f"{'rate/s':>7} {'procs':>5} {'p50 ms':>20} {'p99 ms':>22} {'achieved/s':>24} "
              f"{'late starts':>18} {'CPU µs/call':>18}")  # fmt: skip
        limits: dict[int, float] = {}
        best_round: dict[int, float] = {}
        for rate in rates:
            runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for processes in (1, 2):
                    test = LoadTest(
                        rate=rate, duration=args.duration, endpoint=url, token="bench",
                        processes=processes, users=10,
                    )  # fmt: skip
                    runs[processes].append(run_load_test(test))
            for processes, reports in runs.items():
                p50 = [r["latency_ms"]["p50"] for r in reports]
                late = [float(r["late_starts"]) for r in reports]
                print(
                    f"{rate:>7,.0f} {processes:>5} {_spread(p50):>20} "
                    f"{_spread([r['latency_ms']['p99'] for r in reports]):>22} "
                    f"{_spread([r['achieved_rate'] for r in reports]):>24} "
                    f"{_spread(late, 0):>18} "
                    f"{_spread([r['client']['cpu_us_per_call'] for r in reports], 0):>18}",
                    flush=True,
                )
                if max(late) == 0 and all(50 <= value <= 55 for value in p50):
                    limits[processes] = max(limits.get(processes, 0.0), rate)
                if any(n == 0 and 50 <= v <= 55 for n, v in zip(late, p50, strict=True)):
                    best_round[processes] = max(best_round.get(processes, 0.0), rate)
        for processes in (1, 2):
            print(
                f"highest rate with late_starts = 0 and p50 within 50-55 ms, {processes} "
                f"process(es): {limits.get(processes, 0):,.0f}/s in every round, "
                f"{best_round.get(processes, 0):,.0f}/s in at least one (of the rates tried)"
            )
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
