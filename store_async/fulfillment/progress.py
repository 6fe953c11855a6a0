"""A live progress bar for a fulfillment run: settled / total, rate, done / pending / failed.

The bar reads the fulfiller's counters a few times a second from its own task, so the hot
path pays nothing per row. The total is the input's line count, taken in a thread while the
run starts (blank lines make it a slight over-estimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

from store_async.fulfillment.report import FulfillmentStats

__all__ = ["ProgressBar", "count_lines"]


def count_lines(path: str | os.PathLike[str]) -> int:
    """Lines in a file (a last line without a newline counts), read in 1 MiB blocks."""
    count, last = 0, b"\n"
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class ProgressBar:
    """``async with ProgressBar(lambda: fulfiller.stats, input_path) as bar:`` draws on stderr.

    ``enabled=None`` draws only when the stream is a terminal. ``paced`` adds the users parked
    by per-user pacing and the 429s seen. :meth:`write` prints a line
    above the bar without garbling it.
    """

    def __init__(
        self,
        stats: Callable[[], FulfillmentStats],
        input_path: str | os.PathLike[str] | None = None,
        *,
        file: IO[str] | None = None,
        enabled: bool | None = None,
        interval: float = 0.25,
        paced: bool = False,
    ) -> None:
        self._stats = stats
        self._input_path = input_path
        self._file = file or sys.stderr
        self._enabled = self._file.isatty() if enabled is None else enabled
        self._interval = interval
        self._paced = paced
        self._bar: tqdm[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self._file)
        else:
            print(text, file=self._file, flush=True)

    async def __aenter__(self) -> ProgressBar:
        if self._enabled:
            self._bar = tqdm(
                total=None, unit=" lines", file=self._file, dynamic_ncols=True, smoothing=0.1
            )
            self._tasks = [asyncio.create_task(self._refresh())]
            if self._input_path is not None:
                self._tasks.append(asyncio.create_task(self._count(self._input_path)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._bar is not None:
            self._draw()
            self._bar.close()
            self._bar = None

    async def _count(self, path: str | os.PathLike[str]) -> None:
        with contextlib.suppress(OSError):
            total = await asyncio.to_thread(count_lines, path)
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._draw()

    def _draw(self) -> None:
        if self._bar is None:
            return
        stats = self._stats()
        self._bar.update(stats.settled - self._bar.n)
        # Formatted here: tqdm's own number format turns 20000 into "2e+4".
        text = (
            f"done={stats.done + stats.already_done}, pending={stats.pending}, "
            f"failed={stats.failed + stats.already_failed}, rejected={stats.rejected}, "
            f"in_flight={stats.in_flight}"
        )
        if self._paced:
            text += f", parked={stats.parked_users}, 429s={stats.throttled}"
        self._bar.set_postfix_str(text, refresh=True)
