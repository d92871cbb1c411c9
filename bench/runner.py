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
from bfnas.models.errors import OperationFailed


class DeviceUnreachable(OperationFailed):
    """The device cannot be reached (after retries): not a property of the subnet, so the
    job stops instead of storing a failure; a rerun resumes. Wherever it is raised (starting
    a runner, too) the CLI prints it as one line, exit 1."""


class Runner(Protocol):
    """Runs measurement jobs somewhere. `lanes`: how many jobs it can run at once (one per
    device); `run` may then be called from that many threads. A runner that measures on a
    real device also has `probe(profile) -> list[dict]`: the device's `hw check` rows, which
    a job runs before it writes anything (`bench.probe.require_usable`)."""

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


class ForkServerLost(Exception):
    """The fork server went away or stopped answering. `started`: it had been ready (so a job,
    not the start-up, was interrupted)."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


class ForkServerClient:
    """The client of a `bench.forkserver` process reached through `argv`'s pipes: a local
    process, or `ssh DEVICE python -m bfnas.bench.forkserver`. Started on the first job."""

    def __init__(self, argv: list[str], env: dict | None = None, start_timeout: float = 60.0,
                 stderr=None) -> None:
        self.argv, self.env, self.start_timeout, self.stderr = argv, env, start_timeout, stderr
        self.proc: subprocess.Popen | None = None
        self.active_pid: int | None = None  # the worker running now, if any
        self._pending = b""  # bytes read past the last full line

    def run(self, job: str, timeout: float) -> dict:
        """The server's answer for one job: `{"returncode", "out"}` or `{"timeout": true}`."""
        started = False
        try:
            self._start()
            started = True
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({"job": job, "timeout": timeout}) + "\n").encode())
            self.proc.stdin.flush()
            self.active_pid = self._answer(60)["pid"]
            return self._answer(timeout + 60)
        except (OSError, ValueError, KeyError) as exc:
            self.close()
            raise ForkServerLost(str(exc) or type(exc).__name__, started) from None
        finally:
            self.active_pid = None

    def _start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        # A process group of its own: the terminal's Ctrl-C (SIGINT to the foreground process
        # group) reaches only the job, which decides (stops, stores nothing half-done, closes
        # this server and its worker), instead of every worker printing a KeyboardInterrupt.
        # The same session, not a new one: with the kernel's autogroup scheduling a session
        # is a CPU share of its own, and the workers would no longer compete with the user's
        # other processes as measured (a busy machine would look idle to them).
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=self.env, bufsize=0,
                                     process_group=0)
        self._pending = b""
        if not self._answer(self.start_timeout).get("ready"):
            raise ValueError("the fork server did not say it was ready")

    def _answer(self, timeout: float) -> dict:
        """The server's next line as JSON. Read from the raw pipe with an own buffer: a
        buffered reader could swallow the next line too, and select() would then wait on
        an empty pipe for an answer already read."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise OSError(f"no answer within {timeout:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise OSError("it exited")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def close(self) -> None:
        """Stop the server and the worker it forked, if one is running (a new server starts
        on the next job). They are one process group (`_start`): both go at once."""
        if self.proc is not None:
            if self.proc.poll() is None:  # not reaped: its pid, so its group's id, is still ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def forked_result(done: dict, timeout: float, where: str = "") -> dict:
    """A measurement result from a fork server's answer."""
    if done.get("timeout"):
        return {"status": "failed", "reason": f"timeout after {timeout:.0f} s{where}"}
    return parse_worker_output(done["returncode"], done["out"], "")


class LocalRunner:
    """Runs each job in a new process on this machine, with the profile's timeout.

    By default the process is forked from a fork server (`bench.forkserver`, started on the
    first job); with `fork=False` it is a new `python -m bfnas.bench.worker` process."""

    lanes = 1

    def __init__(self, python: str = sys.executable, fork: bool = True) -> None:
        self.python = python
        self.fork = fork and hasattr(os, "fork")
        # One BLAS thread: a fork copies only the forking thread.
        self.server = ForkServerClient([python, "-m", "bfnas.bench.forkserver"],
                                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})

    @property
    def active_pid(self) -> int | None:
        """The forked worker running now, if any."""
        return self.server.active_pid

    def run(self, model: str, sha256: str, profile: HardwareProfile,
            anchor: tuple[str, str] | None = None) -> dict:
        job = job_json(model, sha256, profile, anchor)
        timeout = profile.measure.timeout_s
        if self.fork:
            try:
                return forked_result(self.server.run(job, timeout), timeout)
            except ForkServerLost as exc:
                # The server itself died or hung: a worker failure, and a new server next time.
                return {"status": "failed", "reason": f"fork server failed: {exc}"}
        try:
            proc = subprocess.run(
                [self.python, "-m", "bfnas.bench.worker", "--job", "-"],
                input=job, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"timeout after {timeout:.0f} s"}
        return parse_worker_output(proc.returncode, proc.stdout, proc.stderr)

    def probe(self, profile: HardwareProfile) -> list[dict]:
        """This machine's checks of `profile` (`bench.probe.require_usable`)."""
        from bfnas.bench.probe import local_checks

        return [c.to_dict() for c in local_checks(profile)]

    def close(self) -> None:
        """Stop the fork server (a new one starts on the next job)."""
        self.server.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
