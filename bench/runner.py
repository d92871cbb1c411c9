"""Runners: where a measurement job executes. Local: a fresh worker process per job.

Locally a worker is forked from a fork server (`bench.forkserver`) that imported what a
worker needs once: each job still runs in its own process, without ~0.3 s of start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Protocol

from bfnas.bench.profile import HardwareProfile


class DeviceUnreachable(RuntimeError):
    """The device cannot be reached (after retries): not a property of the subnet, so the
    job stops instead of storing a failure; a rerun resumes."""


class Runner(Protocol):
    """Runs measurement jobs somewhere. `lanes`: how many jobs it can run at once (one per
    device); `run` may then be called from that many threads."""

    lanes: int

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
    """Runs each job in a new process on this machine, with the profile's timeout.

    By default the process is forked from a fork server (`bench.forkserver`, started on the
    first job); with `fork=False` it is a new `python -m bfnas.bench.worker` process."""

    lanes = 1

    def __init__(self, python: str = sys.executable, fork: bool = True) -> None:
        self.python = python
        self.fork = fork and hasattr(os, "fork")
        self.active_pid: int | None = None  # the forked worker running now, if any
        self._server: subprocess.Popen | None = None
        self._pending = b""  # bytes read from the server past the last full line

    def run(self, model: str, sha256: str, profile: HardwareProfile,
            anchor: tuple[str, str] | None = None) -> dict:
        job = job_json(model, sha256, profile, anchor)
        timeout = profile.measure.timeout_s
        if self.fork:
            return self._run_forked(job, timeout)
        try:
            proc = subprocess.run(
                [self.python, "-m", "bfnas.bench.worker", "--job", "-"],
                input=job, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timeout after {timeout:.0f} s"}
        return parse_worker_output(proc.returncode, proc.stdout, proc.stderr)

    def _run_forked(self, job: str, timeout: float) -> dict:
        server = self._fork_server()
        try:
            server.stdin.write((json.dumps({"job": job, "timeout": timeout}) + "\n").encode())
            server.stdin.flush()
            started = self._answer(60)
            self.active_pid = started["pid"]
            done = self._answer(timeout + 60)
        except (OSError, ValueError, KeyError) as exc:
            # The server itself died or hung: a worker failure, and a new server next time.
            self.close()
            return {"status": "failed", "reason": f"fork server failed: {exc}"}
        finally:
            self.active_pid = None
        if done.get("timeout"):
            return {"status": "failed", "reason": f"timeout after {timeout:.0f} s"}
        return parse_worker_output(done["returncode"], done["out"], "")

    def _fork_server(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            # One BLAS thread: a fork copies only the forking thread.
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
            self._server = subprocess.Popen(
                [self.python, "-m", "bfnas.bench.forkserver"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=env, bufsize=0,
            )
            self._pending = b""
        return self._server

    def _answer(self, timeout: float) -> dict:
        """The server's next line as JSON. Read from the raw pipe with an own buffer: a
        buffered reader could swallow the next line too, and select() would then wait on
        an empty pipe for an answer already read."""
        assert self._server is not None and self._server.stdout is not None
        fd = self._server.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise OSError("no answer")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise OSError("it exited")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        """Stop the fork server (a new one starts on the next job)."""
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
