"""A progress bar on standard error when it is a terminal, and nothing at all on a pipe or in a log.

Shown only once the work has run for DELAY seconds, so a quick command
prints exactly what it always did.
"""

from __future__ import annotations

import sys
import time


class bar:
    """`with bar("sending", total) as progress: progress.update(done, total, detail)`."""

    def __init__(self, label: str, total: int | None = None, *, delay: float = 0.0) -> None:
        self.label, self.total, self.delay = label, total, delay
        self.started = time.monotonic()
        self.shown = None
        self.on_terminal = sys.stderr.isatty()

    def __enter__(self) -> bar:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def update(self, completed: int, total: int | None = None, detail: str = "") -> None:
        if not self.on_terminal:
            return
        self.total = total if total is not None else self.total
        if self.shown is None:
            if time.monotonic() - self.started < self.delay:
                return
            self._start()
        self.shown.update(self.task, completed=completed, total=self.total, detail=detail)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.shown = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                              console=Console(file=sys.stderr))
        self.task = self.shown.add_task(self.label, total=self.total, detail="")
        self.shown.start()

    def close(self) -> None:
        if self.shown is not None:
            self.shown.stop()
            self.shown = None
