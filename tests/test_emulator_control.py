"""The emulator's control plane (``/_emulator/...``), driven from another process.

The emulator runs as ``store-async emulator`` in a subprocess; these tests reach it only over
HTTP on loopback, as an outside harness would: mint keys it accepts (``--strict-keys``), read
its ledger and stats, and change its faults while it runs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from store_async import (
    AuthenticationError,
    ConsumeRequest,
    GrantRequest,
    RetryPolicy,
    StaticTokenCredential,
    StoreClient,
    UserIdentity,
)
from store_async.emulator import FaultKind, FaultPlan
from store_async.emulator.control import fault_plan_from_json, fault_plan_to_json
from store_async.endpoints import Endpoints

LAUNCH = "import sys; from store_async.cli import main; sys.exit(main())"
TRACKING = "0f8fad5b-d9cb-469f-a165-70867728950e"


@asynccontextmanager
async def emulator(*options: str) -> AsyncIterator[tuple[str, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCH, "emulator", "--port", "0", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        token = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        yield url, token
    finally:
        process.terminate()
        await process.wait()


async def control(method: str, url: str, body: Any = None, raw: bytes | None = None) -> Any:
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data) as answer,
    ):
        return answer.status, orjson.loads(await answer.read())


def client(url: str, token: str, **retry: Any) -> StoreClient:
    return StoreClient(
        StaticTokenCredential(token),
        endpoints=Endpoints.single(url),
        retry=RetryPolicy(**retry) if retry else None,
    )


def user(key: str) -> UserIdentity:
    return UserIdentity(identity_value=key, local_ticket_reference="alice")


async def test_minted_keys_open_a_strict_emulator_and_the_ledger_counts_each_write_once() -> None:
    async with emulator("--strict-keys") as (url, token):
        status, minted = await control("POST", f"{url}/_emulator/keys", {"userId": "alice"})
        assert status == 200
        collections_key = minted["key"]
        status, minted = await control(
            "POST", f"{url}/_emulator/keys", {"userId": "alice", "kind": "purchase"}
        )
        assert status == 200
        purchase_key = minted["key"]
        assert collections_key.count(".") == 2
        assert collections_key != purchase_key

        async with client(url, token) as store:
            request = ConsumeRequest.for_item(user(collections_key), "item-1", TRACKING)
            await store.consume(request)
            await store.consume(request)  # a replay: answered, not applied again
            order = await store.grant_free_product(
                GrantRequest(
                    availability_id="a", b2b_key=purchase_key, language="en-us",
                    market="us", product_id="p", sku_id="s",
                )
            )  # fmt: skip

        status, ledger = await control("GET", f"{url}/_emulator/ledger")
        assert status == 200
        assert ledger == {
            "requests": 3,
            "requests_by_endpoint": {"consume": 2, "grant": 1},
            "applied": 2,
            "applied_by_kind": {"consume": 1, "grant": 1},
            "duplicates": {},
        }
        assert order.order_id
        status, stats = await control("GET", f"{url}/_emulator/stats")
        assert status == 200
        assert stats["requests"] == {"consume": 2, "grant": 1}
        assert stats["answers"] == {"consume": {"204": 2}, "grant": {"200": 1}}
        assert stats["faults"] == {}
        async with client(url, token) as store:
            with pytest.raises(AuthenticationError):  # strict: an opaque id is not a key
                await store.consume(ConsumeRequest.for_item(user("alice"), "item-2"))


async def test_faults_are_read_and_replaced_while_the_emulator_runs() -> None:
    async with emulator("--seed", "5", "--retry-after", "1") as (url, token):
        status, plan = await control("GET", f"{url}/_emulator/faults")
        assert status == 200
        assert plan["rate"] == 0.0
        assert plan["seed"] == 5
        assert plan["seed_in_use"] == 5
        assert plan["retry_after"] == 1.0

        wanted = {"script": {"consume": ["http_503", None, "http_429"]}, "retry_after": 0}
        status, plan = await control("PUT", f"{url}/_emulator/faults", wanted)
        assert status == 200
        assert plan["script"] == {"consume": ["http_503", None, "http_429"]}
        assert plan["retry_after"] == 0.0
        assert plan["rate"] == 0.0

        async with client(url, token, backoff_base=0.0) as store:
            first = await store.consume(ConsumeRequest.for_item(user("bob"), "item-1"))
            second = await store.consume(ConsumeRequest.for_item(user("bob"), "item-2"))
        assert (first.attempts, second.attempts) == (2, 2)  # 503 then 204; 429 then 204
        status, stats = await control("GET", f"{url}/_emulator/stats")
        assert stats["faults"] == {"consume": {"http_503": 1, "http_429": 1}}
        assert stats["answers"]["consume"] == {"503": 1, "429": 1, "204": 2}
        status, ledger = await control("GET", f"{url}/_emulator/ledger")
        assert ledger["applied"] == 2
        assert ledger["duplicates"] == {}


@pytest.mark.parametrize(
    ("path", "method", "body", "message"),
    [
        ("keys", "POST", {"kind": "collections"}, "userId must be a non-empty string"),
        ("keys", "POST", {"userId": "a", "kind": "gold"}, "kind must be one of"),
        ("keys", "POST", [1, 2], "must be a JSON object"),
        ("faults", "PUT", {"rate": 2}, "fault rate must be within [0, 1]"),
        ("faults", "PUT", {"kinds": {"meteor": 1}}, "unknown fault kind 'meteor'"),
        ("faults", "PUT", {"kinds": ["http_500"]}, "kinds must be a JSON object"),
        ("faults", "PUT", {"speed": 1}, "unknown fault plan field(s) ['speed']"),
        ("faults", "PUT", {"script": {"consume": "http_500"}}, "must be a list"),
        ("faults", "PUT", {"seed": "7"}, "seed must be an integer or null"),
    ],
)
async def test_bad_control_requests_are_400_with_the_reason(
    path: str, method: str, body: Any, message: str
) -> None:
    async with emulator() as (url, _):
        status, answer = await control(method, f"{url}/_emulator/{path}", body)
        assert status == 400
        assert message in answer["error"]
        status, answer = await control(method, f"{url}/_emulator/{path}", raw=b"{not json")
        assert (status, answer) == (400, {"error": "the body is not valid JSON"})
        status, plan = await control("GET", f"{url}/_emulator/faults")
        assert plan["rate"] == 0.0
        assert plan["script"] == {}


async def test_mint_key_command_prints_a_key_the_strict_emulator_accepts() -> None:
    async with emulator("--strict-keys") as (url, token):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCH, "emulator", "mint-key", "carol", "--url", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err
        key = out.decode().strip()
        assert out.decode().count("\n") == 1  # the key alone, for $(...)
        async with client(url, token) as store:
            result = await store.consume(ConsumeRequest.for_item(user(key), "item-1"))
        assert result.attempts == 1
        _status, ledger = await control("GET", f"{url}/_emulator/ledger")
        assert ledger["applied"] == 1


def test_mint_key_without_an_emulator_is_a_clear_error() -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, "emulator", "mint-key", "dave", "--url",
         f"http://127.0.0.1:{port}", "--kind", "purchase"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no emulator at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_fault_plans_round_trip_through_json() -> None:
    plan = FaultPlan(
        rate=0.25,
        rates={"grant": 0.5},
        kinds={FaultKind.HTTP_429: 2, FaultKind.SLOW: 1},
        seed=9,
        retry_after=0.5,
        slow_seconds=0.1,
        script={"consume": [FaultKind.DROP_AFTER_COMMIT, None]},
    )
    document = orjson.loads(orjson.dumps(fault_plan_to_json(plan)))
    assert fault_plan_from_json(document) == plan
