"""This tree's ``StoreClient.consume`` against another checkout's (a baseline), in one run.

Each round runs, back to back and in rotated order, one child process per variant against the same
minimal consume server (its own process, ``_consume_server``):

- ``baseline``: ``store_async`` imported from ``--baseline`` (a worktree of ``main``, say);
- ``current``: this tree's, hooks unset (the bare fast path);
- ``current+hooks``: this tree's with no-op hooks on all four events (the hook path's cost).

A child measures loopback ``consume`` (bench_consume's ``measure``: concurrency 64, req/s and
client CPU per call) after a warm-up, and the engine alone against a stub session (bench_engine's
``engine``: µs per call, no network). Paired ratios (same round) and their median cancel the
drifts of a shared machine. Bounded: ``--requests`` per child and ``--rounds``.

    git worktree add --detach /tmp/baseline main
    .venv/bin/python benchmarks/bench_versions.py --baseline /tmp/baseline [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _consume_server import serve

HERE = Path(__file__).resolve().parent

CHILD = """
import asyncio, json, sys
sys.path.insert(0, {benchmarks!r})
from bench_consume import measure
from bench_engine import engine
import store_async
from store_async import ClientHooks, StoreClient
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.models import ConsumeRequest, UserIdentity

async def main(base, requests, hooked):
    user = UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref")
    consumes = [ConsumeRequest.for_item(user, f"item-{{i}}") for i in range(requests)]
    nothing = lambda event: None
    options = {{}}
    if hooked:
        options["hooks"] = ClientHooks(on_call_start=nothing, on_call_end=nothing,
                                       on_attempt_start=nothing, on_attempt_end=nothing)
    store = StoreClient(StaticTokenCredential("bench-token-" + "x" * 1200),
                        endpoints=Endpoints.single(base), limit=64, **options)
    async with store:
        async def send(index):
            await store.consume(consumes[index])
        await measure(send, min(2000, requests))  # warm-up: connections, token, code paths
        row = await measure(send, requests)
    row["engine_us"] = min([await engine(50_000, consumes[0]) for _ in range(3)]) * 1e6
    row["source"] = store_async.__file__
    print(json.dumps(row))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hooks"))
"""


def child(variant: str, tree: Path, base: str, requests: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))  # this tree's store_async wins over the venv's
    hooked = "hooks" if variant.endswith("+hooks") else "none"
    code = CHILD.format(benchmarks=str(HERE))
    done = subprocess.run(
        [sys.executable, "-c", code, base, str(requests), hooked],
        env=env,
        cwd=tree,  # "-c" puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    row: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout's root")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {
        "baseline": args.baseline.resolve(),
        "current": HERE.parent,
        "current+hooks": HERE.parent,
    }
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(port_queue,), daemon=True)
    server.start()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        base = f"http://127.0.0.1:{port_queue.get(timeout=30)}"
        names = list(trees)
        for number in range(args.rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(child(name, trees[name], base, args.requests))
    finally:
        server.terminate()
        server.join(5)
    for name, rows in results.items():
        sources = {str(row.pop("source")) for row in rows}  # type: ignore[arg-type]
        assert all(Path(s).is_relative_to(trees[name]) for s in sources), (name, sources)
    report(results, args)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print(
        f"consume over loopback, {args.requests} requests x {args.rounds} rounds per variant "
        f"(one child process each, concurrency 64), {os.cpu_count()} CPUs; "
        f"baseline: {args.baseline}"
    )
    print(f"{'variant':<15}{'req/s median':>13}{'spread':>17}{'CPU µs/call':>13}"
          f"{'spread':>15}{'engine µs':>11}")  # fmt: skip
    for name, rows in results.items():
        rps = sorted(row["rps"] for row in rows)
        cpu = sorted(row["cpu"] for row in rows)
        eng = statistics.median(row["engine_us"] for row in rows)
        print(f"{name:<15}{statistics.median(rps):>13.0f}{f'{rps[0]:.0f}-{rps[-1]:.0f}':>17}"
              f"{statistics.median(cpu):>13.1f}{f'{cpu[0]:.1f}-{cpu[-1]:.1f}':>15}"
              f"{eng:>11.2f}")  # fmt: skip
    base = results["baseline"]
    for name in ("current", "current+hooks"):
        rows = results[name]
        paired = [
            (row["rps"] / b["rps"], row["cpu"] / b["cpu"], row["engine_us"] - b["engine_us"])
            for row, b in zip(rows, base, strict=True)
        ]
        rps = sorted(p[0] for p in paired)
        cpu = sorted(p[1] for p in paired)
        eng = sorted(p[2] for p in paired)
        print(
            f"{name}/baseline (median of paired rounds, [min, max]): throughput "
            f"{statistics.median(rps):.3f} [{rps[0]:.3f}, {rps[-1]:.3f}], CPU per call "
            f"{statistics.median(cpu):.3f} [{cpu[0]:.3f}, {cpu[-1]:.3f}], engine "
            f"{statistics.median(eng):+.2f} µs [{eng[0]:+.2f}, {eng[-1]:+.2f}]"
        )


if __name__ == "__main__":
    main()
