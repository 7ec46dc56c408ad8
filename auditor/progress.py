"""Progress bars for long work (rich), with rate and time left; silent when not on a terminal."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import rich.progress

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "gradients") as bar: bar.advance()``.

    Draws only when ``enabled`` is true (default: the stream is a terminal), so it costs
    nothing in a hot loop, in tests or in CI logs; rich redraws at most ten times a second.

    Parameters
    ----------
    total : int
        Units of work (passes, batches, grid points).
    label : str
    enabled : bool, optional
        Draw even when the stream is not a terminal (True), or never (False).
    stream : text stream, optional
        Where to draw (default: stderr, so stdout stays clean for tables and JSON).
    """

    def __init__(self, total: int, label: str, *, enabled: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._bar: rich.progress.Progress | None = None
        self._task: rich.progress.TaskID | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False, refresh_per_second=10)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="")
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            task = self._bar.tasks[0]
            speed = task.speed
            self._bar.update(self._task, advance=n, rate=f"{speed:.1f}/s" if speed else "")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
