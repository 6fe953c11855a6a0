"""Loopback throughput of the v8 consume (200 with a body): raw aiohttp vs ``StoreClient``.

The benchmarks' server (``_consume_server.py``) answering ``POST /v8.0/collections/consume``
with 200 and ``{newQuantity, itemId, trackingId, productId}`` (ids echoed) runs in its own process.
In this process two clients post the same v8 bodies at concurrency 64, interleaved in rounds
(order rotated each round):

- ``raw``: ``aiohttp.ClientSession.post`` + ``orjson.dumps`` + a fixed bearer header, reading and
  parsing the answer with ``orjson.loads`` (the floor: no retries, no records);
- ``store``: ``StoreClient.consume(ConsumeRequest.for_quantity(...))`` (token cache,
  classification, retry engine, the answer decoded into a ``ConsumeResult``).

Prints req/s, p50/p99 latency and client CPU per call, best and median of the rounds, and the
paired ratios store/raw. Bounded: ``--requests`` per client per round, ``--rounds``.

    .venv/bin/python benchmarks/bench_consume_v8.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics

import aiohttp
import orjson
from _consume_server import PATH_V8 as PATH
from _consume_server import serve
from bench_consume import CONCURRENCY, TOKEN, Send, measure

from store_async import StaticTokenCredential, StoreClient
from store_async.codec import dumps
from store_async.endpoints import Endpoints
from store_async.models import ConsumeRequest, UserIdentity


async def run(base: str, requests: int, rounds: int) -> None:
    url = base + PATH
    beneficiary = UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref")
    consume_requests = [
        ConsumeRequest.for_quantity(beneficiary, "9NCOINS00001", 1 + i % 3) for i in range(requests)
    ]
    raw_documents = [orjson.loads(dumps(request)) for request in consume_requests]
    raw_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    raw_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=15)
    )
    store = StoreClient(
        StaticTokenCredential(TOKEN), endpoints=Endpoints.single(base), limit=CONCURRENCY
    )

    async def send_raw(index: int) -> None:
        body = orjson.dumps(raw_documents[index])
        async with raw_session.post(url, data=body, headers=raw_headers) as response:
            answer = orjson.loads(await response.read())
            if response.status != 200 or "newQuantity" not in answer:
                raise RuntimeError(response.status)

    async def send_store(index: int) -> None:
        result = await store.consume(consume_requests[index])
        if result.new_quantity is None:
            raise RuntimeError("no balance")

    senders: dict[str, Send] = {"raw": send_raw, "store": send_store}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in senders}
    async with store:
        for send in senders.values():  # warm up connections, token cache, code paths
            await measure(send, min(2_000, requests))
        names = list(senders)
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(await measure(senders[name], requests))
    await raw_session.close()
    report(results, requests, rounds)


def report(results: dict[str, list[dict[str, float]]], requests: int, rounds: int) -> None:
    print(
        f"v8 consume over loopback: {requests} requests x {rounds} rounds per client, "
        f"concurrency {CONCURRENCY}, server in its own process, {os.cpu_count()} CPUs"
    )
    print(f"{'client':<8}{'req/s best':>12}{'median':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU µs/call':>13}{'(median)':>10}")  # fmt: skip
    for name, rows in results.items():
        best = max(rows, key=lambda row: row["rps"])
        print(
            f"{name:<8}{best['rps']:>12.0f}{statistics.median(r['rps'] for r in rows):>10.0f}"
            f"{statistics.median(r['p50'] for r in rows):>9.2f}"
            f"{statistics.median(r['p99'] for r in rows):>9.2f}"
            f"{min(r['cpu'] for r in rows):>13.1f}"
            f"{statistics.median(r['cpu'] for r in rows):>10.1f}"
        )
    pairs = list(zip(results["store"], results["raw"], strict=True))
    ratios = sorted(store["rps"] / raw["rps"] for store, raw in pairs)
    cpu = sorted(store["cpu"] / raw["cpu"] for store, raw in pairs)
    print(
        f"store/raw: throughput median {statistics.median(ratios):.3f} "
        f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}); CPU per call median "
        f"{statistics.median(cpu):.3f} (range {cpu[0]:.3f}-{cpu[-1]:.3f})"
    )
    print("targets: store/raw throughput >= 0.95, CPU per call within 1.10")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(port_queue,), daemon=True)
    server.start()
    try:
        port = port_queue.get(timeout=30)
        await run(f"http://127.0.0.1:{port}", args.requests, args.rounds)
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    asyncio.run(main())
