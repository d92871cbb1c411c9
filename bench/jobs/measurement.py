"""Measuring one artifact under a profile: run it, judge from its own numbers whether it can
be trusted, measure again when not, and keep every number and the reason for its status.

Trust follows from evidence in the measurement, not from the circumstances: a busy machine
whose paired ratio is tight gives a trusted number (measured: one core kept busy by a loop
moves the paired ratio by < 1 %, `benchmarks/busy.py`), a quiet one whose ratio is not tight
does not. What other processes used is recorded with every measurement either way. A worker
that got too little of a core to be trusted (the machine had none free) is not a property of
the subnet: the machine is waited for (bounded, visibly) and then refused with `MachineBusy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bfnas.bench.device.contract import Distrust, DistrustReason, MeasurementResult, Status
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import Runner
from bfnas.bench.store.latency_row import LatencyRow
from bfnas.errors import OperationFailed

BUSY_POLL_S = 10.0


@dataclass(frozen=True)
class AnchorRef:
    """A fixed model timed beside a measurement (see `bench.device.timing.time_runs`)."""

    model: str
    sha256: str
    key: str  # the anchor architecture's key: baselines are kept per anchor


class MachineBusy(OperationFailed):
    """The machine had no core free for the measurement for longer than the profile waits:
    not a property of the subnet, so the job stops (finished work is stored) instead of
    storing untrusted numbers; a rerun resumes."""


@dataclass(frozen=True)
class BusyWait:
    """A pause while the machine has no core free: reported so a user sees why nothing moves."""

    waited_s: float
    limit_s: float
    other_cores: float
    own_cores: float
    threads: int
    reason: str

    def message(self) -> str:
        return (
            f"machine busy: other processes use {self.other_cores:.1f} cores, the timing "
            f"loop got {self.own_cores:.2f} of the {self.threads} it needs ({self.reason}); "
            f"waiting for a free core, {self.waited_s:.0f} of at most {self.limit_s:.0f} s"
        )


def distrust(result: MeasurementResult, profile: HardwareProfile) -> list[DistrustReason]:
    """Why a successful run cannot be trusted as it is (none: trusted), each reason a code
    and the numbers that decided it.

    With a paired anchor the estimate is the median of the per-pair ratios: it is trusted
    when its 95 % confidence interval is tight and the anchor's own median is well defined
    (a machine whose speed changes faster than one pair lasts shows in the anchor). Without
    an anchor, the raw median's interval decides. A CPU timing loop that was off its core
    for much of the run is not trusted however tight its numbers (measured: with 3-4 busy
    loops on 2 cores the worker got 0.14-0.49 of a core and its paired ratios moved by 2-13 %
    with CIs still within ±1 %; with 2 it got 0.7 and they agreed with a quiet machine's)."""
    m = profile.measure
    reasons = []
    share = cpu_share(result)
    if share is not None and share < m.min_cpu_share:
        reasons.append(
            DistrustReason(
                Distrust.STARVED,
                f"got {share:.0%} of the cores its threads need (< {m.min_cpu_share:.0%})",
            )
        )
    if result.ratio is not None:
        ci = result.ratio_rel_ci
        if ci > m.max_rel_ci:
            reasons.append(
                DistrustReason(Distrust.WIDE_RATIO_CI, f"±{ci:.1%} > ±{m.max_rel_ci:.1%}")
            )
        anchor_ci = (result.anchor or {}).get("median_rel_ci", 0.0)
        if anchor_ci > m.max_anchor_rel_ci:
            reasons.append(
                DistrustReason(
                    Distrust.NOISY_ANCHOR,
                    f"its median's CI ±{anchor_ci:.1%} > ±{m.max_anchor_rel_ci:.1%}",
                )
            )
    elif result.median_rel_ci > m.max_rel_ci:
        reasons.append(
            DistrustReason(
                Distrust.WIDE_MEDIAN_CI, f"±{result.median_rel_ci:.1%} > ±{m.max_rel_ci:.1%}"
            )
        )
    return reasons


def reasons_text(reasons: list[DistrustReason]) -> str:
    """The reasons as one line for people ("median CI too wide: ±3.1% > ±2.0%; ...")."""
    return "; ".join(r.text() for r in reasons)


def distrust_codes(row: LatencyRow) -> list[Distrust]:
    """A stored row's reasons not to trust it, as codes: from the codes stored with it, or,
    for a row stored before codes were, from the fixed labels its text starts with."""
    coded = row.extra.get("distrust")
    if coded:
        return [DistrustReason.from_dict(c).code for c in coded]
    text = row.reason or ""
    return [code for code in Distrust if code.label in text]


def distrust_label(row: LatencyRow) -> str:
    """The first reason's fixed label (for counting why rows were not trusted)."""
    codes = distrust_codes(row)
    return codes[0].label if codes else "unknown"


def cpu_share(result: MeasurementResult) -> float | None:
    """The share of the cores its threads need that the worker's timing loop got, or None
    where that says nothing: only the CPU provider's loop is CPU-bound (a GPU run's host
    thread may sleep while it waits)."""
    own = (result.cpu or {}).get("own_cores")
    if own is None or result.provider != "CPUExecutionProvider":
        return None
    return own / (result.threads or 1)


def starved(result: MeasurementResult, profile: HardwareProfile) -> bool:
    """Whether the worker waited for a core so much that its numbers are not trusted: the
    machine had none free."""
    share = cpu_share(result)
    return share is not None and share < profile.measure.min_cpu_share


def measure_artifact(
    runner: Runner,
    model: str,
    sha256: str,
    profile: HardwareProfile,
    anchor: AnchorRef | None = None,
    on_wait: Callable[[BusyWait], None] = lambda w: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> MeasurementResult:
    """One measurement: status ok | unstable | failed, with the attempts it took.

    An untrusted run is measured again once; the second result is kept if trusted,
    otherwise it is stored marked unstable with both attempts' reasons. An untrusted run
    of a worker that had no core free is not counted: the machine is waited for (up to the
    profile's `busy_wait_s`, measuring again every `BUSY_POLL_S`), then `MachineBusy`."""
    m = profile.measure
    notes: list[list[DistrustReason]] = []
    pair = (anchor.model, anchor.sha256) if anchor else None
    attempts, busy_since, device_s = 0, None, 0.0
    while True:
        attempts += 1
        started = clock()
        result = runner.run(model, sha256, profile, pair)
        # What the measurement cost the device, every attempt counted (waits between them
        # not): the figure a profiling job's device time adds up.
        device_s += clock() - started
        if anchor and result.ratio is not None:
            result.anchor_key = anchor.key
        result.attempts = attempts
        result.device_s = device_s
        if not result.ok:
            return result
        why = distrust(result, profile)
        if not why:
            if notes:
                result.reason = f"earlier attempt untrusted: {reasons_text(notes[-1])}"
            return result
        if starved(result, profile):
            busy_since = clock() if busy_since is None else busy_since
            waited = clock() - busy_since
            cpu = result.cpu or {}
            wait = BusyWait(
                waited,
                m.busy_wait_s,
                cpu.get("other_cores", 0.0),
                cpu["own_cores"],
                result.threads or 1,
                reasons_text(why),
            )
            if waited >= m.busy_wait_s:
                raise MachineBusy(
                    f"this machine is too busy to measure: other processes kept "
                    f"{wait.other_cores:.1f} cores busy, so the timing loop got "
                    f"{wait.own_cores:.2f} of the {wait.threads} it needs, for {waited:.0f} s. "
                    "What was finished is stored: stop the other work on this machine (or wait "
                    "for it) and run the same command again"
                )
            on_wait(wait)
            sleep(min(BUSY_POLL_S, max(m.busy_wait_s - waited, 0.0)))
            continue
        busy_since = None
        notes.append(why)
        if len(notes) == 2:
            break
    result.status = Status.UNSTABLE
    result.reason = " | ".join(reasons_text(n) for n in notes)
    # The codes of every attempt's reasons, kept beside the text: what reports count by.
    result.distrust = [r for n in notes for r in n]
    return result
