"""Tolerant readings of the services' time strings, for records that keep the raw text.

A .NET ``TimeSpan`` (``trialTimeRemaining``) and dates in examples the docs got wrong must not
cost a whole page: the record keeps the string, and these functions read it or give ``None``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["parse_timespan", "parse_timestamp"]

# [-][d.]hh:mm:ss[.fffffff], as TimeSpan.ToString() writes it ("c" format).
_TIMESPAN: Final = re.compile(
    r"(?P<sign>-)?(?:(?P<days>\d{1,8})\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{2}):(?P<seconds>\d{2})"
    r"(?:\.(?P<fraction>\d{1,7}))?\Z"
)


def parse_timespan(text: str | None) -> timedelta | None:
    """``"09:43:52.8580690"`` or ``"2.09:43:52"`` as a :class:`~datetime.timedelta`; ``None``
    for ``None`` or anything else (7 fractional digits are 100 ns ticks: rounded to µs)."""
    if text is None:
        return None
    match = _TIMESPAN.match(text)
    if match is None:
        return None
    hours, minutes, seconds = int(match["hours"]), int(match["minutes"]), int(match["seconds"])
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    fraction = match["fraction"] or "0"
    ticks = int(fraction.ljust(7, "0"))
    span = timedelta(
        days=int(match["days"] or 0),
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=round(ticks / 10),
    )
    return -span if match["sign"] else span


def parse_timestamp(text: str | None) -> datetime | None:
    """An ISO-8601 date-time (aware; UTC when it has no offset), or ``None`` if it is not one."""
    if text is None or len(text) > 64:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
