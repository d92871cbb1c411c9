"""Running a measurement in a fresh local worker process, with a timeout."""

from __future__ import annotations

import json
import subprocess
import sys


def run_local(
    model: str,
    threads: int = 1,
    batch: int = 1,
    seq_len: int = 128,
    warmup: int = 20,
    runs: int = 100,
    timeout: float = 600,
) -> dict:
    """Measure `model` in a new Python process; a crash or hang comes back as status=failed."""
    cmd = [
        sys.executable, "-m", "bfnas.bench.worker", "--model", model, "--threads", str(threads),
        "--batch", str(batch), "--seq-len", str(seq_len), "--warmup", str(warmup),
        "--runs", str(runs),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timeout after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "failed", "reason": f"worker exited {proc.returncode}: {tail}"}
