"""The emulator's control plane: ``/_emulator/...`` routes for a test harness in another process.

An emulator running in its own process (``store-async emulator``, or a load generator's embedded
one) cannot be reached through Python attributes, so the same powers travel over HTTP:

==========================  ========================================================================
route                       what it does
==========================  ========================================================================
``POST /_emulator/keys``    ``{"userId": "u1", "kind": "collections"|"purchase"}`` (``kind``
                            defaults to ``collections``; ``publisherUserId`` optional) →
                            ``{"key": "eyJ..."}``: a Store ID key this emulator accepts,
                            ``--strict-keys`` included
``GET /_emulator/ledger``   ``{"requests", "applied", "applied_by_kind", "duplicates": {key: n},
                            "consumes", "grants"}``: the exactly-once audit
``GET /_emulator/stats``    requests, answers and injected faults by endpoint; tokens issued
``GET /_emulator/faults``   the fault plan in force, as JSON, with the seed in use
``PUT /_emulator/faults``   replace the fault plan; the body takes :class:`FaultPlan`'s fields
                            (``rate``, ``rates``, ``kinds``, ``seed``, ``retry_after``,
                            ``slow_seconds``, ``script``) with kinds spelled as their values
                            (``"http_429"``); fields left out take their defaults
==========================  ========================================================================

**Unauthenticated, on purpose.** The control plane is for a test harness on loopback: anyone who
reaches it can mint keys this emulator accepts and change its faults. The emulator binds
``127.0.0.1`` unless told otherwise; never expose one on a shared network. Control requests are
not Store requests: they draw no fault and are not counted in the stats.

Bad input is answered ``400`` with ``{"error": "..."}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from store_async.emulator.faults import FaultKind, FaultPlan
from store_async.emulator.keys import AUDIENCES

if TYPE_CHECKING:
    from store_async.emulator.service import StoreService

__all__ = ["PREFIX", "fault_plan_from_json", "fault_plan_to_json", "register"]

PREFIX: Final = "/_emulator"
_PLAN_FIELDS: Final = ("rate", "rates", "kinds", "seed", "retry_after", "slow_seconds", "script")


class _BadInput(Exception):
    """A control request the plane refuses with 400 (the message names the field)."""


def register(app: web.Application, service: StoreService) -> None:
    """Add the control routes to ``app`` (called once by ``StoreService.application``)."""
    control = _Control(service)
    app.router.add_post(f"{PREFIX}/keys", control.mint_key)
    app.router.add_get(f"{PREFIX}/ledger", control.ledger)
    app.router.add_get(f"{PREFIX}/stats", control.stats)
    app.router.add_get(f"{PREFIX}/faults", control.faults)
    app.router.add_put(f"{PREFIX}/faults", control.replace_faults)


def fault_plan_to_json(plan: FaultPlan) -> dict[str, Any]:
    """A plan as the JSON the control plane reads and writes."""
    return {
        "rate": plan.rate,
        "rates": dict(plan.rates),
        "kinds": {kind.value: weight for kind, weight in plan.kinds.items()},
        "seed": plan.seed,
        "retry_after": plan.retry_after,
        "slow_seconds": plan.slow_seconds,
        "script": {
            endpoint: [_step_name(step) for step in steps]
            for endpoint, steps in plan.script.items()
        },
    }


def _step_name(step: object) -> str | None:
    """A script step as JSON: a fault kind's value, or ``"raw_answer"`` for a RawAnswer."""
    if step is None:
        return None
    value = getattr(step, "value", None)
    return value if isinstance(value, str) else "raw_answer"


def fault_plan_from_json(document: object) -> FaultPlan:
    """A :class:`FaultPlan` from control-plane JSON; ``ValueError`` names the bad field."""
    if not isinstance(document, dict):
        raise ValueError("the fault plan must be a JSON object")
    unknown = sorted(set(document) - set(_PLAN_FIELDS))
    if unknown:
        raise ValueError(f"unknown fault plan field(s) {unknown}; known: {list(_PLAN_FIELDS)}")
    fields: dict[str, Any] = {}
    for name in ("rate", "retry_after", "slow_seconds"):
        if name in document:
            fields[name] = _number(document[name], name)
    if "seed" in document:
        seed = document["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        fields["seed"] = seed
    if "rates" in document:
        rates = _object(document["rates"], "rates")
        fields["rates"] = {name: _number(value, f"rates.{name}") for name, value in rates.items()}
    if "kinds" in document:
        kinds = _object(document["kinds"], "kinds")
        fields["kinds"] = {
            _kind(name, "kinds"): _number(weight, f"kinds.{name}") for name, weight in kinds.items()
        }
    if "script" in document:
        script = _object(document["script"], "script")
        steps: dict[str, list[FaultKind | None]] = {}
        for endpoint, sequence in script.items():
            if not isinstance(sequence, list):
                raise ValueError(f"script.{endpoint} must be a list of fault kinds or nulls")
            steps[endpoint] = [
                None if step is None else _kind(step, f"script.{endpoint}") for step in sequence
            ]
        fields["script"] = steps
    return FaultPlan(**fields)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value


def _kind(value: object, name: str) -> FaultKind:
    try:
        return FaultKind(value)
    except ValueError:
        known = [kind.value for kind in FaultKind]
        raise ValueError(f"{name}: unknown fault kind {value!r}; known: {known}") from None


def _answer(document: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


async def _json_body(request: web.Request) -> object:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _BadInput("the body is not valid JSON") from None


class _Control:
    """The handlers, over one running :class:`StoreService`."""

    def __init__(self, service: StoreService) -> None:
        self._service = service

    async def mint_key(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise _BadInput("the body must be a JSON object")
            user_id = body.get("userId")
            kind = body.get("kind", "collections")
            publisher = body.get("publisherUserId")
            if not isinstance(user_id, str) or not user_id:
                raise _BadInput("userId must be a non-empty string")
            if kind not in AUDIENCES:
                raise _BadInput(f"kind must be one of {sorted(AUDIENCES)}")
            if publisher is not None and (not isinstance(publisher, str) or not publisher):
                raise _BadInput("publisherUserId must be a non-empty string when given")
        except _BadInput as bad:
            return _answer({"error": str(bad)}, 400)
        service = self._service
        key = service.keys.mint(
            user_id, kind, client_id=service.tokens.client_id, publisher_user_id=publisher
        )
        return _answer({"key": key})

    async def ledger(self, request: web.Request) -> web.Response:
        service = self._service
        ledger = service.state.ledger
        requests = service.stats.requests
        store_requests = {name: count for name, count in requests.items() if name != "token"}
        return _answer(
            {
                "requests": sum(store_requests.values()),
                "requests_by_endpoint": store_requests,
                "applied": ledger.total,
                "applied_by_kind": dict(Counter(entry.kind for entry in ledger)),
                "duplicates": ledger.duplicates(),
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        service = self._service
        stats = service.stats
        answers: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in stats.answers.items():
            answers.setdefault(endpoint, {})[str(status)] = count
        faults: dict[str, dict[str, int]] = {}
        for (endpoint, kind), count in stats.faults.items():
            faults.setdefault(endpoint, {})[kind.value] = count
        return _answer(
            {
                "requests": dict(stats.requests),
                "answers": answers,
                "faults": faults,
                "tokens_issued": service.tokens.issued,
            }
        )

    async def faults(self, request: web.Request) -> web.Response:
        sequence = self._service.faults
        return _answer({**fault_plan_to_json(sequence.plan), "seed_in_use": sequence.seed})

    async def replace_faults(self, request: web.Request) -> web.Response:
        try:
            plan = fault_plan_from_json(await _json_body(request))
        except (_BadInput, ValueError) as bad:
            return _answer({"error": str(bad)}, 400)
        sequence = self._service.replace_faults(plan)
        return _answer({**fault_plan_to_json(plan), "seed_in_use": sequence.seed})
