"""Seeded fault injection: which requests fail, and how.

A :class:`FaultPlan` is a frozen description (rates, kinds, seed, delays). Each running
emulator turns it into a :class:`FaultSequence`, which draws **exactly one** number from a
seeded :class:`random.Random` per request, in arrival order, and maps it to a decision. So
the same seed and the same order of requests give the same faults, whatever the outcome of
each request (an answer, a refusal, a 401) - which is what makes a failing run replayable.

The kinds and what the client sees:

==========================  =======================================  =====================
kind                        what the emulator does                   applied?
==========================  =======================================  =====================
``RESET_BEFORE_COMMIT``     resets the TCP connection (RST)          no
``DROP_AFTER_COMMIT``       applies, then closes without answering   yes
``HTTP_500``                applies, then answers 500                yes
``HTTP_503``                answers 503 (with ``Retry-After``)       no
``HTTP_429``                answers 429 with ``Retry-After``         no
``SLOW``                    sleeps ``slow_seconds``, then serves     as usual
==========================  =======================================  =====================

``DROP_AFTER_COMMIT`` and ``HTTP_500`` are the dangerous ones: the change is made but the
client cannot know it, so only an idempotency key saves it from applying twice.

A *script* (``FaultPlan(script={"consume": [FaultKind.HTTP_503, None]})``) forces the first
decisions of an endpoint, for tests that need one exact scenario; random draws take over
when the script is used up (a scripted decision still consumes its random draw, so scripts
never shift the seeded sequence).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = ["ENDPOINTS", "FaultKind", "FaultPlan", "FaultSequence"]

ENDPOINTS: Final = (
    *("query", "consume", "grant", "renew", "offline_license", "token"),
    "subscriptions",  # recurrences query and change (issue 9)
    "orders",  # clawback v1 orders query (issue 9)
)
"""Endpoint names used by rates, scripts and the emulator's counters."""


class FaultKind(enum.Enum):
    """One kind of injected failure."""

    RESET_BEFORE_COMMIT = "reset_before_commit"
    DROP_AFTER_COMMIT = "drop_after_commit"
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    SLOW = "slow"

    @property
    def applies(self) -> bool:
        """Whether the emulator still applies the request before failing it."""
        return self in (FaultKind.DROP_AFTER_COMMIT, FaultKind.HTTP_500)


_ALL_KINDS: Final = MappingProxyType(dict.fromkeys(FaultKind, 1.0))


def _frozen_rates(rates: Mapping[str, float]) -> Mapping[str, float]:
    for name, rate in rates.items():
        if name not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {name!r} in fault rates; known: {ENDPOINTS}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {name!r} must be within [0, 1], got {rate}")
    return MappingProxyType(dict(rates))


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What to break, how often, and with which seed.

    ``rate`` applies to every Store endpoint (query, consume, grant, renew, offline_license);
    ``rates`` overrides it per endpoint. The Entra ID ``token`` endpoint is only faulted when
    named in ``rates`` (azure-identity's own retries would hide most of it otherwise).
    ``kinds`` weights the kinds drawn for a faulted request (all equal by default).
    ``seed=None`` picks a random seed at start; the emulator exposes it as ``fault_seed`` so
    a run can be replayed.
    """

    rate: float = 0.0
    rates: Mapping[str, float] = field(default_factory=dict)
    kinds: Mapping[FaultKind, float] = field(default_factory=lambda: _ALL_KINDS)
    seed: int | None = None
    retry_after: float = 0.0
    """Seconds sent in ``Retry-After`` with 429 and 503 (kept small so tests never stall)."""
    slow_seconds: float = 0.02
    """Delay of a ``SLOW`` answer."""
    script: Mapping[str, Sequence[FaultKind | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        object.__setattr__(self, "rates", _frozen_rates(self.rates))
        weights = {FaultKind(kind): float(weight) for kind, weight in self.kinds.items()}
        if any(weight < 0 for weight in weights.values()) or not any(weights.values()):
            raise ValueError("fault kind weights must be >= 0 with at least one > 0")
        object.__setattr__(self, "kinds", MappingProxyType(weights))
        if self.retry_after < 0 or self.slow_seconds < 0:
            raise ValueError("retry_after and slow_seconds must be >= 0")
        for name in self.script:
            if name not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {name!r} in fault script; known: {ENDPOINTS}")
        object.__setattr__(
            self, "script", MappingProxyType({k: tuple(v) for k, v in self.script.items()})
        )

    @classmethod
    def none(cls) -> FaultPlan:
        """No faults at all."""
        return cls()

    def rate_for(self, endpoint: str) -> float:
        """The fault probability of one request to ``endpoint``."""
        if endpoint in self.rates:
            return self.rates[endpoint]
        return 0.0 if endpoint == "token" else self.rate

    def sequence(self) -> FaultSequence:
        """A fresh decision sequence (a new seeded generator) for one emulator run."""
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(2**32)
        return FaultSequence(self, seed)


class FaultSequence:
    """The running decision maker of one emulator: one random draw per request."""

    __slots__ = ("_cumulative", "_kinds", "_random", "_rates", "_script", "plan", "seed")

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self.seed = seed
        self._random = random.Random(seed)
        self._rates = {name: plan.rate_for(name) for name in ENDPOINTS}
        kinds = [kind for kind, weight in plan.kinds.items() if weight > 0]
        total = sum(plan.kinds[kind] for kind in kinds)
        running = 0.0
        cumulative = []
        for kind in kinds:
            running += plan.kinds[kind] / total
            cumulative.append(running)
        cumulative[-1] = 1.0  # no float gap at the top
        self._kinds = kinds
        self._cumulative = cumulative
        self._script = {name: list(reversed(steps)) for name, steps in plan.script.items()}

    def decide(self, endpoint: str) -> FaultKind | None:
        """The fault for the next request to ``endpoint`` (``None``: serve it normally)."""
        draw = self._random.random()  # always exactly one draw per request
        steps = self._script.get(endpoint)
        if steps:
            return steps.pop()
        rate = self._rates[endpoint]
        if draw >= rate:
            return None
        position = draw / rate  # uniform in [0, 1) again, reused to pick the kind
        for kind, bound in zip(self._kinds, self._cumulative, strict=True):
            if position < bound:
                return kind
        return self._kinds[-1]  # pragma: no cover - position < 1.0 == last bound
