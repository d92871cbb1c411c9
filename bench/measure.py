"""Measuring one artifact under a profile: run it, judge stability, measure again once if
unstable, and keep every number and the reason for its status."""

from __future__ import annotations

from dataclasses import dataclass

from bfnas.bench.profile import HardwareProfile
from bfnas.bench.runner import Runner

STATUSES = ("ok", "unstable", "failed")


@dataclass(frozen=True)
class AnchorRef:
    """A fixed model timed beside a measurement (see `bench.harness.time_runs`)."""

    model: str
    sha256: str
    key: str  # the anchor architecture's key: baselines are kept per anchor


def instability(result: dict, profile: HardwareProfile) -> str | None:
    """Why a successful run cannot be trusted as it is, or None."""
    m = profile.measure
    reasons = []
    # With a paired anchor the estimate is the ratio, so its spread is what counts.
    cov = result.get("ratio_cov", result["cov"])
    if cov > m.max_cov:
        reasons.append(f"CoV {cov:.1%} > {m.max_cov:.0%}")
    other = result.get("cpu", {}).get("other_cores", 0.0)
    if other > m.max_other_cpu:
        reasons.append(f"other processes used {other:.2f} cores")
    return "; ".join(reasons) or None


def measure_artifact(runner: Runner, model: str, sha256: str, profile: HardwareProfile,
                     anchor: AnchorRef | None = None) -> dict:
    """One measurement record: status ok | unstable | failed, with the attempts it took.

    An unstable run is measured again once; the second result is kept if stable, otherwise
    it is stored marked unstable (with both attempts' reasons)."""
    notes = []
    pair = (anchor.model, anchor.sha256) if anchor else None
    for attempt in (1, 2):
        result = runner.run(model, sha256, profile, pair)
        if anchor and "ratio" in result:
            result["anchor_key"] = anchor.key
        if result["status"] != "ok":
            result["attempts"] = attempt
            return result
        why = instability(result, profile)
        if why is None:
            result["attempts"] = attempt
            if notes:
                result["reason"] = f"first attempt unstable: {notes[0]}"
            return result
        notes.append(why)
    result["status"] = "unstable"
    result["attempts"] = 2
    result["reason"] = " | ".join(notes)
    return result
