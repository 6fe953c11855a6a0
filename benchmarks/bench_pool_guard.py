"""What the pool guard costs: ``StoreClient.consume`` with aiohttp's plain ``TCPConnector`` vs
the client's own ``PoolGuardConnector`` (a pooled connection holding unread bytes is never
reused: one ``poll`` per reused connection), same everything else.

The loopback server of ``bench_consume.py`` runs in its own process; both clients post the same
consume bodies at concurrency 64, in paired rounds (order alternated each round). Prints req/s
and client CPU per call per round, and the medians of the paired ratios guard/plain. Bounded:
``--requests`` per client per round (default 20,000), ``--rounds`` (default 5).

    .venv/bin/python benchmarks/bench_pool_guard.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics

import aiohttp
from _consume_server import serve
from bench_consume import CONCURRENCY, TOKEN, measure

from store_async import StoreClient
from store_async._connector import PoolGuardConnector
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.models import ConsumeRequest, UserIdentity


def session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    """The session ``StoreClient`` builds for itself, with the given connector."""
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    )


async def run(base: str, requests: int, rounds: int) -> None:
    user = UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref")
    bodies = [ConsumeRequest.for_item(user, f"item-{i}") for i in range(requests)]
    credential = StaticTokenCredential(TOKEN)
    sessions = {
        "plain": session(aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=15)),
        "guard": session(PoolGuardConnector(limit=CONCURRENCY, keepalive_timeout=15)),
    }
    stores = {
        name: StoreClient(credential, endpoints=Endpoints.single(base), session=s)
        for name, s in sessions.items()
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    for store in stores.values():
        await store.__aenter__()

    def sender(store: StoreClient):  # type: ignore[no-untyped-def]
        async def send(index: int) -> None:
            await store.consume(bodies[index])

        return send

    try:
        for store in stores.values():  # warm up
            await measure(sender(store), min(2_000, requests))
        names = list(stores)
        for number in range(rounds):
            for name in names if number % 2 == 0 else names[::-1]:
                results[name].append(await measure(sender(stores[name]), requests))
    finally:
        for store in stores.values():
            await store.close()
        for s in sessions.values():
            await s.close()
    print(f"consume over loopback, {requests} requests x {rounds} paired rounds, concurrency 64")
    for number in range(rounds):
        plain, guard = results["plain"][number], results["guard"][number]
        print(
            f"round {number + 1}: plain {plain['rps']:8.0f} req/s {plain['cpu']:6.1f} µs CPU/call"
            f" | guard {guard['rps']:8.0f} req/s {guard['cpu']:6.1f} µs CPU/call"
        )
    rps = [g["rps"] / p["rps"] for p, g in zip(results["plain"], results["guard"], strict=True)]
    cpu = [g["cpu"] / p["cpu"] for p, g in zip(results["plain"], results["guard"], strict=True)]
    print(
        f"guard/plain throughput: median {statistics.median(rps):.3f} "
        f"(min {min(rps):.3f}, max {max(rps):.3f}); CPU per call: median "
        f"{statistics.median(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
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
