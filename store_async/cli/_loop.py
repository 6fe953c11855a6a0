"""The one place the CLI picks its event loop: ``--loop asyncio|uvloop|auto``.

uvloop (the ``store-async[speed]`` extra) runs the same code with less CPU per call; ``auto``
(the default) uses it when it is installed, plain asyncio otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from store_async.errors import ValidationError

__all__ = ["LOOPS", "add_loop_option", "run"]

T = TypeVar("T")
LOOPS: Final = ("auto", "asyncio", "uvloop")


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop when installed (auto, the default; pip install "
        "'store-async[speed]'), or asyncio",
    )


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``choice`` (None: asyncio's default).

    :raises ValidationError: ``uvloop`` asked for but not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValidationError(
                "--loop uvloop needs uvloop: pip install 'store-async[speed]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """:func:`asyncio.run` on the loop ``choice`` names.

    :raises ValidationError: ``uvloop`` asked for but not installed (``main`` is not started).
    """
    try:
        factory = loop_factory(choice)
    except ValidationError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
