"""How a long command shows its progress: one concept for every command.

On a terminal it is the rich bar. Off a terminal (output redirected to a file or a pipe,
as `make demo > log` or CI does) a live bar shows nothing until it stops, so there it is
plain lines instead: one when a stage begins, then at most one every few seconds while the
stage advances, each flushed as it is written."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

DEFAULT_INTERVAL_S = 10.0
INTERVAL_ENV = "BFNAS_PROGRESS_INTERVAL"

# What a command's bar shows, by name, so commands need not build rich columns themselves.
COLUMNS = ("spinner", "description", "bar", "count", "percent", "elapsed", "remaining", "note")

# A counter such as "31/60" inside a description: a description that changes only in its
# counters continues its stage (the demo reports "profiling 31/60" on every measurement).
_COUNTER = re.compile(r"\d+/\d+")


def progress_interval(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between progress lines off a terminal: $BFNAS_PROGRESS_INTERVAL, or `default`
    when it is unset or not a number of seconds (a typo must not stop a long run)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


def clock_text(seconds: float) -> str:
    """0:42, 12:05, 1:02:03."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


class ProgressDisplay:
    """The progress of one long command, written to the console it already prints to
    (stderr under --json, so stdout stays pure JSON).

    Use it as a context manager and call `update` as work advances; `message` prints a line
    (a warning) without disturbing the bar. `interval` (seconds between progress lines off
    a terminal; default $BFNAS_PROGRESS_INTERVAL or 10) and `clock` are there for tests."""

    def __init__(
        self,
        console: Any,
        name: str,
        description: str,
        *,
        total: float | None = None,
        completed: float = 0,
        note: str = "",
        columns: Sequence[str] = ("description", "bar", "count", "remaining", "note"),
        transient: bool = False,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(columns) - set(COLUMNS)
        if unknown:  # a programming error, caught by the tests of each command
            raise ValueError(f"unknown progress columns {sorted(unknown)}")
        self.console, self.name, self.columns = console, name, tuple(columns)
        self.description, self.total, self.completed = description, total, completed
        self.note = note
        self.interval = progress_interval() if interval is None else max(0.0, interval)
        self.clock = clock
        self.terminal = bool(console.is_terminal)
        # Reentrant: a Ctrl-C can land between the lock's acquire and the `with` block that
        # releases it, leaving it held by the main thread; __exit__, on the same thread, must
        # still write its line rather than wait forever.
        self._lock = threading.RLock()
        self._bar: Any = None
        if self.terminal:
            self._bar = self._make_bar(transient)
            self._task = self._bar.add_task(
                self._safe(description), total=total, completed=completed, note=self._safe(note)
            )
        self._start = self._last_line = self._stage_start = 0.0
        self._stage_completed = completed
        self._shown: tuple | None = None  # the state the last plain line showed
        self._closed = False  # the file refused a line

    # -- the terminal: rich's bar ---------------------------------------------------------

    def _make_bar(self, transient: bool) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        make = {
            "spinner": SpinnerColumn,
            "description": lambda: TextColumn("[bold]{task.description}"),
            "bar": BarColumn,
            "count": MofNCompleteColumn,
            "percent": TaskProgressColumn,
            "elapsed": TimeElapsedColumn,
            "remaining": TimeRemainingColumn,
            "note": lambda: TextColumn("{task.fields[note]}"),
        }
        return Progress(
            *(make[c]() for c in self.columns), console=self.console, transient=transient
        )

    @staticmethod
    def _safe(text: str) -> str:
        # Descriptions and notes are data (architectures, paths), not rich markup.
        from rich.markup import escape

        return escape(text)

    # -- the context ----------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        if self.terminal:
            self._bar.start()
        else:
            with self._lock:
                self._start = self._stage_start = self.clock()
                self._line(stage=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.terminal:
            self._bar.stop()
            return
        with self._lock:
            # Where the work ended (or was interrupted), unless the last line said so already.
            if self._state() != self._shown:
                self._line(stage=False)

    # -- progress -------------------------------------------------------------------------

    def update(
        self,
        *,
        description: str | None = None,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        note: str | None = None,
    ) -> None:
        """Set what changed (None leaves a field as it is; `advance` adds to completed)."""
        with self._lock:
            before, key = self._state(), self._stage_key()
            if description is not None:
                self.description = description
            if total is not None:
                self.total = total
            if completed is not None:
                self.completed = completed
            if advance is not None:
                self.completed += advance
            if note is not None:
                self.note = note
            if self.terminal:
                fields: dict[str, Any] = {"completed": self.completed}
                if description is not None:
                    fields["description"] = self._safe(description)
                if total is not None:
                    fields["total"] = total
                if note is not None:
                    fields["note"] = self._safe(note)
                self._bar.update(self._task, **fields)
                return
            if self._shown is None:  # not entered yet: the stage line comes on entry
                return
            now = self.clock()
            if self._stage_key() != key:
                # Where the stage that ends got to, unless its last line said so already.
                if before != self._shown:
                    self._line(stage=False, state=before)
                self._stage_start, self._stage_completed = now, self.completed
                self._line(stage=True)
            elif self._state() != self._shown and now - self._last_line >= self.interval:
                self._line(stage=False)

    def message(self, text: str) -> None:
        """A line of its own (rich markup allowed), e.g. a warning in the middle of a run."""
        if self.terminal:
            self._bar.console.print(text)
            return
        from rich.text import Text

        with self._lock:
            stamp = clock_text(self.clock() - self._start)
            self._write(f"[{stamp}] {Text.from_markup(text).plain}")

    # -- plain lines ----------------------------------------------------------------------

    def _stage_key(self) -> str:
        return _COUNTER.sub("#/#", self.description)

    def _state(self) -> tuple:
        return (self.description, self.completed, self.total, self.note)

    def _line(self, stage: bool, state: tuple | None = None) -> None:
        now = self.clock()
        description, completed, total, note = state or self._state()
        parts = [description]
        if total:
            if "count" in self.columns:
                parts.append(f"{_number(completed)}/{_number(total)}")
            else:
                parts.append(f"{min(1.0, completed / total):.0%}")
            left = None if state else self._time_left(now)
            if left is not None and "remaining" in self.columns:
                parts.append(f"about {clock_text(left)} left")
        elif "count" in self.columns and completed:
            parts.append(_number(completed))
        if note:
            parts.append(note)
        body = ", ".join(p for p in parts if p)
        stamp = f"[{clock_text(now - self._start)}]"
        self._write(f"{stamp} {self.name}: {body}" if stage else f"{stamp}   {body}")
        self._shown, self._last_line = (state or self._state()), now

    def _time_left(self, now: float) -> float | None:
        # From this stage's own pace: a resumed run starts part-way, so count only what it did.
        done = self.completed - self._stage_completed
        if not self.total or done <= 0 or self.completed >= self.total:
            return None
        return (now - self._stage_start) * (self.total - self.completed) / done

    def _write(self, line: str) -> None:
        if self._closed:
            return
        # No markup, highlighting or wrapping: the line reaches the file as it is written here;
        # flushed (again) whatever rich does, as a pipe must see each line when it happens.
        try:
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
            flush = getattr(self.console.file, "flush", None)
            if flush is not None:
                flush()
        except OSError:
            # A log that takes no more (a full disk): progress is not worth stopping the work
            # for, so the lines stop and the work goes on. (A closed pipe never gets here:
            # rich exits quietly on one, as `bfnas demo | head` wants.)
            self._closed = True
