"""How many threads torch trains with: as many as the machine has cores free right now.

PyTorch's CPU ops split each op over all cores and wait at a barrier for every thread; with
one of two cores kept busy by another process, each op waits for a descheduled thread's time
slice. Measured here (a BERT FFN forward + backward, batch 8 x 64 tokens, one core busy): 2
threads 14 it/s, 1 thread 38 it/s (quiet: 72 and 38). So training takes the cores that are
free, read over a short window; an explicit OMP_NUM_THREADS is left as the user set it.
"""

from __future__ import annotations

import os
import time

SAMPLE_S = 0.5


def free_cores(sample_s: float = SAMPLE_S) -> float:
    """Cores this process may use that other processes left idle over `sample_s` seconds."""
    from bfnas.bench.device.environment import CpuWatch

    watch = CpuWatch()
    time.sleep(sample_s)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max((usable or 1) - watch.read()["other_cores"], 0.0)


def fit_torch_threads(free: float | None = None) -> dict[str, object]:
    """Set torch's intra-op threads to the free cores (at least 1, never more than torch's
    default); returns what was decided and why, for the command's summary."""
    import torch

    default = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return {"threads": default, "why": "OMP_NUM_THREADS"}
    free = free_cores() if free is None else free
    threads = max(1, min(default, int(free + 0.25)))
    if threads != default:
        torch.set_num_threads(threads)
    return {"threads": threads, "free_cores": round(free, 2), "default": default}
