"""Seeded fault injection: which requests fail, and how.

A :class:`FaultPlan` is a frozen description (rates, kinds, seed, delays, scripts). Each
running emulator turns it into a :class:`FaultSequence`, which draws **exactly one** number
from a seeded :class:`random.Random` per request, in arrival order, and maps it to a decision.
So the same seed and the same order of requests give the same faults, whatever the outcome of
each request (an answer, a refusal, a 401) - which is what makes a failing run replayable.

The kinds and what the client sees:

==========================  ==============================================  ==========
kind                        what the emulator does                          applied?
==========================  ==============================================  ==========
``RESET_BEFORE_COMMIT``     resets the TCP connection (RST)                 no
``DROP_AFTER_COMMIT``       applies, then closes without answering          yes
``HTTP_500``                applies, then answers 500                       yes
``HTTP_503``                answers 503 (with ``Retry-After``)              no
``HTTP_429``                answers 429 with ``Retry-After``                no
``SLOW``                    sleeps ``slow_seconds``, then serves            as usual
``HANG``                    holds the request until the test releases it    after release
``HTTP_401``                answers 401 ``AuthenticationTokenInvalid``      no
                            (the access token is refused)
``RAW_ANSWER``              applies, then answers ``raw_answer`` as given   yes
``OVERSIZED``               applies, then streams a 200 body of             yes
                            ``oversize_bytes`` bytes, chunked (no
                            ``Content-Length``)
==========================  ==============================================  ==========

``DROP_AFTER_COMMIT`` and ``HTTP_500`` are the dangerous ones: the change is made but the
client cannot know it, so only an idempotency key saves it from applying twice. A random plan
draws from :data:`DEFAULT_KINDS` (the first six) unless ``kinds`` names others: a ``HANG``
drawn at random would stall a load test for good.

A *script* (``FaultPlan(script={"consume": [FaultKind.HTTP_503, None]})``) forces the first
decisions of an endpoint, for tests that need one exact scenario; a step may also be a
:class:`RawAnswer` (that exact answer, once). ``by_key`` forces a kind for every request that
carries one idempotency key. Random draws take over otherwise: a forced decision still
consumes its random draw, so scripts never shift the seeded sequence.

Endpoint names are registered with the emulator's routes (:func:`register_endpoint`), so a
plan can name an endpoint added later; a plan naming an unknown one is refused.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from store_async.emulator.wire import canonical_guid
from store_async.errors import ValidationError

__all__ = [
    "DEFAULT_KINDS",
    "ENDPOINTS",
    "FaultKind",
    "FaultPlan",
    "FaultSequence",
    "RawAnswer",
    "known_endpoints",
    "register_endpoint",
]

ENDPOINTS: Final = ("query", "consume", "grant", "renew", "offline_license", "token")
"""The built-in endpoint names (more are registered with their routes: :func:`known_endpoints`)."""

# name -> whether the plan's ``rate`` applies to it (``False``: only when named in ``rates``).
_REGISTRY: dict[str, bool] = {name: name != "token" for name in ENDPOINTS}


def register_endpoint(name: str, *, faulted_by_default: bool = True) -> None:
    """Make ``name`` an endpoint that plans may name (called when a route is declared).

    :param name: the endpoint name used in rates, scripts and the emulator's counters.
    :param faulted_by_default: whether ``FaultPlan.rate`` applies to it; ``False`` for
        endpoints that are not the Store's (Entra ID's ``token``), faulted only when named in
        ``rates``.
    :raises ValidationError: when the name is empty or already registered differently.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"an endpoint name must be a non-empty string, got {name!r}")
    known = _REGISTRY.get(name)
    if known is not None and known != faulted_by_default:
        raise ValidationError(f"endpoint {name!r} is already registered with another default")
    _REGISTRY[name] = faulted_by_default


def known_endpoints() -> tuple[str, ...]:
    """Every endpoint name a plan may use, built-in and registered."""
    return tuple(_REGISTRY)


class FaultKind(enum.Enum):
    """One kind of injected failure."""

    RESET_BEFORE_COMMIT = "reset_before_commit"
    DROP_AFTER_COMMIT = "drop_after_commit"
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    SLOW = "slow"
    HANG = "hang"
    HTTP_401 = "http_401"
    RAW_ANSWER = "raw_answer"
    OVERSIZED = "oversized"

    @property
    def applies(self) -> bool:
        """Whether the emulator still applies the request before failing it."""
        return self in _APPLYING


_APPLYING: Final = frozenset(
    {FaultKind.DROP_AFTER_COMMIT, FaultKind.HTTP_500, FaultKind.RAW_ANSWER, FaultKind.OVERSIZED}
)

DEFAULT_KINDS: Final = (
    FaultKind.RESET_BEFORE_COMMIT,
    FaultKind.DROP_AFTER_COMMIT,
    FaultKind.HTTP_500,
    FaultKind.HTTP_503,
    FaultKind.HTTP_429,
    FaultKind.SLOW,
)
"""The kinds a random plan draws when ``kinds`` is not given (equal weights)."""

_DEFAULT_WEIGHTS: Final = MappingProxyType(dict.fromkeys(DEFAULT_KINDS, 1.0))


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An answer given exactly as written: for answers the emulator would never give.

    :param status: the HTTP status (100-599).
    :param headers: headers to send (``Content-Type`` included, if wanted).
    :param body: the body bytes.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not _is_int(self.status) or not 100 <= self.status <= 599:
            raise ValidationError(
                f"RawAnswer.status must be an int in 100..599, got {self.status!r}"
            )
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ValidationError("RawAnswer.headers must be a mapping of str to str")
        if not isinstance(self.body, bytes):
            raise ValidationError(
                f"RawAnswer.body must be bytes, got {type(self.body).__name__} "
                "(encode text, e.g. orjson.dumps(document))"
            )
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


Step = FaultKind | RawAnswer | None
"""One decision: a kind, an exact answer, or ``None`` (serve normally)."""


# -- argument checks (each message says what to pass instead) -------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(f"{name} must be finite, got {value!r}")
    return number


def _rate(value: object, name: str) -> float:
    rate = _number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise ValidationError(f"{name} must be within [0, 1] (a probability), got {value!r}")
    return rate


def _seconds(value: object, name: str) -> float:
    seconds = _number(value, name)
    if seconds < 0:
        raise ValidationError(
            f"retry_after and slow_seconds must be >= 0 seconds, got {name}={value!r}"
        )
    return seconds


def _mapping(value: object, name: str, example: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{name} must be a mapping like {example}, got {type(value).__name__}"
        )
    return value


def _endpoint(name: object, where: str) -> str:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValidationError(
            f"unknown endpoint {name!r} in {where}; known: {', '.join(known_endpoints())}"
        )
    return name


def _kind(value: object, where: str) -> FaultKind:
    if isinstance(value, FaultKind):
        return value
    if isinstance(value, str):
        try:
            return FaultKind(value.lower())
        except ValueError:
            pass
    names = ", ".join(kind.name for kind in FaultKind)
    raise ValidationError(f"{where}: {value!r} is not a FaultKind; use one of {names}")


def _step(value: object, where: str) -> Step:
    if value is None or isinstance(value, RawAnswer):
        return value
    return _kind(value, f"{where} (a step is a FaultKind, a RawAnswer or None)")


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What to break, how often, and with which seed.

    :param rate: the fault probability of every Store endpoint (every registered endpoint
        but Entra ID's ``token``), within [0, 1].
    :param rates: per-endpoint probabilities that override ``rate``; ``token`` is faulted
        only when named here (azure-identity's own retries would hide most of it otherwise).
    :param kinds: weights of the kinds drawn for a faulted request, a mapping such as
        ``{FaultKind.HTTP_503: 3, FaultKind.HTTP_429: 1}``; :data:`DEFAULT_KINDS` with equal
        weights by default.
    :param seed: the seed of the draws; ``None`` picks one at start, exposed as the
        emulator's ``fault_seed`` so a run can be replayed.
    :param retry_after: seconds announced in ``Retry-After`` with 429 and 503 (kept small so
        tests never stall).
    :param retry_after_date: send ``Retry-After`` as an HTTP-date (``retry_after`` seconds
        from the answer, whole seconds) instead of a number of seconds.
    :param slow_seconds: the delay of a ``SLOW`` answer.
    :param script: per endpoint, the first decisions, in order (``FaultKind``,
        :class:`RawAnswer` or ``None``).
    :param by_key: a kind forced on every request that carries this idempotency key
        (``trackingId``, ``transactionId``, ``orderId``), e.g. an order whose answers are
        always lost.
    :param raw_answer: the answer of a ``RAW_ANSWER`` decision.
    :param oversize_bytes: the body size of an ``OVERSIZED`` decision.
    :raises ValidationError: for any argument of the wrong type or out of range; the message
        says what to pass instead.
    """

    rate: float = 0.0
    rates: Mapping[str, float] = field(default_factory=dict)
    kinds: Mapping[FaultKind, float] = field(default_factory=lambda: _DEFAULT_WEIGHTS)
    seed: int | None = None
    retry_after: float = 0.0
    retry_after_date: bool = False
    slow_seconds: float = 0.02
    script: Mapping[str, Sequence[Step]] = field(default_factory=dict)
    by_key: Mapping[str, FaultKind] = field(default_factory=dict)
    raw_answer: RawAnswer | None = None
    oversize_bytes: int = 20 * 1024 * 1024

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "rate", _rate(self.rate, "fault rate"))
        rates = _mapping(self.rates, "rates", '{"consume": 0.1}')
        put(
            self,
            "rates",
            MappingProxyType(
                {
                    _endpoint(k, "fault rates"): _rate(v, f"fault rate for {k!r}")
                    for k, v in rates.items()
                }
            ),
        )
        if isinstance(self.kinds, list | tuple | set | frozenset):
            raise ValidationError(
                "kinds must be a mapping of FaultKind to weight, not a "
                f"{type(self.kinds).__name__}: write dict.fromkeys([...], 1.0) for equal weights"
            )
        kinds = _mapping(self.kinds, "kinds", "{FaultKind.HTTP_503: 1.0}")
        weights: dict[FaultKind, float] = {}
        for key, weight in kinds.items():
            kind = _kind(key, "kinds")
            weights[kind] = _number(weight, f"the weight of {kind.name}")
            if weights[kind] < 0:
                raise ValidationError(
                    f"fault kind weights must be >= 0, got {weight!r} for {kind.name}"
                )
        if not any(weights.values()):
            raise ValidationError("fault kind weights must be >= 0 with at least one > 0")
        put(self, "kinds", MappingProxyType(weights))
        if self.seed is not None and not _is_int(self.seed):
            raise ValidationError(f"seed must be an int or None, got {self.seed!r}")
        put(self, "retry_after", _seconds(self.retry_after, "retry_after"))
        put(self, "slow_seconds", _seconds(self.slow_seconds, "slow_seconds"))
        if not isinstance(self.retry_after_date, bool):
            raise ValidationError(
                f"retry_after_date must be True or False, got {self.retry_after_date!r}"
            )
        script = _mapping(self.script, "script", '{"consume": [FaultKind.HTTP_503, None]}')
        steps: dict[str, tuple[Step, ...]] = {}
        for name, sequence in script.items():
            where = f"script[{name!r}]"
            _endpoint(name, "fault script")
            if isinstance(sequence, str | bytes) or not isinstance(sequence, Sequence):
                raise ValidationError(f"{where} must be a list of steps, got {sequence!r}")
            steps[name] = tuple(_step(step, where) for step in sequence)
        put(self, "script", MappingProxyType(steps))
        by_key = _mapping(self.by_key, "by_key", '{"<tracking id>": FaultKind.DROP_AFTER_COMMIT}')
        forced: dict[str, FaultKind] = {}
        for key, kind in by_key.items():
            if not isinstance(key, str) or not key:
                raise ValidationError(f"by_key keys must be idempotency keys (str), got {key!r}")
            forced[canonical_guid(key) or key] = _kind(kind, f"by_key[{key!r}]")
        put(self, "by_key", MappingProxyType(forced))
        if self.raw_answer is not None and not isinstance(self.raw_answer, RawAnswer):
            raise ValidationError(
                f"raw_answer must be a RawAnswer(status, headers, body), got {self.raw_answer!r}"
            )
        if not _is_int(self.oversize_bytes) or self.oversize_bytes <= 0:
            raise ValidationError(f"oversize_bytes must be an int > 0, got {self.oversize_bytes!r}")
        drawn = weights.get(FaultKind.RAW_ANSWER, 0) > 0
        forced_raw = FaultKind.RAW_ANSWER in forced.values() or any(
            FaultKind.RAW_ANSWER in sequence for sequence in steps.values()
        )
        if (drawn or forced_raw) and self.raw_answer is None:
            raise ValidationError("a plan that can give RAW_ANSWER needs raw_answer=RawAnswer(...)")

    @classmethod
    def none(cls) -> FaultPlan:
        """No faults at all."""
        return cls()

    @classmethod
    def always(cls, kind: FaultKind, **options: Any) -> FaultPlan:
        """Every request to every Store endpoint gets ``kind`` (``options``: the other
        fields, e.g. ``retry_after=20``)."""
        return cls(rate=1.0, kinds={_kind(kind, "always"): 1.0}, **options)

    def rate_for(self, endpoint: str) -> float:
        """The fault probability of one request to ``endpoint``."""
        if endpoint in self.rates:
            return self.rates[endpoint]
        return self.rate if _REGISTRY.get(endpoint, True) else 0.0

    def sequence(self) -> FaultSequence:
        """A fresh decision sequence (a new seeded generator) for one emulator run."""
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(2**32)
        return FaultSequence(self, seed)


class FaultSequence:
    """The running decision maker of one emulator: one random draw per request."""

    __slots__ = ("_by_key", "_cumulative", "_kinds", "_random", "_rates", "_script", "plan", "seed")

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self.seed = seed
        self._random = random.Random(seed)
        self._rates: dict[str, float] = {}
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
        self._by_key = plan.by_key

    @property
    def wants_keys(self) -> bool:
        """Whether decisions depend on the request's idempotency key (``by_key``)."""
        return bool(self._by_key)

    def decide(self, endpoint: str, key: str | None = None) -> Step:
        """The fault for the next request to ``endpoint`` (``None``: serve it normally).

        :param endpoint: a registered endpoint name.
        :param key: the request's idempotency key (GUIDs in canonical form), when ``by_key``
            is used.
        """
        draw = self._random.random()  # always exactly one draw per request
        if key is not None and self._by_key:
            forced = self._by_key.get(key)
            if forced is not None:
                return forced
        steps = self._script.get(endpoint)
        if steps:
            return steps.pop()
        rate = self._rates.get(endpoint)
        if rate is None:  # endpoints are looked up once; new routes may appear at any time
            rate = self._rates[endpoint] = self.plan.rate_for(endpoint)
        if draw >= rate:
            return None
        position = draw / rate  # uniform in [0, 1) again, reused to pick the kind
        for kind, bound in zip(self._kinds, self._cumulative, strict=True):
            if position < bound:
                return kind
        return self._kinds[-1]  # pragma: no cover - position < 1.0 == last bound
