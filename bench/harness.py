"""The timing method shared by every backend (see DESIGN.md, "Measuring honestly").

Warm up until both a run count and a duration are reached (the first run's time is kept
apart); then time until both a minimum count and a minimum duration are reached, and go on
until the median's 95 % confidence interval is within the target or the maximum duration is
spent. Raw samples are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bfnas.bench.stats import median_rel_ci


@dataclass(frozen=True)
class StopRule:
    warmup_runs: int = 10
    warmup_seconds: float = 0.3
    min_runs: int = 50
    min_seconds: float = 0.5
    max_seconds: float = 10.0
    target_rel_ci: float = 0.005

    @classmethod
    def from_measure(cls, m) -> StopRule:
        return cls(m.warmup_runs, m.warmup_seconds, m.min_runs, m.min_seconds, m.max_seconds,
                   m.target_rel_ci)


@dataclass
class Timing:
    first_ms: float
    warmup_runs: int
    samples_ms: list[float]
    stop_reason: str  # "ci" (target reached) | "max_seconds"
    seconds: float


def time_runs(run_once: Callable[[], object], rule: StopRule,
              clock: Callable[[], float] = time.perf_counter) -> Timing:
    t = clock()
    run_once()
    first_ms = (clock() - t) * 1e3

    start, warm = clock(), 0
    while warm < rule.warmup_runs or clock() - start < rule.warmup_seconds:
        run_once()
        warm += 1

    samples: list[float] = []
    start = clock()
    next_check = rule.min_runs
    reason = "max_seconds"
    while True:
        t = clock()
        run_once()
        end = clock()
        samples.append((end - t) * 1e3)
        elapsed = end - start
        # The minimums always hold; max_seconds only caps the extension past them.
        if len(samples) < rule.min_runs or elapsed < rule.min_seconds:
            continue
        if elapsed >= rule.max_seconds:
            break
        if len(samples) >= next_check:
            if median_rel_ci(samples) <= rule.target_rel_ci:
                reason = "ci"
                break
            # Check again after ~10 % more runs: sorting every run would cost more than a
            # small model's run.
            next_check = len(samples) + max(5, len(samples) // 10)
    return Timing(first_ms, warm, samples, reason, clock() - start)
