"""One measurement in a fresh process: `bfnas worker --job FILE|-` (or, on a device, the
shipped device package's `worker` command).

The job is JSON (`contract.MeasurementJob`): `{"model": PATH, "sha256": HEX, "profile":
{resolved profile}}`, and optionally `"anchor": {"model": PATH, "sha256": HEX}`, a fixed
model timed right before every run of the measured one (see `bench.device.timing.time_runs`).
The worker checks the file's hash, applies the profile (affinity, providers, threads,
workload), times the model with the shared stopping rules and prints one JSON object on
stdout (`contract.MeasurementResult`). Running each
measurement in its own process keeps one subnet's allocator state, thread pools or crash
away from the next one's numbers. This is also what runs on a remote device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .backends import Infer, backend_named
from .contract import MeasurementJob, MeasurementResult, Status, failed
from .digest import file_sha256
from .environment import CpuWatch, environment
from .memory import MemoryWatch
from .settings import DeviceSettings
from .stats import median_rel_ci, summarize
from .timing import StopRule, first_run, time_runs


class JobError(Exception):
    """The job cannot be measured (bad file, missing backend, wrong provider)."""


def _checked(path: str, sha256: str | None) -> Path:
    model = Path(path).expanduser()
    if not model.is_file():
        raise JobError(f"model file not found: {model}")
    if sha256 and file_sha256(model) != sha256:
        raise JobError(f"sha256 of {model} does not match the job's")
    return model


def _inference(model: Path, profile: DeviceSettings) -> tuple[Infer, str, dict]:
    """(the inference function, what really runs it, details) from the profile's backend,
    as the backend registry names it (`bench.device.backends`)."""
    name = profile.runtime.backend
    try:
        make_infer = backend_named(name).load_make_infer()
    except ImportError as exc:
        raise JobError(f"backend {name} is not usable here: {exc}") from None
    return make_infer(str(model), profile)


def run_job(data: dict) -> MeasurementResult:
    """Measure the job `data` describes (`MeasurementJob`'s JSON object)."""
    try:
        job = MeasurementJob.from_dict(data)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    profile = DeviceSettings(job.profile)
    model = _checked(job.model, job.sha256)
    rt = profile.runtime
    if rt.cpu_affinity:
        os.sched_setaffinity(0, rt.cpu_affinity)
    rule = StopRule.from_measure(profile.measure)

    # Memory: from the runtime imported and no session made, to the model's session and its
    # first run, before the anchor exists (its memory is not the model's).
    memory = MemoryWatch()
    t = time.perf_counter()
    infer, provider, details = _inference(model, profile)
    session_ms = (time.perf_counter() - t) * 1e3
    first_ms = first_run(infer)
    used = memory.read()
    anchor = None
    if job.anchor_model is not None:
        anchor_path = _checked(job.anchor_model, job.anchor_sha256)
        anchor, _, _ = _inference(anchor_path, profile)

    watch = CpuWatch()
    timing = time_runs(infer, rule, anchor, first_ms=first_ms)
    cpu = watch.read()
    paired = {}
    if timing.anchor_ms is not None:
        ratios = timing.ratios()
        paired = {
            "ratio": float(np.median(ratios)),
            "ratio_rel_ci": median_rel_ci(ratios),
            "ratio_cov": float(np.std(ratios) / np.mean(ratios)),
            "anchor": summarize(timing.anchor_ms),
            "anchor_samples_ms": timing.anchor_ms,
        }
    return MeasurementResult(
        Status.OK,
        **summarize(timing.samples_ms),
        **paired,
        first_ms=timing.first_ms,
        session_ms=session_ms,
        warmup_runs=timing.warmup_runs,
        stop_reason=timing.stop_reason,
        timed_seconds=timing.seconds,
        samples_ms=timing.samples_ms,
        provider=provider,
        threads=rt.intra_op_threads,
        cpu=cpu,
        memory=used,
        model_bytes=model.stat().st_size,
        details=details,
        pid=os.getpid(),
        environment=environment(rt.intra_op_threads, provider),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bfnas worker",
        description="Measure one model as a job says and print one JSON object.",
        epilog="example:\n"
        '  echo \'{"model": "m.onnx", "profile": {"name": "x"}}\' | bfnas worker --job -',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--job", required=True, help="job JSON file, or - for standard input")
    a = p.parse_args(argv)
    try:
        text = sys.stdin.read() if a.job == "-" else Path(a.job).read_text()
        code, out = run_job_text(text)
    except OSError as exc:
        code, out = 1, failed_line(exc)
    print(out)
    return code


def run_job_text(text: str) -> tuple[int, str]:
    """(exit code, one JSON line) for a job given as JSON text: failures are data too."""
    try:
        return 0, json.dumps(run_job(json.loads(text)).to_dict())
    except Exception as exc:  # reported to the parent as data, never as a traceback
        return 1, failed_line(exc)


def failed_line(exc: Exception) -> str:
    """A failed job as the worker's one JSON line."""
    return json.dumps(failed(f"{type(exc).__name__}: {exc}").to_dict())


if __name__ == "__main__":
    sys.exit(main())
