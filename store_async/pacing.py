"""Per-user pacing: keep each Store user under the Store's per-user rate limit.

The Store limits each user ({userId; publisherId}) to about 200 operations per 300 s (queries:
100), counted over windows of that length; over it, it answers 429 with ``Retry-After``
(STORE_API.md sections 6 and 10). A :class:`UserPacer` makes sure that **no span of**
``seconds`` **holds more than** ``ops`` **sends** for one user, with a sliding-window log: a user's
last ``ops`` send times. A send is allowed once the oldest of them is ``seconds`` old.

A plain token bucket (capacity ``ops``, refilling ``ops`` per ``seconds``) would not do: it lets
a full bucket go at the end of one window and the refill at the start of the next, ``2 × ops``
sends within one span of ``seconds``, and the Store answers the second half with 429s.

This module does no I/O and keeps no tasks: the caller asks :meth:`UserPacer.delay`, waits (or
parks the work), calls :meth:`UserPacer.record` when it sends and, best,
:meth:`UserPacer.answered` when the answer is in (the Store counts a call on arrival, which may
be well after our send). One pacer serves one client or one fulfiller, on one event loop; it is
not thread-safe.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs

from store_async.errors import InvalidStoreIdKeyError, ValidationError
from store_async.store_id_key import StoreIdKey

__all__ = ["UserPacer", "UserRate", "user_of"]

_RATE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_MAX_OPS: Final = 100_000


def _check_ops(_instance: object, _attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_OPS:
        raise ValidationError(f"UserRate.ops must be an int in 1..{_MAX_OPS}, got {value!r}")


def _check_seconds(_instance: object, _attribute: object, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(f"UserRate.seconds must be a finite number > 0, got {value!r}")


@attrs.frozen
class UserRate:
    """At most ``ops`` sends per user in any span of ``seconds``.

    :param ops: sends allowed per window (1..100,000).
    :param seconds: the window's length, in seconds (> 0).
    :raises ValidationError: out of range or of the wrong type.
    """

    ops: int = attrs.field(validator=_check_ops)
    seconds: float = attrs.field(validator=_check_seconds)

    @classmethod
    def parse(cls, text: str) -> UserRate:
        """Read ``"OPS/SECONDS"``, e.g. ``"200/300"`` (the Store's documented limit).

        :raises ValidationError: the text is not of that form, or out of range.
        """
        if not isinstance(text, str):
            raise ValidationError(
                f"a user rate must be a str 'OPS/SECONDS', not {type(text).__name__}"
            )
        found = _RATE.fullmatch(text)
        if found is None:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise ValidationError(f"a user rate is 'OPS/SECONDS' (e.g. '200/300'), got {shown!r}")
        return cls(int(found[1]), float(found[2]))

    def __str__(self) -> str:
        return f"{self.ops}/{self.seconds:g}"


STORE_USER_RATE: Final = UserRate(200, 300.0)
"""The Store's service-to-service limit per {userId; publisherId} (STORE_API.md section 10)."""


class _Window:
    """One user's sends of the last window (oldest first) and the end of a 429 park."""

    __slots__ = ("parked_until", "sends")

    def __init__(self) -> None:
        self.sends: deque[float] = deque()
        self.parked_until = 0.0


class UserPacer:
    """A sliding-window log per user: no span of ``rate.seconds`` holds more than ``rate.ops``
    sends for one user.

    :param rate: the limit to keep under.
    :param clock: seconds, monotonic (injectable for tests).

    Memory stays bounded: users whose window is empty (no send within ``rate.seconds``, no park
    pending) are forgotten, in sweeps whose cost is spread over the calls.
    """

    __slots__ = ("_clock", "_next_sweep", "_ops", "_seconds", "_users", "rate")

    def __init__(self, rate: UserRate, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(rate, UserRate):
            raise ValidationError(f"UserPacer needs a UserRate, got {type(rate).__name__}")
        self.rate = rate
        self._ops = rate.ops
        self._seconds = rate.seconds
        self._clock = clock
        self._users: dict[str, _Window] = {}
        self._next_sweep = 1024

    def __len__(self) -> int:
        """Users remembered (those with a send in the last window or a pending park)."""
        return len(self._users)

    def delay(self, user: str) -> float:
        """Seconds until a send for ``user`` is allowed (``0.0``: now). Records nothing."""
        window = self._users.get(user)
        if window is None:
            return 0.0
        now = self._clock()
        wait = window.parked_until - now
        sends = window.sends
        if len(sends) >= self._ops:
            # The oldest of the last `ops` sends must have left the window (t - seconds, t].
            # Compared as an age: subtracting close floats is exact, adding them is not.
            age = now - sends[-self._ops]
            if age < self._seconds:
                wait = max(wait, self._seconds - age)
        return wait if wait > 0.0 else 0.0

    def record(self, user: str) -> float:
        """A send for ``user`` happened now (resends count too); returns its time stamp, for
        :meth:`answered`."""
        window = self._users.get(user)
        if window is None:
            if len(self._users) >= self._next_sweep:
                self._sweep()
            window = self._users[user] = _Window()
        now = self._clock()
        sends = window.sends
        while sends and now - sends[0] >= self._seconds:
            sends.popleft()  # out of every future window
        sends.append(now)
        return now

    def answered(self, user: str, stamp: float) -> None:
        """The send recorded at ``stamp`` got its answer (or failed) now: count it from now.

        The Store counts a call when it *arrives*, somewhere between our send and its answer
        (a new connection, a slow network). Counting a send from its answer on is the safe side:
        the next send of the user cannot reach the Store within ``seconds`` of it.
        """
        window = self._users.get(user)
        if window is None:
            if len(self._users) >= self._next_sweep:
                self._sweep()
            window = self._users[user] = _Window()
        sends = window.sends
        with contextlib.suppress(ValueError):  # absent: it had left the window already
            sends.remove(stamp)
        sends.append(self._clock())

    def park(self, user: str, seconds: float) -> None:
        """The Store answered 429 with ``Retry-After: seconds``: no send before now + seconds.

        A shorter park never shortens a longer one already set.
        """
        if not seconds > 0.0 or not math.isfinite(seconds):
            return
        window = self._users.get(user)
        if window is None:
            if len(self._users) >= self._next_sweep:
                self._sweep()
            window = self._users[user] = _Window()
        window.parked_until = max(window.parked_until, self._clock() + seconds)

    def _sweep(self) -> None:
        """Forget users with an empty window; sweep again once the table has doubled."""
        now = self._clock()
        horizon = now - self._seconds
        self._users = {
            user: window
            for user, window in self._users.items()
            if window.parked_until > now or (window.sends and window.sends[-1] > horizon)
        }
        self._next_sweep = max(1024, 2 * len(self._users))


@functools.lru_cache(maxsize=65_536)
def user_of(identity_value: str) -> str:
    """Whom the Store counts a call against: the Store ID key's ``userId`` claim when the value
    parses as one, else the value itself (emulator users, opaque test ids).

    Cached: keys are kilobytes long and the same key repeats over many rows. The result is only
    a dictionary key; a value that is a whole key is a secret and must not be shown.
    """
    try:
        user = StoreIdKey.parse(identity_value).user_id
    except InvalidStoreIdKeyError:
        return identity_value
    return identity_value if user is None else user
