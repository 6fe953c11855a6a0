"""UserRate / UserPacer / user_of: the sliding-window guarantee, parks, memory, key users."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_async.emulator.keys import StoreIdKeys
from store_async.errors import ValidationError
from store_async.pacing import STORE_USER_RATE, UserPacer, UserRate, user_of


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- UserRate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ops", "seconds"),
    [("200/300", 200, 300.0), (" 20 / 2 ", 20, 2.0), ("1/0.5", 1, 0.5), ("5/.25", 5, 0.25)],
)
def test_parse_reads_ops_and_seconds(text: str, ops: int, seconds: float) -> None:
    assert UserRate.parse(text) == UserRate(ops, seconds)


@pytest.mark.parametrize(
    "text", ["", "200", "200/", "/300", "a/b", "200/300/1", "-1/3", "2e3/1", "1/inf", "1/nan"]
)
def test_parse_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValidationError, match="OPS/SECONDS"):
        UserRate.parse(text)


@pytest.mark.parametrize("text", ["0/300", "200/0", "100001/1", "1/0.0"])
def test_parse_refuses_out_of_range(text: str) -> None:
    with pytest.raises(ValidationError, match=r"UserRate\.(ops|seconds)"):
        UserRate.parse(text)


def test_parse_refuses_a_non_string() -> None:
    with pytest.raises(ValidationError, match="not int"):
        UserRate.parse(200)  # type: ignore[arg-type]


def test_rate_shows_as_parsed_and_the_store_default() -> None:
    assert str(UserRate.parse("20/2")) == "20/2"
    assert UserRate(200, 300.0) == STORE_USER_RATE
    with pytest.raises(ValidationError):
        UserRate(True, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        UserPacer("20/2")  # type: ignore[arg-type]


# -- UserPacer -----------------------------------------------------------------------------


def test_a_full_window_waits_for_its_oldest_send() -> None:
    clock = FakeClock()
    pacer = UserPacer(UserRate(3, 10.0), clock=clock)
    for offset in (0.0, 1.0, 2.0):
        clock.now = 1000.0 + offset
        assert pacer.delay("u") == 0.0
        pacer.record("u")
    assert pacer.delay("u") == pytest.approx(8.0)  # the send at 1000 leaves at 1010
    assert pacer.delay("other") == 0.0  # users are independent
    clock.now = 1010.0
    assert pacer.delay("u") == 0.0
    pacer.record("u")
    assert pacer.delay("u") == pytest.approx(1.0)  # now the send at 1001 is the oldest


def test_park_holds_a_user_until_retry_after_and_never_shortens() -> None:
    clock = FakeClock()
    pacer = UserPacer(UserRate(100, 10.0), clock=clock)
    pacer.park("u", 5.0)
    assert pacer.delay("u") == pytest.approx(5.0)
    pacer.park("u", 1.0)
    assert pacer.delay("u") == pytest.approx(5.0)
    pacer.park("u", 0.0)
    pacer.park("u", float("nan"))
    assert pacer.delay("u") == pytest.approx(5.0)
    clock.now += 5.0
    assert pacer.delay("u") == 0.0


def test_a_token_bucket_would_allow_twice_the_rate_in_one_window() -> None:
    """Why a sliding-window log: the bucket's burst plus its refill is what the Store punishes."""
    ops, seconds = 20, 2.0
    # A full bucket spent at t=1, then a send whenever a token has refilled (every 0.1 s).
    moments = [1.0] * ops + [round(1.0 + 0.1 * step, 1) for step in range(1, 20)]
    tokens, last, sends = float(ops), 0.0, []
    for now in moments:
        tokens = min(ops, tokens + (now - last) * ops / seconds)
        last = now
        if tokens >= 1 - 1e-9:
            tokens -= 1
            sends.append(now)
    in_one_window = [t for t in sends if 0.95 < t <= 2.95]
    assert len(in_one_window) == 2 * ops - 1  # 39 sends within 2 s: the Store would answer 429
    clock = FakeClock(0.0)
    pacer = UserPacer(UserRate(ops, seconds), clock=clock)
    allowed = []
    for now in moments:
        clock.now = now
        if pacer.delay("u") == 0.0:
            pacer.record("u")
            allowed.append(now)
    assert allowed == [1.0] * ops  # nothing more until t=3.0


@settings(max_examples=300, deadline=None)
@given(
    ops=st.integers(1, 6),
    seconds=st.sampled_from([0.5, 1.0, 3.0]),
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 2.0, allow_nan=False),  # time passing
            st.integers(0, 2),  # which user
            st.sampled_from(["send", "send", "send", "park", "resend", "answer"]),
            st.floats(0.0, 4.0, allow_nan=False),  # a park's Retry-After
        ),
        max_size=120,
    ),
)
def test_no_span_of_seconds_holds_more_than_ops_paced_sends(
    ops: int, seconds: float, steps: list[tuple[float, int, str, float]]
) -> None:
    """Whatever the pattern, a sender that obeys ``delay`` never makes a span of ``seconds``
    hold more than ``ops`` sends of one user, each counted from its answer once answered (the
    Store counts a call on arrival, at the latest when it answers); a park holds the user until
    it ends; a forced resend (recorded though not allowed) only delays what follows."""
    clock = FakeClock(0.0)
    pacer = UserPacer(UserRate(ops, seconds), clock=clock)
    counted: dict[int, list[float]] = defaultdict(list)  # when each send counts, per user
    unanswered: dict[int, list[float]] = defaultdict(list)
    parked_until: dict[int, float] = defaultdict(float)
    for advance, user, action, retry_after in steps:
        clock.now += advance
        name = f"user-{user}"
        if action == "park":
            pacer.park(name, retry_after)
            if retry_after > 0:
                parked_until[user] = max(parked_until[user], clock.now + retry_after)
        elif action == "answer":
            if unanswered[user]:
                stamp = unanswered[user].pop(0)
                pacer.answered(name, stamp)
                counted[user].remove(stamp)
                counted[user].append(clock.now)
        elif action == "resend":
            counted[user].append(pacer.record(name))
        elif pacer.delay(name) == 0.0:
            assert clock.now >= parked_until[user]
            in_window = [t for t in counted[user] if clock.now - t < seconds]
            assert len(in_window) < ops, (user, clock.now, in_window)
            stamp = pacer.record(name)
            assert stamp == clock.now
            counted[user].append(stamp)
            unanswered[user].append(stamp)


def test_an_answer_restarts_the_count_of_its_send() -> None:
    clock = FakeClock(0.0)
    pacer = UserPacer(UserRate(2, 10.0), clock=clock)
    first = pacer.record("u")
    clock.now = 1.0
    pacer.record("u")
    assert pacer.delay("u") == pytest.approx(9.0)
    clock.now = 3.0  # the first send's answer arrives: the Store may have counted it just now
    pacer.answered("u", first)
    assert pacer.delay("u") == pytest.approx(8.0)  # now the send at 1.0 is the oldest
    clock.now = 10.5
    assert pacer.delay("u") == pytest.approx(0.5)
    clock.now = 11.0
    assert pacer.delay("u") == 0.0
    pacer.record("u")  # the send at 1.0 leaves the log
    assert pacer.delay("u") == pytest.approx(2.0)  # the one counted from 3.0 is the oldest
    pacer.answered("u", first)  # out of the log: counted from its answer anyway
    assert pacer.delay("u") == pytest.approx(10.0)


@settings(max_examples=100, deadline=None)
@given(
    ops=st.integers(1, 5),
    gaps=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40),
)
def test_delay_is_exact_so_a_waiting_sender_loses_no_time(ops: int, gaps: list[float]) -> None:
    clock = FakeClock(0.0)
    pacer = UserPacer(UserRate(ops, 2.0), clock=clock)
    for gap in gaps:
        clock.now += gap
        wait = pacer.delay("u")
        if wait > 0:
            clock.now += wait
            assert pacer.delay("u") <= 1e-9  # rounding may leave an ulp
        pacer.record("u")


def test_users_with_an_empty_window_are_forgotten() -> None:
    clock = FakeClock()
    pacer = UserPacer(UserRate(2, 10.0), clock=clock)
    for batch in range(20):
        for number in range(1000):
            pacer.record(f"user-{batch}-{number}")
        clock.now += 11.0  # every window so far is empty now
    assert len(pacer) <= 2048  # not 20,000
    pacer.park("parked", 1000.0)
    for number in range(3000):
        pacer.record(f"late-{number}")
    clock.now += 11.0
    for number in range(3000):
        pacer.record(f"later-{number}")
    assert pacer.delay("parked") > 0  # a pending park is remembered through sweeps


def test_pacer_uses_the_monotonic_clock_by_default() -> None:
    pacer = UserPacer(UserRate(1, 60.0))
    before = time.monotonic()
    pacer.record("u")
    assert 59.0 < pacer.delay("u") <= 60.0 + (time.monotonic() - before)


# -- user_of -------------------------------------------------------------------------------


def test_user_of_reads_the_user_claim_of_a_store_id_key() -> None:
    keys = StoreIdKeys()
    first = keys.mint("emu-user", "collections", client_id="app", publisher_user_id="pub-7")
    second = keys.mint("emu-user", "collections", client_id="app", publisher_user_id="pub-7")
    assert first != second
    assert user_of(first) == user_of(second) == "pub-7"  # two keys, one user


def test_user_of_keeps_opaque_values() -> None:
    assert user_of("user-1") == "user-1"
    assert user_of("john.doe.smith") == "john.doe.smith"
