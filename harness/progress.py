"""Progress of the long steps (training, evaluation): rich's live bar on a terminal, plain lines elsewhere.

A live bar redraws one line in place, which only a terminal shows; written to a log file or a CI
console rich draws nothing at all, and the first `harness run`, which builds the built-in models
for many minutes, looked hung. Off a terminal the same updates become plain lines instead: one when a
stage starts, one when it ends, and one every HARNESS_PROGRESS_INTERVAL seconds in between (default
30; 0 writes every update), each with the stage, its count, the loss, the time elapsed and an
estimate of the time left. A stage that reports nothing for a while (a slow first step) still gets
its line on time, from a timer thread. The callers (`harness.commands`) see one object either way.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

INTERVAL_VARIABLE = "HARNESS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
log = logging.getLogger(__name__)


def progress_interval() -> float:
    """Seconds between plain progress lines, from HARNESS_PROGRESS_INTERVAL (a bad value is logged
    and the default used: a typo must not end an hour-long build)."""
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        log.warning("%s=%r is not a number of seconds; using %g", INTERVAL_VARIABLE, text, DEFAULT_INTERVAL)
        return DEFAULT_INTERVAL
    return value


def duration(seconds: float) -> str:
    """H:MM:SS, as rich's elapsed and remaining columns write time."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextmanager
def status(console: Console, message: str) -> Iterator[None]:
    """A spinner on a terminal; elsewhere (where rich's spinner shows nothing) one line saying what runs."""
    if console.is_terminal:
        with console.status(escape(message)):
            yield
    else:
        console.print(f"{message} ...", markup=False, highlight=False, soft_wrap=True)
        yield


@dataclass
class _Stage:
    """What a plain line reports: the stage's name, counts and the loss and speed last reported."""

    name: str
    unit: str
    total: int | None
    started: float
    completed: int | None = None
    origin: tuple[float, int] | None = None  # (time, count) of the first update: the rate is measured from it
    loss: float | None = None
    speed: float | None = None
    ended: bool = False

    def line(self, now: float) -> str:
        total = "?" if self.total is None else str(self.total)
        done = "?" if self.completed is None else str(self.completed)
        parts = [f"step {done}/{total}" if self.unit == "steps" else f"{done}/{total} {self.unit}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.speed is not None:
            parts.append(f"{self.speed:.0f} tokens/s")
        parts.append(f"elapsed {duration(now - self.started)}")
        parts.append("done" if self.ended else f"remaining {self.remaining(now)}")
        return f"{self.name}: " + ", ".join(parts)

    def remaining(self, now: float) -> str:
        """The time left at the rate since the first update (a resumed stage's earlier work aside)."""
        if self.total is None or self.completed is None or self.origin is None:
            return "unknown"
        origin_time, origin_count = self.origin
        if self.completed <= origin_count or now <= origin_time:
            return "unknown"
        rate = (self.completed - origin_count) / (now - origin_time)
        return "~" + duration(max(self.total - self.completed, 0) / rate)


class StageProgress:
    """Progress through one or more stages (pretraining then tuning; a sweep's trainings and
    evaluations), drawn as one live bar on a terminal and as plain lines elsewhere.

    `training=True` adds the loss and tokens/s columns. Call `begin` at each stage, then `training`
    (a trainer's Progress) or `evaluation` (the run's (phase, finished, total) callback) as it goes.
    """

    def __init__(self, console: Console, *, training: bool, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, timer: bool = True) -> None:
        self.console = console
        self.live = console.is_terminal
        # Plain lines are a log, not output: written to stderr when the console is the real stdout,
        # so what a command prints on stdout (its tables) is the same whether it computed or reused.
        self._lines = (Console(stderr=True, width=console.width, quiet=console.quiet)
                       if console.file is sys.stdout else console)
        self.interval = progress_interval() if interval is None else interval
        self._clock = clock
        self._timer = timer and not self.live and not console.quiet and self.interval > 0
        self._stage: _Stage | None = None
        self._printed = clock()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        if training:
            columns += [TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tokens/s")]
        self._bar = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self._task = None

    def __enter__(self) -> StageProgress:
        if self.live:
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=None, loss="-", speed="-", visible=False)
        elif self._timer:
            self._thread = threading.Thread(target=self._tick, name="harness-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.live:
            self._bar.__exit__(*exc_info)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def begin(self, name: str, total: int | None = None, *, unit: str = "steps", visible: bool = True,
              line_name: str | None = None) -> None:
        """A new stage: the bar (described by `name`) restarts at 0; off a terminal a line (starting
        with `line_name`, default `name`) says it started, when its size is known."""
        if self.live:
            self._bar.update(self._task, description=escape(name), completed=0, total=total, loss="-", speed="-",
                             visible=visible)
            return
        with self._lock:
            now = self._clock()
            self._stage = _Stage(line_name or name, unit, total, now)
            if total is not None:
                self._print(f"{self._stage.name}: started ({total} {unit})", now)

    def training(self, p: Any) -> None:
        """A trainer's Progress (step, steps, loss, tokens_per_s)."""
        if self.live:
            self._bar.update(self._task, completed=p.step, total=p.steps, loss=f"{p.loss:.4f}",
                             speed=f"{p.tokens_per_s:.0f}", visible=True)
        else:
            self._advance("steps", p.step, p.steps, loss=p.loss, speed=p.tokens_per_s)

    def evaluation(self, phase: str, finished: int, total: int) -> None:
        """The evaluation's progress callback: samples finished of the run's total."""
        if self.live:
            self._bar.update(self._task, completed=finished, total=total, loss="-", speed="-", visible=True)
        else:
            self._advance("samples", finished, total)

    def _advance(self, unit: str, completed: int, total: int | None, loss: float | None = None,
                 speed: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            stage = self._stage
            if stage is None:  # an update before any begin(): a stage of its own
                stage = self._stage = _Stage("progress", unit, total, now)
            if stage.ended:
                return
            stage.unit = unit  # what is counted: a sweep's stage may be a training or an evaluation
            first = stage.origin is None
            changed = completed != stage.completed
            if first:
                stage.origin = (now, completed)
            stage.completed, stage.total, stage.loss, stage.speed = completed, total, loss, speed
            stage.ended = total is not None and completed >= total
            if first or stage.ended or (changed and now - self._printed >= self.interval):
                self._print(stage.line(now), now)

    def _print(self, line: str, now: float) -> None:
        self._printed = now
        self._lines.print(line, markup=False, highlight=False, soft_wrap=True)

    def _tick(self) -> None:
        """Off a terminal: a line every interval while a stage runs, even when no update comes."""
        while True:
            with self._lock:
                running = self._stage is not None and not self._stage.ended
                wait = self._printed + self.interval - self._clock() if running else self.interval
            if self._stop.wait(max(wait, 0.05)):
                return
            with self._lock:
                now = self._clock()
                stage = self._stage
                if stage is not None and not stage.ended and now - self._printed >= self.interval:
                    self._print(stage.line(now), now)
