"""Issue 12's engine core: call and attempt events, MS-CV on every request, per-call headers=
and client_request_id=, hooks that fail safely, no secret in events or logs."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sys
from collections import defaultdict

import attrs
import orjson
import pytest

from store_async import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
    ClientHooks,
    ConsumeRequest,
    FailureKind,
    MockRequest,
    MockResponse,
    MockTransport,
    OutcomeUnknownError,
    QueryRequest,
    RetryPolicy,
    ServiceUnavailableError,
    StaticTokenCredential,
    StoreClient,
    StoreError,
    TokenCache,
    TransportError,
    UserIdentity,
    ValidationError,
    combine_hooks,
)
from store_async.emulator import FaultKind, FaultPlan, RawAnswer
from store_async.emulator.faults import DEFAULT_KINDS
from tests.support.clock import FakeClock
from tests.support.credentials import GOOD_TOKEN, CountingCredential
from tests.support.emulator import client_for, emulator

CV_BASE = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]")


def query(user: UserIdentity) -> QueryRequest:
    return QueryRequest(beneficiaries=(user,), product_types=["Durable"])


class Recorder:
    """Every event of every kind, in order."""

    def __init__(self) -> None:
        self.calls: list[CallStarted] = []
        self.ends: list[CallFinished] = []
        self.attempts: list[AttemptStarted] = []
        self.attempt_ends: list[AttemptFinished] = []
        self.hooks = ClientHooks(
            on_call_start=self.calls.append,
            on_call_end=self.ends.append,
            on_attempt_start=self.attempts.append,
            on_attempt_end=self.attempt_ends.append,
        )

    def everything(self) -> list[object]:
        return [*self.calls, *self.ends, *self.attempts, *self.attempt_ends]


async def consume_all(store: object, requests: list[ConsumeRequest]) -> list[object]:
    async def one(request: ConsumeRequest) -> object:
        try:
            return await store.consume(request)  # type: ignore[attr-defined]
        except StoreError as error:
            return error

    return list(await asyncio.gather(*(one(r) for r in requests)))


# -- the Show: 300 consumes at 25 % faults ------------------------------------------------------


async def test_300_consumes_at_25_percent_faults_events_match_what_the_server_received(
    beneficiary: UserIdentity,
) -> None:
    record = Recorder()
    plan = FaultPlan(rate=0.25, seed=1207, retry_after=0.0, slow_seconds=0.001)
    requests = [ConsumeRequest.for_item(beneficiary, f"item-{n}") for n in range(300)]
    async with (
        emulator(plan) as fake,
        client_for(fake, hooks=record.hooks, sleep=FakeClock().sleep) as store,
    ):
        outcomes = await consume_all(store, requests)
    logged = fake.request_log.of("consume")
    assert fake.stats.fault_log  # faults were injected
    # One call event pair per call, one attempt event pair per request the server received.
    assert len(record.calls) == len(record.ends) == 300
    assert len({e.call_id for e in record.calls}) == 300
    assert len(record.attempts) == len(record.attempt_ends) == len(logged) > 300
    assert sum(e.attempts for e in record.ends) == len(logged)
    # Every request carried MS-CV: one base per call, .1 .2 ... per attempt, as the events say.
    by_base: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for entry in logged:
        assert entry.cv is not None
        base, _, number = entry.cv.rpartition(".")
        by_base[base].append((int(number), entry.key))
    bases = {e.cv_base for e in record.calls}
    assert set(by_base) == bases
    assert len(bases) == 300
    assert all(CV_BASE.fullmatch(base) for base in bases)
    for entries in by_base.values():
        assert sorted(n for n, _ in entries) == list(range(1, len(entries) + 1))
        assert len({key for _, key in entries}) == 1  # one base, one call's tracking id
    assert {e.cv for e in record.attempts} == {entry.cv for entry in logged}
    # Per call: attempts numbered from 1, resend counts right, ids and outcome consistent.
    started = {e.call_id: e for e in record.calls}
    attempts_of: dict[int, list[AttemptStarted]] = defaultdict(list)
    for attempt in record.attempts:
        attempts_of[attempt.call_id].append(attempt)
        call = started[attempt.call_id]
        assert attempt.idempotency_key == call.idempotency_key
        assert attempt.cv == f"{call.cv_base}.{attempt.attempt}"
        assert (attempt.method, attempt.url) == ("POST", f"{fake.url}/v6.0/collections/consume")
        assert (attempt.server_address, attempt.server_port) == ("127.0.0.1", fake.port)
    for end in record.ends:
        mine = attempts_of[end.call_id]
        assert [a.resend_count for a in mine] == list(range(end.attempts))
        assert fake.request_log.sends(end.idempotency_key or "") == end.attempts
    by_key = {r.idempotency_key: outcome for r, outcome in zip(requests, outcomes, strict=True)}
    for end in record.ends:
        outcome = by_key[end.idempotency_key]
        if isinstance(outcome, StoreError):
            assert end.error is outcome
            assert end.outcome == type(outcome).__name__
            assert outcome.cv is not None
            assert outcome.cv.startswith(end.cv_base + ".")
        else:
            assert end.error is None
            assert end.outcome == "ok"
            assert outcome.attempts == end.attempts  # type: ignore[attr-defined]
    for finished in record.attempt_ends:
        if finished.error is not None:
            assert finished.error.cv == finished.cv
            assert finished.outcome == type(finished.error).__name__
        assert finished.retry_budget >= 0.0


async def test_every_request_carries_ms_cv_without_hooks_too(beneficiary: UserIdentity) -> None:
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503, None, FaultKind.HTTP_503]})
    async with emulator(plan) as fake, client_for(fake, sleep=FakeClock().sleep) as store:
        first = await store.consume(ConsumeRequest.for_item(beneficiary, "a"))
        second = await store.consume(ConsumeRequest.for_item(beneficiary, "b"))
        await store.query_products(query(beneficiary))
    cvs = [entry.cv for entry in fake.request_log]
    assert (first.attempts, second.attempts) == (2, 2)
    base_a, base_b, base_q = (cv.rpartition(".")[0] for cv in (cvs[0], cvs[2], cvs[4]))  # type: ignore[union-attr]
    assert cvs == [f"{base_a}.1", f"{base_a}.2", f"{base_b}.1", f"{base_b}.2", f"{base_q}.1"]
    assert len({base_a, base_b, base_q}) == 3
    for base in (base_a, base_b, base_q):
        assert CV_BASE.fullmatch(base)
        assert len(base64.b64decode(base + "==")) == 16  # 128 bits, as CV v2 says


async def test_an_error_carries_the_vector_we_sent_and_the_server_s_echo(
    beneficiary: UserIdentity,
) -> None:
    async with (
        emulator(FaultPlan.always(FaultKind.HTTP_500)) as fake,
        client_for(fake, sleep=FakeClock().sleep, retry=RetryPolicy(attempts=2)) as store,
    ):
        with pytest.raises(OutcomeUnknownError) as caught:
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"))
    sent = fake.request_log[1].cv
    assert sent is not None
    assert sent.endswith(".2")
    error = caught.value
    assert (error.cv, error.server_cv) == (sent, f"{sent}.0")  # the emulator extends it
    assert isinstance(error.last_error, ServiceUnavailableError)
    assert (error.last_error.cv, error.last_error.server_cv) == (sent, f"{sent}.0")


async def test_a_not_sent_failure_carries_the_vector_it_would_have_sent(
    beneficiary: UserIdentity,
) -> None:
    def refuse(_request: MockRequest) -> MockResponse:
        raise TransportError("connect refused", kind=FailureKind.NOT_SENT)

    async with StoreClient(
        StaticTokenCredential(GOOD_TOKEN),
        transport=MockTransport(refuse),
        retry=RetryPolicy(attempts=2),
        sleep=FakeClock().sleep,
    ) as store:
        with pytest.raises(TransportError) as caught:
            await store.consume(
                ConsumeRequest.for_item(beneficiary, "i"), client_request_id="tul4NUsfs9Cl7mOf"
            )
    assert (caught.value.cv, caught.value.server_cv) == ("tul4NUsfs9Cl7mOf.2", None)


# -- client_request_id= -------------------------------------------------------------------------


async def test_client_request_id_becomes_the_base_and_is_extended_per_attempt(
    beneficiary: UserIdentity,
) -> None:
    record = Recorder()
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503]})
    async with (
        emulator(plan) as fake,
        client_for(fake, hooks=record.hooks, sleep=FakeClock().sleep) as store,
    ):
        await store.consume(
            ConsumeRequest.for_item(beneficiary, "i"), client_request_id="tul4NUsfs9Cl7mOf.7"
        )
    assert [e.cv for e in fake.request_log] == ["tul4NUsfs9Cl7mOf.7.1", "tul4NUsfs9Cl7mOf.7.2"]
    (call,) = record.calls
    assert (call.cv_base, call.client_request_id) == ("tul4NUsfs9Cl7mOf.7",) * 2
    assert record.ends[0].client_request_id == "tul4NUsfs9Cl7mOf.7"


async def test_a_listing_extends_the_client_request_id_per_page(beneficiary: UserIdentity) -> None:
    pages = {None: "p2", "p2": "p3", "p3": None}
    seen: list[str] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request.headers["MS-CV"])
        if len(seen) == 2:  # the second page's first attempt: a 503, resent
            return MockResponse(503)
        token = pages[request.json().get("continuationToken")]
        return MockResponse(200, json={"items": [], "continuationToken": token})

    async with StoreClient(
        StaticTokenCredential(GOOD_TOKEN),
        transport=MockTransport(handler),
        sleep=FakeClock().sleep,
    ) as store:
        listing = store.list_products(
            query(beneficiary),
            client_request_id="AAAAAAAAAAAAAAAAAAAAAA",
        )
        assert [item async for item in listing] == []
    base = "AAAAAAAAAAAAAAAAAAAAAA"
    assert seen == [f"{base}.1.1", f"{base}.2.1", f"{base}.2.2", f"{base}.3.1"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "short",
        "tul4NUsfs9Cl7mOf-",  # not the CV alphabet
        "tul4NUsfs9Cl7mO",  # 15 characters
        "tul4NUsfs9Cl7mOf.x",  # an element that is not a number
        "tul4NUsfs9Cl7mOf." + ".".join(["1234567890"] * 10),  # over 120 characters
        "tul4NUsfs9Cl7mOf\r\nX-Injected: 1",
        42,
    ],
)
async def test_a_bad_client_request_id_is_refused_before_anything_is_sent(
    beneficiary: UserIdentity, bad: object
) -> None:
    async with emulator() as fake, client_for(fake) as store:
        with pytest.raises(ValidationError, match="client_request_id must be"):
            await store.consume(
                ConsumeRequest.for_item(beneficiary, "i"),
                client_request_id=bad,  # type: ignore[arg-type]
            )
        with pytest.raises(ValidationError, match="client_request_id must be"):
            store.list_products(
                query(beneficiary),
                client_request_id=bad,
            )  # type: ignore[arg-type]
    assert len(fake.request_log) == 0


# -- headers= -----------------------------------------------------------------------------------


async def test_per_call_headers_go_on_every_attempt_beside_ours(beneficiary: UserIdentity) -> None:
    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503]})
    async with emulator(plan) as fake, client_for(fake, sleep=FakeClock().sleep) as store:
        await store.consume(
            ConsumeRequest.for_item(beneficiary, "i"),
            headers={
                "X-Tenant": "contoso",
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            },
        )
    first, second = fake.request_log
    for entry in (first, second):
        assert entry.headers["X-Tenant"] == "contoso"
        assert entry.headers["traceparent"].startswith("00-aaaa")
        assert entry.bearer == GOOD_TOKEN
        assert entry.headers["Content-Type"] == "application/json"
        assert len(entry.headers.getall("MS-CV")) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer stolen"},
        {"authorization": "Bearer stolen"},
        {"MS-CV": "x.1"},
        {"Content-Type": "text/plain"},
        {"User-Agent": "me"},
        {"Host": "elsewhere"},
        {"X-Bad": "line\r\nbreak"},
        {"Bad Name": "x"},
        {"X-Number": 3},
        ["X-Not-A-Mapping"],
    ],
)
async def test_per_call_headers_never_override_ours(
    beneficiary: UserIdentity, headers: object
) -> None:
    async with emulator() as fake, client_for(fake) as store:
        with pytest.raises(ValidationError, match="headers"):
            await store.consume(ConsumeRequest.for_item(beneficiary, "i"), headers=headers)  # type: ignore[arg-type]
    assert len(fake.request_log) == 0


async def test_a_start_hook_adds_headers_but_cannot_touch_ours(beneficiary: UserIdentity) -> None:
    def add(event: AttemptStarted) -> None:
        event.headers["traceparent"] = f"00-{'c' * 32}-{event.attempt:016x}-01"
        event.headers["Authorization"] = "Bearer hijacked"
        event.headers["MS-CV"] = "hijacked.1"
        event.headers["X-Tenant"] = "from-hook"
        event.headers["X-Bad"] = "a\nb"

    plan = FaultPlan(script={"consume": [FaultKind.HTTP_503]})
    async with (
        emulator(plan) as fake,
        client_for(fake, hooks=ClientHooks(on_attempt_start=add), sleep=FakeClock().sleep) as store,
    ):
        await store.consume(ConsumeRequest.for_item(beneficiary, "i"), headers={"X-Tenant": "me"})
    for number, entry in enumerate(fake.request_log, start=1):
        assert entry.headers["traceparent"] == f"00-{'c' * 32}-{number:016x}-01"
        assert entry.bearer == GOOD_TOKEN
        assert entry.cv is not None
        assert entry.cv.endswith(f".{number}")
        assert entry.headers.getall("X-Tenant") == ["from-hook"]  # type: ignore[attr-defined]
        assert "X-Bad" not in entry.headers


# -- call end on every path ---------------------------------------------------------------------


async def test_call_end_fires_on_cancellation_with_its_attempt_end(
    beneficiary: UserIdentity,
) -> None:
    record = Recorder()
    async with (
        emulator(FaultPlan.always(FaultKind.HANG)) as fake,
        client_for(fake, hooks=record.hooks) as store,
    ):
        call = asyncio.create_task(store.consume(ConsumeRequest.for_item(beneficiary, "i")))
        await fake.wait_for_hanging(1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    (end,) = record.ends
    assert (end.outcome, end.cancelled, end.error, end.attempts) == (
        "CancelledError",
        True,
        None,
        1,
    )
    (attempt_end,) = record.attempt_ends
    assert (attempt_end.outcome, attempt_end.status, attempt_end.interrupted) == (
        "CancelledError",
        None,
        "CancelledError",
    )


async def test_a_call_that_fails_before_any_attempt_reports_zero_attempts(
    beneficiary: UserIdentity,
) -> None:
    record = Recorder()
    clock = FakeClock()
    gate = asyncio.Event()
    credential = CountingCredential(gate=gate, clock=clock)
    async with emulator() as fake:
        cache = TokenCache(credential, clock=clock)
        async with client_for(fake, hooks=record.hooks, clock=clock, sleep=clock.sleep) as store:
            store._tokens = cache
            store._engine._tokens = cache
            call = asyncio.create_task(
                store.consume(ConsumeRequest.for_item(beneficiary, "i"), timeout=5)
            )
            await credential.entered.wait()
            clock.now += 60  # the token arrives after the call's timeout ran out
            gate.set()
            with pytest.raises(TransportError) as caught:
                await call
        await cache.close()
    assert caught.value.kind is FailureKind.NOT_SENT
    (end,) = record.ends
    assert (end.attempts, end.error, end.outcome) == (0, caught.value, "TransportError")
    assert record.attempts == []
    assert record.attempt_ends == []
    assert caught.value.cv == f"{end.cv_base}.1"
    assert len(fake.request_log) == 0


# -- hooks that fail, several hook sets ---------------------------------------------------------


async def test_combined_hooks_run_in_order_and_a_raising_one_is_logged_once(
    beneficiary: UserIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: object) -> None:
        seen.append("broken")
        raise RuntimeError("exporter down: token=" + GOOD_TOKEN)

    first = ClientHooks(on_call_start=broken, on_attempt_end=lambda e: seen.append("a-end-1"))
    second = ClientHooks(
        on_call_start=lambda e: seen.append("start-2"),
        on_attempt_end=lambda e: seen.append("a-end-2"),
    )
    caplog.set_level(logging.DEBUG, logger="store_async")
    async with emulator() as fake, client_for(fake, hooks=[first, None, second]) as store:
        for n in range(3):
            await store.consume(ConsumeRequest.for_item(beneficiary, f"i{n}"))
    assert seen == ["broken", "start-2", "a-end-1", "a-end-2"] * 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "raised RuntimeError (CallStarted); ignored" in warnings[0].getMessage()
    assert GOOD_TOKEN not in caplog.text


def test_combine_hooks_keeps_the_fast_path_when_nothing_is_set() -> None:
    hooks = ClientHooks()
    assert combine_hooks() is None
    assert combine_hooks(None, None) is None
    assert combine_hooks(hooks) is hooks
    with pytest.raises(ValidationError, match="ClientHooks"):
        combine_hooks(hooks, print)  # type: ignore[arg-type]


@pytest.mark.parametrize("hooks", ["hooks", print, 3])
def test_store_client_refuses_hooks_of_another_kind(hooks: object) -> None:
    with pytest.raises(ValidationError, match="hooks must be"):
        StoreClient(StaticTokenCredential(GOOD_TOKEN), hooks=hooks)  # type: ignore[arg-type]


# -- no secret in events or logs ----------------------------------------------------------------


def fragments(token: str, key: str) -> list[str]:
    """The secrets, and pieces of them long enough to matter (a cut echo still leaks)."""
    payload, signature = key.split(".")[1:3]
    return [token, token[-24:], key, payload[:32], payload[-32:], signature[:32], signature[-32:]]


async def test_no_token_or_store_id_key_in_events_or_debug_logs_at_25_percent_faults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Recorder()
    caplog.set_level(logging.DEBUG, logger="store_async")
    plan = FaultPlan(
        rate=0.25,
        seed=25,
        kinds={kind: 1.0 for kind in (*DEFAULT_KINDS, FaultKind.HTTP_401)},
        retry_after=0.0,
        slow_seconds=0.001,
    )
    async with emulator(plan) as fake:
        token = fake.mint_access_token()
        key = fake.mint_store_id_key("user-secret")
        user = UserIdentity(identity_value=key, local_ticket_reference="ref")
        async with StoreClient(
            StaticTokenCredential(token),
            endpoints=fake.endpoints,
            hooks=record.hooks,
            sleep=FakeClock().sleep,
        ) as store:
            requests = [ConsumeRequest.for_item(user, f"item-{n}") for n in range(200)]
            outcomes = await consume_all(store, requests)
            renewed = await store.renew_store_id_key(key, attempts=10)
    assert len(fake.stats.faults_by_kind("consume")) >= 5  # every kind was drawn
    errors = [o for o in outcomes if isinstance(o, StoreError)]
    assert errors  # some calls ended in errors, and their events too
    text = caplog.text + "".join(f"{e!r}{e!s}" for e in [*record.everything(), *errors])
    assert "retrying consume" in caplog.text
    for secret in [*fragments(token, key), renewed.value[-40:]]:
        assert secret not in text


async def test_a_server_echoing_secrets_gets_none_into_events_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing a server echoes (in its error text or its MS-CV header) reaches an event, an
    error (scrubbed on the error path, before any hook sees it) or a log line."""
    record = Recorder()
    caplog.set_level(logging.DEBUG, logger="store_async")
    async with emulator() as fake:
        token = fake.mint_access_token()
        key = fake.mint_store_id_key("user-secret")
        echo = RawAnswer(
            500,
            {"Content-Type": "application/json", "MS-CV": key, "X-Echo": token},
            orjson.dumps({"code": "InternalServerError", "message": f"from {token} for {key}"}),
        )
        plan = FaultPlan(rate=0.25, seed=7, kinds={FaultKind.RAW_ANSWER: 1.0}, raw_answer=echo)
        fake.set_faults(plan)
        user = UserIdentity(identity_value=key, local_ticket_reference="ref")
        async with StoreClient(
            StaticTokenCredential(token),
            endpoints=fake.endpoints,
            hooks=record.hooks,
            sleep=FakeClock().sleep,
        ) as store:
            outcomes = await consume_all(
                store, [ConsumeRequest.for_item(user, f"i{n}") for n in range(60)]
            )
    echoed = [e for e in record.attempt_ends if e.status == 500]
    assert echoed
    assert all(e.server_cv is None and e.error is not None for e in echoed)
    assert all(e.error.server_cv is None for e in echoed if e.error is not None)
    errors = [o for o in outcomes if isinstance(o, StoreError)]
    text = caplog.text + "".join(f"{e!r}{e!s}" for e in [*record.everything(), *errors])
    for event in record.everything():
        for name in attrs.fields_dict(type(event)):
            text += f" {getattr(event, name)!r}"
        error = getattr(event, "error", None)
        if error is not None:
            text += f" {error.message} {error.cv} {error.server_cv} {error.correlation_id}"
            text += f" {error.service_error!r}"
    for secret in fragments(token, key):
        assert secret not in text


# -- a quiet library ----------------------------------------------------------------------------

QUIET_CALLER = """
import asyncio, sys
from store_async import (ClientHooks, ConsumeRequest, Endpoints, RetryPolicy,
    StaticTokenCredential, StoreClient, StoreError, UserIdentity)

def broken(event):
    raise RuntimeError("the application's metrics bug")

async def main(url, token):
    user = UserIdentity(identity_value="user-1", local_ticket_reference="r")
    ok = failed = 0
    async with StoreClient(StaticTokenCredential(token), endpoints=Endpoints.single(url),
                           retry=RetryPolicy(attempts=3, backoff_base=0.001, backoff_cap=0.002),
                           hooks=ClientHooks(on_attempt_end=broken)) as store:
        async def one(n):
            nonlocal ok, failed
            try:
                await store.consume(ConsumeRequest.for_item(user, f"item-{n}"))
                ok += 1
            except StoreError:
                failed += 1          # handled: the caller decides what to log
        await asyncio.gather(*(one(n) for n in range(300)))
    print(ok, failed)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_caller_that_handles_every_error_at_60_percent_faults_sees_nothing_on_stderr() -> (
    None
):
    plan = FaultPlan(rate=0.6, seed=60, retry_after=0.0, slow_seconds=0.001)
    async with emulator(plan, record_requests=False) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            QUIET_CALLER,
            fake.url,
            GOOD_TOKEN,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    ok, failed = map(int, stdout.split())
    assert ok + failed == 300
    assert failed > 10  # errors happened, were raised, and handled
    assert stderr == b""


# -- the vectors themselves ---------------------------------------------------------------------


def test_first_vectors_are_unique_cv_v2_bases_across_the_counter_s_carries() -> None:
    from store_async._cv import first_vectors

    one, other = first_vectors(), first_vectors()
    vectors = [next(one) for _ in range(3 * 256 + 5)]
    assert len(set(vectors)) == len(vectors)
    for vector in vectors:
        base, suffix = vector[:-2], vector[-2:]
        assert suffix == ".1"
        assert CV_BASE.fullmatch(base)
        assert len(base64.b64decode(base + "==", validate=True)) == 16
    # 72 random bits per source: another client's bases share no prefix with these.
    assert next(other)[:12] != vectors[0][:12]
    # Consecutive calls differ in the counter only; the 256th carries into the prefix.
    assert vectors[0][:20] == vectors[255][:20] != vectors[256][:20]


def test_two_echoed_jwts_sharing_their_first_characters_are_both_scrubbed_whole() -> None:
    """A Store ID key and an access token both start ``eyJhbGciOi...``: scrubbing the longer
    one's cut-short forms must not eat the start of the other and leave its rest behind."""
    from store_async._secrets import scrub_text

    header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    token = f"{header}.eyJhdWQiOiJzdG9yZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
    key = f"{header}.eyJ1c2VyIjoidSIsImxvbmdlciI6InBheWxvYWQifQ.a2V5LXNpZ25hdHVyZS1sb25nZXI"
    assert len(key) > len(token)
    text = scrub_text(f"from {token} for {key}", [token, key])
    assert text == "from <redacted> for <redacted>"
    # Cut short by a length limit in the middle of the token (as an error message is).
    cut = f"from {token} for {key}"[: len("from ") + len(token) - 10]
    assert scrub_text(cut, [token, key]) == "from <redacted>"
    assert scrub_text(cut + "...", [token, key]) == "from <redacted>..."
