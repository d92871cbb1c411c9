"""What every runner is: where a measurement job executes, the job it is sent and the result
it gives back (`Runner`), the error when its device cannot be reached, and the runner a
profile gets (`runner_for`, by its `target.kind` in `registry`)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bfnas.bench.device.contract import (
    MeasurementJob,
    MeasurementResult,
    contract_problem,
    failed,
)
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.registry import runner_kind
from bfnas.errors import InputError, OperationFailed

T = TypeVar("T")


class ConnectionLost(Exception):
    """A call to a device failed in a way waiting may cure (a dropped or refused connection,
    no answer): `Retrying` tries it again."""


@dataclass
class Retrying:
    """Calls a function until it stops raising `ConnectionLost`, `retries` more times at
    most, waiting `backoff_s`, then twice that, and so on; then `DeviceUnreachable` with the
    line `gave_up(what, attempts, last error)` makes. `retried` counts the repeated calls.
    The transport of every remote runner (SSH, adb) retries this way."""

    retries: int
    backoff_s: float
    gave_up: Callable[[str, int, str], str]
    sleep: Callable[[float], None] = time.sleep
    retried: int = 0

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        delay, last = self.backoff_s, ""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except ConnectionLost as exc:
                last = str(exc)
                if attempt == self.retries:
                    break
                self.retried += 1
                self.sleep(delay)
                delay *= 2
        raise DeviceUnreachable(self.gave_up(what, self.retries + 1, last))


class DeviceUnreachable(OperationFailed):
    """The device cannot be reached (after retries): not a property of the subnet, so the
    job stops instead of storing a failure; a rerun resumes. Wherever it is raised (starting
    a runner, too) the CLI prints it as one line, exit 1."""


class Runner:
    """Runs measurement jobs somewhere; every runner is one (local, SSH, Ray, adb, a test's
    scripted one) and offers all of this, with these defaults:

    - `lanes`: how many jobs it can run at once (one per device); `run` may then be called
      from that many threads. Default 1.
    - `run(model, sha256, profile, anchor)`: one measurement's `MeasurementResult` (what
      the device's harness reported, or a failed result saying why there is none).
    - `probe(profile)`: the device's `hw check` rows (`bench.device.probe.Check.to_dict`),
      which a job runs before it writes anything (`usable.require_usable`). Default: no
      checks, for a runner that measures nowhere real.
    - `close()`: let go of what it holds (connections, fork servers). Default: nothing."""

    lanes: int = 1

    def run(
        self,
        model: str,
        sha256: str,
        profile: HardwareProfile,
        anchor: tuple[str, str] | None = None,
    ) -> MeasurementResult:
        raise NotImplementedError

    def probe(self, profile: HardwareProfile) -> list[dict]:
        return []

    def close(self) -> None:
        return None


def runner_for(profile: HardwareProfile) -> Runner:
    """Where `profile`'s measurements run: the runner its `target.kind` registers (this
    machine, an SSH device, the devices of a Ray cluster). Bad input (the ray package
    missing for a ray target, say) is an InputError naming the profile's file and field."""
    return runner_kind(profile.target.kind).load_build()(profile)


def job_json(
    model: str, sha256: str, profile: HardwareProfile, anchor: tuple[str, str] | None
) -> str:
    """The job a worker runs, as JSON (`MeasurementJob`)."""
    job = MeasurementJob(
        model,
        profile.resolved(),
        sha256,
        anchor_model=anchor[0] if anchor else None,
        anchor_sha256=anchor[1] if anchor else None,
    )
    return json.dumps(job.to_dict())


def resolved_job(job: dict) -> dict:
    """`job` with its profile validated and every setting resolved, as a device reads it (the
    device package has no defaults of its own): what `bfnas worker` runs a hand-written job
    with. A bad profile is an InputError naming the job's field."""
    from bfnas.bench.hardware_profile import parse_profile

    if not isinstance(job, dict) or not isinstance(job.get("profile"), dict):
        raise InputError("job", "profile", "a job needs a profile table")
    profile = parse_profile(job["profile"], "job profile")
    return {**job, "profile": profile.resolved()}


def parse_worker_output(returncode: int, stdout: str, stderr: str) -> MeasurementResult:
    """The worker's result from its JSON line, or a failed result that says why there is
    none."""
    lines = stdout.strip().splitlines()
    if lines:
        try:
            out = json.loads(lines[-1])
        except json.JSONDecodeError:
            out = None
        if isinstance(out, dict):
            problem = contract_problem(out)
            if problem is None:
                try:
                    return MeasurementResult.from_dict(out)
                except (TypeError, ValueError) as exc:  # a field of the wrong shape
                    problem = f"the device reported an unreadable result ({exc})"
            return failed(problem)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return failed(f"worker killed by {name}{hint}")
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return failed(f"worker exited {returncode}: {tail[:300]}")
