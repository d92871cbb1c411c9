import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from bfnas.bench.device.contract import Distrust, DistrustReason, MeasurementResult, Status
from bfnas.bench.device.worker import run_job
from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.jobs.measurement import (
    AnchorRef,
    MachineBusy,
    distrust,
    distrust_codes,
    distrust_label,
    measure_artifact,
    starved,
)
from bfnas.bench.runners.base import Runner, job_json
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_row import LatencyRow
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.subnet import SubnetConfig

FAST = {
    "warmup_runs": 2,
    "warmup_seconds": 0.0,
    "min_runs": 10,
    "min_seconds": 0.02,
    "max_seconds": 0.5,
    "timeout_s": 60,
}


def fast_profile(**runtime):
    return parse_profile({"name": "test-cpu", "measure": FAST, "runtime": runtime}, "<test>")


@pytest.fixture(scope="module")
def model(artifact_root, tiny_supernet):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    art = cache.build(
        tiny_supernet, SubnetConfig(1, 64, (2,), (64,), (128,)), "int8", get_recipe("dynamic")
    )
    return str(art.path), art.sha256


def test_worker_measures_a_real_session(model):
    path, sha = model
    out = run_job(
        {
            "model": path,
            "sha256": sha,
            "profile": fast_profile().resolved(),
            "anchor": {"model": path, "sha256": sha},
        }
    )
    assert out.status == "ok" and out.provider == "CPUExecutionProvider"
    assert out.runs == len(out.samples_ms) == len(out.anchor_samples_ms) >= 10
    assert 0.5 < out.ratio < 2  # the anchor is the same model here
    env = out.environment
    assert env["cores"] >= 1 and "onnxruntime" in env["versions"] and env["threads"] == 1
    assert out.cpu["other_cores"] >= 0


def test_worker_refuses_a_changed_file(model, tmp_path):
    path, _ = model
    proc = subprocess.run(
        [sys.executable, "-m", "bfnas.bench.device.worker", "--job", "-"],
        input=job_json(path, "0" * 64, fast_profile(), None),
        capture_output=True,
        text=True,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["status"] == "failed" and "sha256" in out["reason"]


def test_worker_refuses_a_provider_it_cannot_run(model):
    path, sha = model
    from bfnas.bench.device.backends.ort import ProviderError

    with pytest.raises(ProviderError, match="not available"):
        run_job(
            {
                "model": path,
                "sha256": sha,
                "profile": fast_profile(providers=["NoSuchExecutionProvider"]).resolved(),
            }
        )


def _fake_python(tmp_path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_crashing_worker_is_a_failed_measurement(model, tmp_path):
    path, sha = model
    runner = LocalRunner(python=_fake_python(tmp_path, "kill -SEGV $$"), fork=False)
    out = measure_artifact(runner, path, sha, fast_profile())
    assert out.status == "failed" and "SIGSEGV" in out.reason


def test_a_hanging_worker_times_out(model, tmp_path):
    path, sha = model
    runner = LocalRunner(python=_fake_python(tmp_path, "sleep 30"), fork=False)
    prof = parse_profile(
        {
            "name": "t",
            "measure": {**FAST, "timeout_s": 1.0, "max_seconds": 0.4, "min_seconds": 0.01},
        },
        "<t>",
    )
    out = runner.run(path, sha, prof)
    assert out.status == "failed" and "timeout" in out.reason


@pytest.mark.parametrize("fork", [True, False])
def test_local_runner_uses_a_fresh_process_each_time(model, fork):
    path, sha = model
    runner, prof = LocalRunner(fork=fork), fast_profile()
    a, b = runner.run(path, sha, prof), runner.run(path, sha, prof)
    assert a.status == b.status == "ok"
    assert a.environment["host"] == b.environment["host"]
    assert os.getpid() not in (a.pid, b.pid) and a.pid != b.pid
    runner.close()


def _slow_profile(timeout_s: float):
    """Times for minutes: the minimum run count holds whatever max_seconds says."""
    return parse_profile(
        {"name": "t", "measure": {**FAST, "min_runs": 10_000_000, "timeout_s": timeout_s}}, "<t>"
    )


def test_a_forked_worker_killed_mid_run_is_a_failed_measurement(model):
    path, sha = model
    runner = LocalRunner()
    killer = threading.Thread(target=_kill_when_running, args=(runner,))
    killer.start()
    out = runner.run(path, sha, _slow_profile(60))
    killer.join()
    assert out.status == "failed" and "SIGKILL" in out.reason
    # The fork server survives its child and serves the next job.
    assert runner.run(path, sha, fast_profile()).status == "ok"
    runner.close()


def _kill_when_running(runner: LocalRunner) -> None:
    for _ in range(400):
        if runner.active_pid:
            time.sleep(0.3)  # inside the timing loop by now
            os.kill(runner.active_pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def test_a_forked_worker_over_its_timeout_is_killed(model):
    path, sha = model
    runner = LocalRunner()
    t = time.perf_counter()
    out = runner.run(path, sha, _slow_profile(1.0))
    assert out.status == "failed" and "timeout after 1 s" in out.reason
    assert time.perf_counter() - t < 10
    runner.close()


def test_a_dead_fork_server_is_replaced(model):
    path, sha = model
    runner = LocalRunner()
    assert runner.run(path, sha, fast_profile()).status == "ok"
    runner.server.proc.kill()
    runner.server.proc.wait()
    assert runner.run(path, sha, fast_profile()).status == "ok"
    runner.close()


def _burner(core: int | None = None) -> subprocess.Popen:
    pin = f"import os\nos.sched_setaffinity(0, [{core}])\n" if core is not None else ""
    return subprocess.Popen([sys.executable, "-c", pin + "while True:\n    pass"])


def test_a_run_beside_one_busy_core_is_trusted_by_its_evidence(model):
    # The newcomer's machine: a loop keeps one of two cores busy. The paired ratio stays
    # tight, so the measurement is trusted; what the loop used is recorded beside it.
    path, sha = model
    prof = parse_profile(
        {"name": "t", "measure": {**FAST, "min_seconds": 0.3, "max_seconds": 2.0, "timeout_s": 60}},
        "<t>",
    )
    anchor = AnchorRef(path, sha, "anchor")
    burner = _burner()
    try:
        time.sleep(0.3)
        out = measure_artifact(LocalRunner(), path, sha, prof, anchor)
    finally:
        burner.kill()
        burner.wait()
    assert out.status == "ok", out.reason
    assert out.ratio_rel_ci <= prof.measure.max_rel_ci
    assert out.cpu["other_cores"] > 0.5 and out.cpu["own_cores"] > 0


def test_a_worker_sharing_its_only_core_is_seen_starved(model):
    path, sha = model
    prof = parse_profile(
        {"name": "t", "measure": {**FAST, "min_seconds": 0.5}, "runtime": {"cpu_affinity": [0]}},
        "<t>",
    )
    burner = _burner(core=0)
    try:
        time.sleep(0.3)
        out = LocalRunner().run(path, sha, prof)
    finally:
        burner.kill()
        burner.wait()
    assert out.status == "ok" and starved(out, prof), out.cpu
    assert Distrust.STARVED in codes(distrust(out, prof))
    assert not starved(replace(out, cpu={**out.cpu, "own_cores": 0.97}), prof)


class ScriptedRunner(Runner):
    """Answers each run with the next prepared result (the judgement is what is tested)."""

    lanes = 1

    def __init__(self, results: list[MeasurementResult]) -> None:
        self.results, self.calls = list(results), 0

    def run(self, model, sha256, profile, anchor=None) -> MeasurementResult:
        self.calls += 1
        return replace(self.results.pop(0))  # a copy: the job writes to what it gets


def _result(
    ci: float, anchor_ci: float = 0.01, own: float = 1.0, other: float = 0.0
) -> MeasurementResult:
    return MeasurementResult(
        Status.OK,
        median_ms=1.0,
        median_rel_ci=0.3,
        ratio=1.5,
        ratio_rel_ci=ci,
        anchor={"median_rel_ci": anchor_ci},
        threads=1,
        provider="CPUExecutionProvider",
        cpu={"own_cores": own, "other_cores": other},
    )


def codes(reasons: list[DistrustReason]) -> list[Distrust]:
    return [r.code for r in reasons]


def test_trust_follows_the_ratio_and_the_anchor_not_the_load():
    prof = fast_profile()
    assert distrust(_result(0.005, other=1.5), prof) == []  # busy, but the evidence is good
    assert codes(distrust(_result(0.05), prof)) == [Distrust.WIDE_RATIO_CI]
    assert codes(distrust(_result(0.005, anchor_ci=0.2), prof)) == [Distrust.NOISY_ANCHOR]
    no_anchor = MeasurementResult(Status.OK, median_rel_ci=0.05)
    assert codes(distrust(no_anchor, prof)) == [Distrust.WIDE_MEDIAN_CI]
    assert distrust(replace(no_anchor, median_rel_ci=0.001), prof) == []
    # A tight ratio from a worker that was off its core most of the time is not trusted.
    assert codes(distrust(_result(0.005, own=0.3, other=1.7), prof)) == [Distrust.STARVED]
    assert distrust(_result(0.005, own=0.7, other=1.3), prof) == []
    # Each reason is its code and the numbers that decided it.
    (wide,) = distrust(_result(0.05), prof)
    assert wide.text() == f"paired-ratio CI too wide: ±5.0% > ±{prof.measure.max_rel_ci:.1%}"


def test_a_stored_reason_is_read_back_by_its_code_and_an_old_row_by_its_label():
    def row(**fields) -> LatencyRow:
        cfg = SubnetConfig(1, 64, (2,), (64,), (128,))
        return LatencyRow(1, "h", "p", cfg.key(), cfg, "s", "sample", Status.UNSTABLE, **fields)

    coded = row(extra={"distrust": [{"code": "noisy-anchor", "detail": "x"}]}, reason="?")
    assert distrust_codes(coded) == [Distrust.NOISY_ANCHOR]
    old = row(reason="median CI too wide: ±3.0% > ±2.0% | median CI too wide: ...")
    assert distrust_codes(old) == [Distrust.WIDE_MEDIAN_CI]
    assert distrust_label(old) == "median CI too wide" and distrust_label(row()) == "unknown"


def test_an_untrusted_run_is_measured_again_then_marked_unstable(model):
    prof = fast_profile()
    runner = ScriptedRunner([_result(0.05), _result(0.004)])
    out = measure_artifact(runner, "m", "s", prof)
    assert out.status == "ok" and out.attempts == 2 and "earlier attempt" in out.reason
    runner = ScriptedRunner([_result(0.05), _result(0.06)])
    out = measure_artifact(runner, "m", "s", prof)
    assert out.status == "unstable" and out.attempts == 2
    assert out.reason.count(Distrust.WIDE_RATIO_CI.label) == 2
    assert [c.code for c in out.distrust] == [Distrust.WIDE_RATIO_CI, Distrust.WIDE_RATIO_CI]


def test_a_machine_without_a_free_core_is_waited_for_then_refused():
    prof = parse_profile({"name": "t", "measure": {**FAST, "busy_wait_s": 30}}, "<t>")
    now = [0.0]
    waits: list = []

    def sleep(s: float) -> None:
        now[0] += s

    # Starved and untrusted twice, then a core comes free and the run is trusted.
    runner = ScriptedRunner([_result(0.004, own=0.4, other=1.6)] * 2 + [_result(0.004)])
    out = measure_artifact(
        runner, "m", "s", prof, on_wait=waits.append, sleep=sleep, clock=lambda: now[0]
    )
    assert out.status == "ok" and runner.calls == 3 and len(waits) == 2
    assert "machine busy" in waits[0].message() and waits[1].waited_s == 10

    # Never a free core: bounded by busy_wait_s, then one clear refusal.
    runner = ScriptedRunner([_result(0.004, own=0.4, other=1.6)] * 10)
    with pytest.raises(MachineBusy, match="too busy to measure"):
        measure_artifact(runner, "m", "s", prof, sleep=sleep, clock=lambda: now[0])
    assert runner.calls == 4  # at 0, 10, 20 and 30 s


def test_a_job_that_fails_at_once_is_answered_at_once(model):
    # The server's two lines (pid, result) arrive together: both must be read.
    path, _ = model
    runner = LocalRunner()
    t = time.perf_counter()
    out = runner.run(path, "0" * 64, fast_profile())
    assert out.status == "failed" and "sha256" in out.reason
    assert time.perf_counter() - t < 10
    assert runner.run(path, "0" * 64, fast_profile()).status == "failed"  # and again, same server
    runner.close()
