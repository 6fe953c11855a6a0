"""Argument types shared by the sub-commands: numbers checked against a range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["integer", "real"]


def _within(value: float, low: float, high: float | None) -> str | None:
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        return f"must be within {low:g}..{high:g}" if high is not None else f"must be >= {low:g}"
    return None


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` reading a whole number in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        problem = _within(value, low, high)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {value}")
        return value

    return parse


def real(low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` reading a finite number in ``low..high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        problem = _within(value, low, high)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {value:g}")
        return value

    return parse
