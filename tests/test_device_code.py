"""The device code the host ships (`bench.runners.device_code`): the device package as one
reproducible zip that runs on Python 3.8+ with nothing but numpy and the runtime."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bfnas.bench.device as device_package
from bfnas.bench.device import feeds
from bfnas.bench.device.digest import file_sha256 as device_sha256
from bfnas.bench.device.probe import OLDEST_PYTHON
from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.runners.base import job_json
from bfnas.bench.runners.device_code import (
    EPHEMERAL_RUN,
    SHIPPED_NAME,
    build_device_code,
    device_code,
)
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.encoder_io import token_batches
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.digest import file_sha256
from bfnas.models.space.subnet import SubnetConfig

# vermin has no `python -m vermin`: its console script's entry, run by this interpreter.
VERMIN = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]


def test_the_device_package_runs_on_the_oldest_python_it_claims():
    # vermin reads every file for the language features and library calls it uses.
    oldest = ".".join(map(str, OLDEST_PYTHON))
    done = subprocess.run(
        [
            *VERMIN,
            "--no-tips",
            "--violations",
            f"-t={oldest}-",
            str(Path(device_package.__file__).parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_vermin_sees_a_newer_feature(tmp_path):
    # Were vermin blind, the test above would prove nothing.
    (tmp_path / "new.py").write_text("def f(a, b):\n    return list(zip(a, b, strict=True))\n")
    done = subprocess.run(
        [*VERMIN, "--no-tips", "--violations", "-t=3.8-", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "zip(strict)" in done.stdout


def test_the_zip_is_reproducible_and_follows_the_code(tmp_path):
    root = Path(device_package.__file__).parent
    first, second = build_device_code(root), build_device_code(root)
    assert first.data == second.data and first.sha256 == device_code().sha256
    copy = tmp_path / "device"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert build_device_code(copy).sha256 == first.sha256  # file times do not count
    stats = copy / "stats.py"
    stats.write_text(stats.read_text() + "\n# changed\n")
    assert build_device_code(copy).sha256 != first.sha256


@pytest.mark.parametrize(
    ("n", "batch", "seq_len", "vocab", "padded"),
    [
        (1, 1, 128, 30000, False),
        (2, 4, 64, 30522, True),
        (3, 2, 16, 100, True),
    ],
)
def test_the_device_draws_the_tokens_bfnas_draws(n, batch, seq_len, vocab, padded):
    ours = feeds.token_batches(n, batch, seq_len, vocab, seed=7, padded=padded)
    theirs = token_batches(n, batch, seq_len, vocab, seed=7, padded=padded)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_the_device_hashes_files_as_bfnas_does(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)) * 9000)
    assert device_sha256(f) == file_sha256(f)


def test_the_shipped_zip_measures_without_bfnas_or_pydantic(
    tmp_path, artifact_root, tiny_supernet, fast_profile_file
):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    art = cache.build(
        tiny_supernet, SubnetConfig(1, 64, (2,), (64,), (128,)), "int8", get_recipe("dynamic")
    )
    code = tmp_path / device_code().file_name
    code.write_bytes(device_code().data)
    job = job_json(str(art.path), art.sha256, load_profile(fast_profile_file), None)
    # The job runs through the zip in a fresh interpreter; what it imported is read after.
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(code)!r})\n"
        f"from {SHIPPED_NAME}.worker import run_job_text\n"
        "code, out = run_job_text(sys.stdin.read())\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'bfnas', 'pydantic', 'torch', 'onnx', 'rich'})\n"
        "print(json.dumps({'code': code, 'out': json.loads(out), 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=job,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["out"]["status"] == "ok", result["out"]
    assert result["heavy"] == []
    assert result["out"]["runs"] >= 10


def test_the_zip_runs_its_commands_and_refuses_an_unknown_one(tmp_path, fast_profile_file):
    code = tmp_path / device_code().file_name
    code.write_bytes(device_code().data)
    resolved = json.dumps(load_profile(fast_profile_file).resolved())
    done = subprocess.run(
        [sys.executable, str(code), "probe", "--json", "-"],
        input=resolved,
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert done.returncode == 0 and checks["python"]["ok"] and checks["onnxruntime"]["ok"]
    bad = subprocess.run(
        [sys.executable, str(code), "train"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "forkserver,worker,probe" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_check_runs_the_code_once_and_leaves_nothing(tmp_path, fast_profile_file):
    resolved = json.dumps(load_profile(fast_profile_file).resolved()).encode()
    code = device_code()
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", EPHEMERAL_RUN, str(len(code.data)), "probe", "--json", "-"],
        input=code.data + resolved,
        capture_output=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["onnxruntime"]["ok"] and checks["numpy"]["ok"]
    # The zip was written there, and removed (onnxruntime's import leaves a file of its own).
    assert [f.name for f in temp.iterdir() if f.name.startswith("bfnas-device-")] == []


def test_a_result_of_another_contract_is_a_failure_naming_both_versions():
    from bfnas.bench.device.contract import CONTRACT_VERSION
    from bfnas.bench.runners.base import parse_worker_output

    ok = {"contract": CONTRACT_VERSION, "status": "ok", "median_ms": 1.0}
    assert parse_worker_output(0, json.dumps(ok), "").to_dict() == ok  # nothing added or lost
    other = parse_worker_output(0, json.dumps({**ok, "contract": 99}), "")
    assert other.status == "failed" and "99" in other.reason
    assert f"reads {CONTRACT_VERSION}" in other.reason
    unknown = parse_worker_output(0, json.dumps({**ok, "status": "great"}), "")
    assert unknown.status == "failed" and "'great'" in unknown.reason
    # A field of the wrong shape is a failure too, never a traceback.
    shapeless = parse_worker_output(0, json.dumps({**ok, "distrust": [{"code": "?"}]}), "")
    assert shapeless.status == "failed" and "unreadable result" in shapeless.reason


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"profile": {}}, "model"),
        ({"model": "m.onnx"}, "profile"),
        ({"model": "m.onnx", "profile": {}, "sha256": 7}, "sha256"),
        ({"model": "m.onnx", "profile": {}, "anchor": {"sha256": "x"}}, "anchor.model"),
        ([1, 2], "a job is a JSON object"),
    ],
)
def test_a_malformed_job_is_a_failed_result_naming_its_field(job, field):
    from bfnas.bench.device.contract import MeasurementJob
    from bfnas.bench.device.worker import run_job_text

    code, out = run_job_text(json.dumps(job))
    result = json.loads(out)
    assert code == 1 and result["status"] == "failed" and field in result["reason"]
    # What the host sends reads back as it was sent.
    sent = json.loads(job_json("m.onnx", "ab", load_profile("local-cpu-int8"), ("a.onnx", "cd")))
    assert MeasurementJob.from_dict(sent).to_dict() == sent
