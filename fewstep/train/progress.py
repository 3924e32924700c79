"""Progress on stderr: a rich bar on a terminal, plain status lines otherwise (CI, pipes)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int = 0, description: str = "train", enabled: bool = True):
        self.total, self.start, self.description = total, start, description
        self.enabled = enabled
        self._bar = None
        self._t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                     console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task(description, total=total, completed=start, info="")
            self._bar.start()

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def status(self, step: int, fields: dict[str, float]) -> None:
        """Show the latest logged values (plain line when there is no terminal)."""
        info = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif self.enabled:
            elapsed = time.perf_counter() - self._t0
            print(f"[{self.description}] step {step}/{self.total}  {info}  ({elapsed:.0f}s, "
                  f"{eta(step - self.start, self.total - step, elapsed)} left)", file=sys.stderr, flush=True)

    def note(self, line: str) -> None:
        """A line above the bar (or on stderr without a terminal), e.g. a loss spike."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        elif self.enabled:
            print(f"[{self.description}] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def eta(done: int, left: int, elapsed: float) -> str:
    """The time ``left`` more steps take at this session's pace, as h:mm:ss ("?" before the first step)."""
    if done <= 0:
        return "?"
    seconds = round(left * elapsed / done)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
