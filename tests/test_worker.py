import json
import os
import stat
import subprocess
import sys

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
    runner = LocalRunner(python=_fake_python(tmp_path, "kill -SEGV $$"))
    out = measure_artifact(runner, path, sha, fast_profile())
    assert out["status"] == "failed" and "SIGSEGV" in out["reason"]


def test_a_hanging_worker_times_out(model, tmp_path):
    path, sha = model
    runner = LocalRunner(python=_fake_python(tmp_path, "sleep 30"))
    prof = parse_profile({"name": "t", "measure": {**FAST, "timeout_s": 1.0, "max_seconds": 0.4,
                                                    "min_seconds": 0.01}}, "<t>")
    out = runner.run(path, sha, prof)
    assert out["status"] == "failed" and "timeout" in out["reason"]


def test_local_runner_uses_a_fresh_process_each_time(model):
    path, sha = model
    runner, prof = LocalRunner(), fast_profile()
    a, b = runner.run(path, sha, prof), runner.run(path, sha, prof)
    assert a["status"] == b["status"] == "ok"
    assert a["environment"]["host"] == b["environment"]["host"]
    assert os.getpid() not in (a["pid"], b["pid"]) and a["pid"] != b["pid"]
