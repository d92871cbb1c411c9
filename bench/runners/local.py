"""The local runner: each measurement job in its own worker process on this machine.

Locally a worker is forked from a fork server (`bench.device.forkserver`) that imported what a
worker needs once: each job still runs in its own process, without ~0.3 s of start-up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from bfnas.bench.device.contract import MeasurementResult, failed
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import Runner, job_json, parse_worker_output
from bfnas.bench.runners.forkserver_client import ForkServerClient, ForkServerLost, forked_result


class LocalRunner(Runner):
    """Runs each job in a new process on this machine, with the profile's timeout.

    By default the process is forked from a fork server (`bench.device.forkserver`, started on the
    first job); with `fork=False` it is a new `python -m bfnas.bench.device worker` process."""

    lanes = 1

    def __init__(self, python: str = sys.executable, fork: bool = True) -> None:
        self.python = python
        self.fork = fork and hasattr(os, "fork")
        # One BLAS thread: a fork copies only the forking thread.
        self.server = ForkServerClient(
            [python, "-m", "bfnas.bench.device", "forkserver"],
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )

    @property
    def active_pid(self) -> int | None:
        """The forked worker running now, if any."""
        return self.server.active_pid

    def run(
        self,
        model: str,
        sha256: str,
        profile: HardwareProfile,
        anchor: tuple[str, str] | None = None,
    ) -> MeasurementResult:
        job = job_json(model, sha256, profile, anchor)
        timeout = profile.measure.timeout_s
        if self.fork:
            try:
                return forked_result(self.server.run(job, timeout), timeout)
            except ForkServerLost as exc:
                # The server itself died or hung: a worker failure, and a new server next time.
                return failed(f"fork server failed: {exc}")
        try:
            proc = subprocess.run(
                [self.python, "-m", "bfnas.bench.device", "worker", "--job", "-"],
                input=job,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return failed(f"timeout after {timeout:.0f} s")
        return parse_worker_output(proc.returncode, proc.stdout, proc.stderr)

    def probe(self, profile: HardwareProfile) -> list[dict]:
        """This machine's checks of `profile` (`bench.runners.usable.require_usable`)."""
        return local_probe(profile)

    def close(self) -> None:
        """Stop the fork server (a new one starts on the next job)."""
        self.server.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def local_runner(profile: HardwareProfile) -> LocalRunner:
    """The runner of a `local` target (`registry.RUNNER_KINDS`): this machine."""
    return LocalRunner()


def local_probe(profile: HardwareProfile) -> list[dict]:
    """This machine's checks of `profile`, as dicts (`registry.RUNNER_KINDS`)."""
    from bfnas.bench.device.probe import local_checks
    from bfnas.bench.device.settings import DeviceSettings

    return [c.to_dict() for c in local_checks(DeviceSettings(profile.resolved()))]
