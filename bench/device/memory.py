"""What a model costs in memory on the device: the worker's peak resident memory while the
model is loaded and run, above the process's baseline, and the model file's bytes.

Read from the kernel's own accounting, in the worker process that runs the model (one per
measurement, so nothing of another model is counted): `VmRSS` before the session is made,
`VmHWM` (the resident high-water mark) after the timed runs. The high-water mark is reset
first (writing 5 to `/proc/self/clear_refs`, Linux 4.0+), so the peak is this model's and not
the fork server's start-up. Where that is refused, or there is no /proc, the peak is the
process's lifetime peak (`getrusage`), an upper bound, and `method` says so.

ONNX Runtime's CPU arena is inside this resident memory and it reports no size of its own; a
GPU's memory is not resident memory and is not counted here.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    """A `Vm*` field of /proc/self/status in KiB, or None."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _lifetime_peak_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes there, KiB on Linux


class MemoryWatch:
    """Started before the model's session is made; `read()` after its runs."""

    def __init__(self) -> None:
        self.baseline_kb = _status_kb("VmRSS")
        self.method = "VmHWM since the session was made"
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            self.method = "lifetime peak (the high-water mark could not be reset)"

    def read(self) -> dict:
        peak = _status_kb("VmHWM") if self.method.startswith("VmHWM") else None
        if peak is None:
            peak = _lifetime_peak_kb()
        baseline = self.baseline_kb or 0
        return {
            "peak_rss_mb": peak / 1024,
            "baseline_rss_mb": baseline / 1024,
            "peak_above_baseline_mb": max(peak - baseline, 0) / 1024,
            "method": self.method,
        }
