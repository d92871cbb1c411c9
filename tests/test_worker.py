import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from bfnas.bench.measure import measure_artifact
from bfnas.bench.profile import parse_profile
from bfnas.bench.runner import LocalRunner, job_json
from bfnas.bench.worker import run_job
from bfnas.models.artifact import ArtifactCache, FidelitySettings
from bfnas.models.quantize import get_recipe
from bfnas.models.subnet import SubnetConfig

FAST = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.02,
        "max_seconds": 0.5, "timeout_s": 60}


def fast_profile(**runtime):
    return parse_profile({"name": "test-cpu", "measure": FAST, "runtime": runtime}, "<test>")


@pytest.fixture(scope="module")
def model(artifact_root, tiny_supernet):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    art = cache.build(tiny_supernet, SubnetConfig(1, 64, (2,), (64,), (128,)), "int8",
                      get_recipe("dynamic"))
    return str(art.path), art.sha256


def test_worker_measures_a_real_session(model):
    path, sha = model
    out = run_job({"model": path, "sha256": sha, "profile": fast_profile().resolved(),
                   "anchor": {"model": path, "sha256": sha}})
    assert out["status"] == "ok" and out["provider"] == "CPUExecutionProvider"
    assert out["runs"] == len(out["samples_ms"]) == len(out["anchor_samples_ms"]) >= 10
    assert 0.5 < out["ratio"] < 2  # the anchor is the same model here
    env = out["environment"]
    assert env["cores"] >= 1 and "onnxruntime" in env["versions"] and env["threads"] == 1
    assert out["cpu"]["other_cores"] >= 0


def test_worker_refuses_a_changed_file(model, tmp_path):
    path, _ = model
    proc = subprocess.run([sys.executable, "-m", "bfnas.bench.worker", "--job", "-"],
                          input=job_json(path, "0" * 64, fast_profile(), None),
                          capture_output=True, text=True)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["status"] == "failed" and "sha256" in out["reason"]


def test_worker_refuses_a_provider_it_cannot_run(model):
    path, sha = model
    from bfnas.bench.ort_harness import ProviderError

    with pytest.raises(ProviderError, match="not available"):
        run_job({"model": path, "sha256": sha,
                 "profile": fast_profile(providers=["NoSuchExecutionProvider"]).resolved()})


def _fake_python(tmp_path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_crashing_worker_is_a_failed_measurement(model, tmp_path):
    path, sha = model
    runner = LocalRunner(python=_fake_python(tmp_path, "kill -SEGV $$"), fork=False)
    out = measure_artifact(runner, path, sha, fast_profile())
    assert out["status"] == "failed" and "SIGSEGV" in out["reason"]


def test_a_hanging_worker_times_out(model, tmp_path):
    path, sha = model
    runner = LocalRunner(python=_fake_python(tmp_path, "sleep 30"), fork=False)
    prof = parse_profile({"name": "t", "measure": {**FAST, "timeout_s": 1.0, "max_seconds": 0.4,
                                                    "min_seconds": 0.01}}, "<t>")
    out = runner.run(path, sha, prof)
    assert out["status"] == "failed" and "timeout" in out["reason"]


@pytest.mark.parametrize("fork", [True, False])
def test_local_runner_uses_a_fresh_process_each_time(model, fork):
    path, sha = model
    runner, prof = LocalRunner(fork=fork), fast_profile()
    a, b = runner.run(path, sha, prof), runner.run(path, sha, prof)
    assert a["status"] == b["status"] == "ok"
    assert a["environment"]["host"] == b["environment"]["host"]
    assert os.getpid() not in (a["pid"], b["pid"]) and a["pid"] != b["pid"]
    runner.close()


def _slow_profile(timeout_s: float):
    """Times for minutes: the minimum run count holds whatever max_seconds says."""
    return parse_profile({"name": "t", "measure": {**FAST, "min_runs": 10_000_000,
                                                    "timeout_s": timeout_s}}, "<t>")


def test_a_forked_worker_killed_mid_run_is_a_failed_measurement(model):
    path, sha = model
    runner = LocalRunner()
    killer = threading.Thread(target=_kill_when_running, args=(runner,))
    killer.start()
    out = runner.run(path, sha, _slow_profile(60))
    killer.join()
    assert out["status"] == "failed" and "SIGKILL" in out["reason"]
    # The fork server survives its child and serves the next job.
    assert runner.run(path, sha, fast_profile())["status"] == "ok"
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
    assert out["status"] == "failed" and "timeout after 1 s" in out["reason"]
    assert time.perf_counter() - t < 10
    runner.close()


def test_a_dead_fork_server_is_replaced(model):
    path, sha = model
    runner = LocalRunner()
    assert runner.run(path, sha, fast_profile())["status"] == "ok"
    runner.server.proc.kill()
    runner.server.proc.wait()
    assert runner.run(path, sha, fast_profile())["status"] == "ok"
    runner.close()


def test_a_run_beside_a_busy_process_is_measured_again_then_marked_unstable(model):
    path, sha = model
    prof = parse_profile({"name": "t", "measure": {**FAST, "min_seconds": 0.3, "max_other_cpu": 0.3}}, "<t>")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        out = measure_artifact(LocalRunner(), path, sha, prof)
    finally:
        burner.kill()
        burner.wait()
    assert out["status"] == "unstable" and out["attempts"] == 2
    assert "other processes used" in out["reason"] and out["cpu"]["other_cores"] > 0.3


def test_instability_reasons():
    from bfnas.bench.measure import instability

    prof = fast_profile()
    calm = {"cov": 0.01, "cpu": {"other_cores": 0.0}}
    assert instability(calm, prof) is None
    assert "CoV" in instability({**calm, "cov": 0.9}, prof)
    # With a paired anchor the ratio's spread is judged, not the raw one.
    assert instability({**calm, "cov": 0.9, "ratio_cov": 0.01}, prof) is None
    assert "other processes" in instability({**calm, "cpu": {"other_cores": 1.5}}, prof)


def test_a_job_that_fails_at_once_is_answered_at_once(model):
    # The server's two lines (pid, result) arrive together: both must be read.
    path, _ = model
    runner = LocalRunner()
    t = time.perf_counter()
    out = runner.run(path, "0" * 64, fast_profile())
    assert out["status"] == "failed" and "sha256" in out["reason"]
    assert time.perf_counter() - t < 10
    assert runner.run(path, "0" * 64, fast_profile())["status"] == "failed"  # and again, same server
    runner.close()
