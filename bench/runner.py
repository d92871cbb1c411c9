"""Runners: where a measurement job executes. Local: a fresh worker process per job."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Protocol

from bfnas.bench.profile import HardwareProfile


class Runner(Protocol):
    def run(self, model: str, sha256: str, profile: HardwareProfile,
            anchor: tuple[str, str] | None = None) -> dict: ...


def job_json(model: str, sha256: str, profile: HardwareProfile,
             anchor: tuple[str, str] | None) -> str:
    job: dict = {"model": model, "sha256": sha256, "profile": profile.resolved()}
    if anchor:
        job["anchor"] = {"model": anchor[0], "sha256": anchor[1]}
    return json.dumps(job)


def parse_worker_output(returncode: int, stdout: str, stderr: str) -> dict:
    """The worker's JSON line, or a failed result that says why there is none."""
    lines = stdout.strip().splitlines()
    if lines:
        try:
            out = json.loads(lines[-1])
            if isinstance(out, dict) and "status" in out:
                return out
        except json.JSONDecodeError:
            pass
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return {"status": "failed", "reason": f"worker killed by {name}{hint}"}
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "failed", "reason": f"worker exited {returncode}: {tail[:300]}"}


class LocalRunner:
    """Runs each job in a new Python process on this machine, with the profile's timeout."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def run(self, model: str, sha256: str, profile: HardwareProfile,
            anchor: tuple[str, str] | None = None) -> dict:
        job = job_json(model, sha256, profile, anchor)
        timeout = profile.measure.timeout_s
        try:
            proc = subprocess.run(
                [self.python, "-m", "bfnas.bench.worker", "--job", "-"],
                input=job, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timeout after {timeout:.0f} s"}
        return parse_worker_output(proc.returncode, proc.stdout, proc.stderr)
