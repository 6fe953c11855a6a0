"""Loopback throughput of ``consume``: raw aiohttp vs StoreClient vs an azure-core pipeline.

A minimal aiohttp.web server answering ``POST /v6.0/collections/consume`` with 204 runs in its
own process. In this process, three clients post the same consume bodies at concurrency 64,
interleaved in rounds (order rotated each round) so machine noise hits them alike:

- ``raw``: ``aiohttp.ClientSession.post`` + ``orjson.dumps`` + a fixed bearer header (no retries,
  no token cache, no classification: the floor);
- ``store``: ``StoreClient.consume`` (token cache, classification, retry engine, result record);
- ``azure``: ``azure.core.AsyncPipelineClient`` with ``AsyncRetryPolicy`` and
  ``AsyncBearerTokenCredentialPolicy`` over the same aiohttp (today's peer).

Prints req/s, p50/p99 latency and client CPU per call (``time.process_time`` of this process),
best and median of the rounds, and the ratios to raw. Bounded: ``--requests`` per client per
round (default 20,000) and ``--rounds`` (default 3).

With ``--uvloop``, every round runs once on asyncio and once on uvloop (the ``speed`` extra),
back to back, and the per-round uvloop/asyncio ratios are printed as well.

    .venv/bin/python benchmarks/bench_consume.py [--requests 20000] [--rounds 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from _consume_server import PATH, serve

from store_async import StoreClient
from store_async.codec import dumps
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.models import ConsumeRequest, UserIdentity

CONCURRENCY = 64
TOKEN = "bench-token-" + "x" * 1200  # real Entra tokens are 1-2 KB
SCOPE = "https://onestore.microsoft.com/.default"


Send = Callable[[int], Awaitable[None]]


async def measure(send: Send, requests: int) -> dict[str, float]:
    """Run ``send(i)`` for i in range(requests) with CONCURRENCY workers."""
    latencies = [0.0] * requests
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await send(index)
            latencies[index] = time.perf_counter() - started

    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "rps": requests / wall,
        "p50": latencies[len(latencies) // 2] * 1e3,
        "p99": latencies[int(len(latencies) * 0.99)] * 1e3,
        "cpu": cpu / requests * 1e6,
    }


def connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="benchmark both loops: every round on asyncio, then on uvloop (store-async[speed])",
    )
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(port_queue,), daemon=True)
    server.start()
    try:
        port = port_queue.get(timeout=30)
        base = f"http://127.0.0.1:{port}"
        if not args.uvloop:
            report(asyncio.run(run(base, args.requests, args.rounds)), args.requests, args.rounds)
            return
        import uvloop

        loops = {"asyncio": None, "uvloop": uvloop.new_event_loop}
        by_loop: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in loops}
        for _ in range(args.rounds):  # paired rounds: one on each loop, back to back
            for name, factory in loops.items():
                with asyncio.Runner(loop_factory=factory) as runner:
                    one = runner.run(run(base, args.requests, 1))
                for client, rows in one.items():
                    by_loop[name].setdefault(client, []).extend(rows)
        for name in loops:
            print(f"== {name}")
            report(by_loop[name], args.requests, args.rounds)
        compare_loops(by_loop)
    finally:
        server.terminate()
        server.join(5)


def compare_loops(by_loop: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    """uvloop / asyncio per client, per paired round: median and min-max."""
    print("uvloop / asyncio (paired rounds):")
    for client in by_loop["asyncio"]:
        pairs = list(zip(by_loop["uvloop"][client], by_loop["asyncio"][client], strict=True))
        for metric, label in (("rps", "throughput"), ("cpu", "CPU per call")):
            ratios = [fast[metric] / slow[metric] for fast, slow in pairs]
            print(
                f"  {client:<6} {label:<13} median {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
            )


async def run(base: str, requests: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    from azure.core import AsyncPipelineClient
    from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, AsyncRetryPolicy
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.core.rest import HttpRequest

    url = base + PATH
    beneficiary = UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref")
    consume_requests = [ConsumeRequest.for_item(beneficiary, f"item-{i}") for i in range(requests)]
    raw_documents = [orjson.loads(dumps(request)) for request in consume_requests]
    credential = StaticTokenCredential(TOKEN)
    raw_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    raw_session = aiohttp.ClientSession(connector=connector())
    store = StoreClient(credential, endpoints=Endpoints.single(base), limit=CONCURRENCY)
    azure_session = aiohttp.ClientSession(connector=connector())
    azure: AsyncPipelineClient[HttpRequest, Any] = AsyncPipelineClient(
        base_url=base,
        policies=[AsyncRetryPolicy(), AsyncBearerTokenCredentialPolicy(credential, SCOPE)],
        transport=AioHttpTransport(session=azure_session, session_owner=False),
    )

    async def send_raw(index: int) -> None:
        body = orjson.dumps(raw_documents[index])
        async with raw_session.post(url, data=body, headers=raw_headers) as response:
            if response.status != 204:
                raise RuntimeError(response.status)

    async def send_store(index: int) -> None:
        await store.consume(consume_requests[index])

    async def send_azure(index: int) -> None:
        body = orjson.dumps(raw_documents[index])
        request = HttpRequest(
            "POST", url, content=body, headers={"Content-Type": "application/json"}
        )
        response = await azure.send_request(request, enforce_https=False)
        if response.status_code != 204:
            raise RuntimeError(response.status_code)

    senders: dict[str, Send] = {"raw": send_raw, "store": send_store, "azure": send_azure}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in senders}
    async with store:
        for send in senders.values():  # warm up connections, token caches, code paths
            await measure(send, min(2_000, requests))
        names = list(senders)
        for round_number in range(rounds):
            # Rotate the order each round: a noisy neighbour should not always hit one client.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(await measure(senders[name], requests))
    await raw_session.close()
    await azure_session.close()
    return results


def report(results: dict[str, list[dict[str, float]]], requests: int, rounds: int) -> None:
    print(
        f"consume over loopback: {requests} requests x {rounds} rounds per client, "
        f"concurrency {CONCURRENCY}, server in its own process, {os.cpu_count()} CPUs"
    )
    print(f"{'client':<8}{'req/s best':>12}{'median':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU µs/call':>13}{'(median)':>10}")  # fmt: skip
    summary: dict[str, dict[str, float]] = {}
    for name, rows in results.items():
        best = max(rows, key=lambda row: row["rps"])
        summary[name] = {
            "rps_best": best["rps"],
            "rps_median": statistics.median(row["rps"] for row in rows),
            "p50": statistics.median(row["p50"] for row in rows),
            "p99": statistics.median(row["p99"] for row in rows),
            "cpu_best": min(row["cpu"] for row in rows),
            "cpu_median": statistics.median(row["cpu"] for row in rows),
        }
        s = summary[name]
        print(f"{name:<8}{s['rps_best']:>12.0f}{s['rps_median']:>10.0f}{s['p50']:>9.2f}"
              f"{s['p99']:>9.2f}{s['cpu_best']:>13.1f}{s['cpu_median']:>10.1f}")  # fmt: skip
    raw = summary["raw"]
    for name in ("store", "azure"):
        s = summary[name]
        # Paired ratios (same round, back to back) cancel slow drifts of a shared machine.
        paired_rps = statistics.median(
            row["rps"] / base["rps"]
            for row, base in zip(results[name], results["raw"], strict=True)
        )
        paired_cpu = statistics.median(
            row["cpu"] / base["cpu"]
            for row, base in zip(results[name], results["raw"], strict=True)
        )
        print(
            f"{name}/raw: throughput {s['rps_best'] / raw['rps_best']:.3f} (best) "
            f"{paired_rps:.3f} (median of paired rounds); "
            f"CPU per call {s['cpu_best'] / raw['cpu_best']:.3f} (best) "
            f"{paired_cpu:.3f} (median of paired rounds)"
        )
    print("targets: store/raw throughput >= 0.95, CPU per call within 1.10")


if __name__ == "__main__":
    main()
