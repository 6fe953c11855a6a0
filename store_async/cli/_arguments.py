"""Argument types shared by the sub-commands: numbers checked against a range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from store_async.errors import ValidationError
from store_async.pacing import UserRate

__all__ = ["integer", "real", "user_rate"]

N = TypeVar("N", int, float)


def _number(convert: Callable[[str], N], what: str, low: N, high: N | None) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"within {low:g}..{high:g}" if high is not None else f">= {low:g}"
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise argparse.ArgumentTypeError(f"must be {bound}, got {shown}")
        return value

    return parse


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` reading a whole number in ``low..high``."""
    return _number(int, "a whole number", low, high)


def real(low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` reading a finite number in ``low..high``."""
    return _number(float, "a number", low, high)


def user_rate(text: str) -> UserRate | None:
    """An argparse ``type`` reading ``OPS/SECONDS`` (e.g. ``200/300``), or ``off`` (``None``)."""
    if text.strip().lower() == "off":
        return None
    try:
        return UserRate.parse(text)
    except ValidationError as error:
        raise argparse.ArgumentTypeError(error.message) from None
