"""Micro-benchmark: what the engine and token cache add to a successful consume.

Runs ``StoreClient.consume`` against a stub session whose ``post`` returns a canned 204 (no
network, no aiohttp), and the same stub called bare (encode the body, post, release). The
difference per call is the success-path cost of the engine: open check, token fast path,
prebuilt headers and timeout, transport classification wrapper, budget deposit and the
``ConsumeResult``. Target: <= 3 µs per call.

    .venv/bin/python benchmarks/bench_engine.py [--calls 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from store_async import StoreClient
from store_async._transport import AiohttpTransport
from store_async.codec import dumps
from store_async.credentials import StaticTokenCredential
from store_async.endpoints import Endpoints
from store_async.models import ConsumeRequest, UserIdentity
from store_async.models.consume import consume_result


class CannedResponse:
    status = 204
    headers = CIMultiDictProxy(
        CIMultiDict({"MS-CorrelationId": "c", "MS-RequestId": "r", "MS-CV": "v"})
    )

    def release(self) -> None:
        pass


CANNED = CannedResponse()


class StubSession:
    """Just enough of ``aiohttp.ClientSession.post`` for the success path."""

    async def post(self, url: Any, **_kwargs: Any) -> CannedResponse:
        return CANNED

    async def request(self, method: str, url: Any, **_kwargs: Any) -> CannedResponse:
        return CANNED


async def bare(calls: int, request: ConsumeRequest, url: URL, headers: dict[str, str]) -> float:
    session = StubSession()
    started = time.perf_counter()
    for _ in range(calls):
        body = dumps(request)
        response = await session.post(url, data=body, headers=headers, allow_redirects=False)
        response.release()
    return (time.perf_counter() - started) / calls


async def bare_with_result(
    calls: int, request: ConsumeRequest, url: URL, headers: dict[str, str]
) -> float:
    session = StubSession()
    started = time.perf_counter()
    for _ in range(calls):
        body = dumps(request)
        response = await session.post(url, data=body, headers=headers, allow_redirects=False)
        response.release()
        # The same record the client builds, built the same (cheapest) way: the row isolates
        # the engine, not attrs' __init__.
        consume_result(
            request.tracking_id,
            None,
            1,
            response.headers.get("MS-CorrelationId"),
            response.headers.get("MS-RequestId"),
            response.headers.get("MS-CV"),
        )
    return (time.perf_counter() - started) / calls


async def engine(calls: int, request: ConsumeRequest) -> float:
    transport = AiohttpTransport(
        StubSession(),  # type: ignore[arg-type]
        max_response_bytes=1 << 20,
        attempt_timeout=10.0,
        connect_timeout=5.0,
    )
    client = StoreClient(
        StaticTokenCredential("bench-token"),
        endpoints=Endpoints.single("http://127.0.0.1:1"),
        transport=transport,
    )
    async with client:
        await client.consume(request)  # warm the token cache
        started = time.perf_counter()
        for _ in range(calls):
            await client.consume(request)
        return (time.perf_counter() - started) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    request = ConsumeRequest.for_item(
        UserIdentity(identity_value="k" * 1200, local_ticket_reference="ref"), "item-1"
    )
    url = URL("http://127.0.0.1:1/v6.0/collections/consume")
    headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
    rows: dict[str, list[float]] = {"bare": [], "bare+result": [], "engine": []}
    for _ in range(args.repeat):
        rows["bare"].append(await bare(args.calls, request, url, headers))
        rows["bare+result"].append(await bare_with_result(args.calls, request, url, headers))
        rows["engine"].append(await engine(args.calls, request))
    best = {name: min(values) * 1e6 for name, values in rows.items()}
    median = {name: statistics.median(values) * 1e6 for name, values in rows.items()}
    print(f"{args.calls} calls x {args.repeat} runs (µs per call: best / median)")
    for name in rows:
        print(f"  {name:<12} {best[name]:7.2f} / {median[name]:7.2f}")
    print(
        f"  engine + token cache overhead vs bare:        "
        f"{best['engine'] - best['bare']:5.2f} µs best, "
        f"{median['engine'] - median['bare']:5.2f} µs median"
    )
    print(
        f"  engine + token cache overhead vs bare+result: "
        f"{best['engine'] - best['bare+result']:5.2f} µs best, "
        f"{median['engine'] - median['bare+result']:5.2f} µs median  (target <= 3 µs)"
    )


if __name__ == "__main__":
    asyncio.run(main())
