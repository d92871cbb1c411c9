"""The timing method shared by every backend (see docs/DESIGN.md, "Measuring honestly").

Warm up until both a run count and a duration are reached (the first run's time is kept
apart); then time until both a minimum count and a minimum duration are reached, and go on
until the median's 95 % confidence interval is within the target or the maximum duration is
spent. Raw samples are kept.

A run can time itself: when `run_once` returns a `DeviceTime` (milliseconds measured on the
device, e.g. between two CUDA events around the kernel launches), that is the sample
instead of the host clock's reading, which would include Python and launch overhead. The
stop rules' durations stay on the host clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from .stats import median_rel_ci

if TYPE_CHECKING:  # only a type here: the device reads the profile's settings, never pydantic
    from .settings import DeviceSettings as Measure


@dataclass(frozen=True)
class DeviceTime:
    """A run's own time in milliseconds, measured on the device (see the module docstring)."""

    ms: float


def _sample_ms(result: object, host_ms: float) -> float:
    return result.ms if isinstance(result, DeviceTime) else host_ms


@dataclass(frozen=True)
class StopRule:
    """When `time_runs` stops warming up and stops timing. No defaults of its own: the
    profile's `[measure]` table (`bench.hardware_profile.Measure`) is the one place they are
    written, and every field here is read from the field of the same name there."""

    warmup_runs: int
    warmup_seconds: float
    min_runs: int
    min_seconds: float
    max_seconds: float
    target_rel_ci: float

    @classmethod
    def from_measure(cls, measure: Measure) -> StopRule:
        return cls(**{f.name: getattr(measure, f.name) for f in fields(cls)})


@dataclass
class Timing:
    first_ms: float
    warmup_runs: int
    samples_ms: list[float]
    stop_reason: str  # "ci" (target reached) | "max_seconds"
    seconds: float
    # With a paired anchor: the anchor's time in the same iteration as each sample.
    anchor_ms: list[float] | None = None

    def ratios(self) -> list[float] | None:
        if self.anchor_ms is None:
            return None
        # zip without strict= (Python 3.10): the device package runs on 3.8.
        if len(self.samples_ms) != len(self.anchor_ms):
            raise ValueError("every sample needs its anchor time")
        return [s / r for s, r in zip(self.samples_ms, self.anchor_ms)]


def first_run(
    run_once: Callable[[], object], clock: Callable[[], float] = time.perf_counter
) -> float:
    """The first run's time in ms: cold caches, lazy allocations; kept apart from the samples."""
    t = clock()
    return _sample_ms(run_once(), (clock() - t) * 1e3)


def time_runs(
    run_once: Callable[[], object],
    rule: StopRule,
    anchor: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    first_ms: float | None = None,
) -> Timing:
    """Time `run_once` under `rule`.

    With `anchor`, every timed run is paired with a run of a fixed anchor model right
    before it. On a shared or frequency-scaling machine the speed of the whole core moves
    over seconds; both runs of a pair see the same speed, so the median of their ratios is
    far steadier than either median (measured on this project's 2-core VM: the per-process
    medians of a 5 ms model varied by ~5 %, their ratio to a paired anchor by ~1 %).
    The stopping rule then applies to the ratio.

    `first_ms`: the model's first (cold) run, when the caller made it already (`first_run`).
    """
    if first_ms is None:
        first_ms = first_run(run_once, clock)

    start, warm = clock(), 0
    while warm < rule.warmup_runs or clock() - start < rule.warmup_seconds:
        if anchor is not None:
            anchor()
        run_once()
        warm += 1

    samples: list[float] = []
    refs: list[float] | None = [] if anchor is not None else None
    watched = samples
    start = clock()
    next_check = rule.min_runs
    reason = "max_seconds"
    while True:
        if refs is not None:
            t = clock()
            result = anchor()  # type: ignore[misc]
            refs.append(_sample_ms(result, (clock() - t) * 1e3))
        t = clock()
        result = run_once()
        end = clock()
        samples.append(_sample_ms(result, (end - t) * 1e3))
        elapsed = end - start
        # The minimums always hold; max_seconds only caps the extension past them.
        if len(samples) < rule.min_runs or elapsed < rule.min_seconds:
            continue
        if elapsed >= rule.max_seconds:
            break
        if len(samples) >= next_check:
            if refs is not None:
                watched = [s / r for s, r in zip(samples, refs)]  # appended in pairs
            if median_rel_ci(watched) <= rule.target_rel_ci:
                reason = "ci"
                break
            # Check again after ~10 % more runs: sorting every run would cost more than a
            # small model's run.
            next_check = len(samples) + max(5, len(samples) // 10)
    return Timing(first_ms, warm, samples, reason, clock() - start, refs)
