"""Progress for long work (extraction, probe grids, audio checks): a rich bar on a terminal, plain lines
at a sane interval when the output goes to a file (nohup, SLURM), where a bar would print nothing until
the end."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_INTERVAL_SECONDS = 30.0  # a plain line at least this often while work advances
PLAIN_STEP = 0.05              # and at every 5% of the total,
PLAIN_MIN_GAP_SECONDS = 5.0    # but 5% steps never closer than this (a short job prints a few lines, not 20)


def progress_bar(enabled: bool = True, realtime: bool = False, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> "Progress | PlainProgress":
    """Count, elapsed, ETA (and a `realtime` task field when asked): a rich bar when ``stream`` (default
    stderr) is a terminal, else PlainProgress lines. Both offer add_task, update, advance, start, stop and
    the context manager."""
    stream = sys.stderr if stream is None else stream
    if enabled and not _is_terminal(stream):
        return PlainProgress(stream, clock=clock)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if realtime:
        columns.append(TextColumn("{task.fields[realtime]}"))
    return Progress(*columns, console=Console(file=stream), disable=not enabled, transient=False)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@dataclass
class _Task:
    description: str
    total: float | None
    started: float
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    printed_at: float | None = None
    printed_step: int = 0
    finished: bool = False


class PlainProgress:
    """Progress as plain lines: one when a task starts, then at most every ``interval`` seconds while it
    advances and at each ``step`` of its total (never closer than ``min_gap``), and one when it ends.

    ``clock`` is injectable (tests advance a fake clock instead of sleeping).
    """

    def __init__(self, stream: TextIO, interval: float = PLAIN_INTERVAL_SECONDS, step: float = PLAIN_STEP,
                 min_gap: float = PLAIN_MIN_GAP_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval, self.step, self.min_gap = interval, step, min_gap
        self.clock = clock
        self.tasks: list[_Task] = []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Nothing to start (kept for the rich API)."""

    def stop(self) -> None:
        """A closing line for every task that has not printed its end."""
        for task in self.tasks:
            if not task.finished:
                task.finished = True
                self._print(task, self.clock())

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        task = _Task(description, total, self.clock(), fields=dict(fields))
        self.tasks.append(task)
        self._print(task, task.started)
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        task.fields.update(fields)
        now = self.clock()
        done = task.total is not None and task.completed >= task.total
        step = self._step(task.completed / task.total) if task.total else 0
        since = now - (task.printed_at if task.printed_at is not None else task.started)
        if done and not task.finished:
            task.finished = True
            self._print(task, now)
        elif not done and (since >= self.interval or (step > task.printed_step and since >= self.min_gap)):
            self._print(task, now)

    def _step(self, fraction: float) -> int:
        return int(fraction / self.step + 1e-9)  # 0.15 / 0.05 is 2.9999999999999996 in floats

    def _print(self, task: _Task, now: float) -> None:
        elapsed = now - task.started
        parts = [f"{task.description}: {task.completed:g}"]
        if task.total:
            fraction = task.completed / task.total
            parts[0] += f"/{task.total:g} ({100 * fraction:.0f}%)"
            task.printed_step = self._step(fraction)
        parts.append(f"elapsed {_clock_text(elapsed)}")
        if task.total and 0 < task.completed < task.total:
            parts.append(f"ETA {_clock_text(elapsed * (task.total - task.completed) / task.completed)}")
        parts += [str(value) for value in task.fields.values() if value not in ("", None)]
        if task.finished:
            parts.append("done")
        print(", ".join(parts), file=self.stream, flush=True)
        task.printed_at = now


def _clock_text(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
