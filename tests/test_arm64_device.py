"""bfnas on an ARM64 device: Debian's aarch64 Python 3.11 with only numpy and onnxruntime,
emulated by qemu-aarch64-static (user mode) and reached through a real sshd on 127.0.0.1.
The host ships the device code; the device runs it on another ISA and another Python.
Emulated timings say that it works, never how fast a board is."""

import json
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import FAST_PROFILE

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.context import open_setup
from bfnas.bench.runners.device_code import device_code
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.loop import DeviceVerifier

pytestmark = [pytest.mark.ssh, pytest.mark.arm64]

# Emulation runs every instruction through QEMU (a tiny subnet's run takes 40-170 ms here):
# fewer runs a measurement, a drift reference every 10 subnets, more time a job, and no
# anchor timed beside each run (half the runs; pairing is tested on this host's own runs,
# and what these tests ask is what runs on the device, not how fast).
ARM_MEASURE = {
    "warmup_runs = 2\n": "warmup_runs = 1\n",
    "min_runs = 10\n": "min_runs = 5\n",
    "drift_every = 3\n": "drift_every = 10\nanchor = false\n",
    "timeout_s = 120\n": "timeout_s = 600\n",
}


@pytest.fixture(scope="module")
def arm_profile(sshd, arm64_python, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("arm64")
    target = sshd.target(workdir=str(folder / "device"), python=str(arm64_python))
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in target.items())
    text = FAST_PROFILE.replace('name = "test-cpu-int8"', 'name = "test-arm64-int8"')
    for fast, emulated in ARM_MEASURE.items():
        assert fast in text
        text = text.replace(fast, emulated)
    path = folder / "test-arm64-int8.toml"
    path.write_text(f"{text}\n[target]\n{lines}\n")
    return path


def test_the_device_holds_nothing_but_python_numpy_and_onnxruntime(arm64_python, tmp_path):
    script = (
        "import importlib.util, json, platform\n"
        "from importlib import metadata\n"
        "names = sorted({d.metadata['Name'].lower() for d in metadata.distributions()})\n"
        "absent = [m for m in ('bfnas', 'pydantic', 'torch', 'onnx') "
        "if importlib.util.find_spec(m) is None]\n"
        "print(json.dumps({'machine': platform.machine(), 'dists': names, 'absent': absent}))\n"
    )
    done = subprocess.run(
        [str(arm64_python), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=tmp_path,  # -c puts the working folder on the path: a checkout's would count
    )
    seen = json.loads(done.stdout)
    assert seen["machine"] == "aarch64"
    assert seen["dists"] == ["numpy", "onnxruntime"]
    assert seen["absent"] == ["bfnas", "pydantic", "torch", "onnx"]


def test_hw_check_runs_on_the_arm64_device(arm_profile, capsys):
    assert main(["hw", "check", str(arm_profile), "--json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert "Cortex-A76" in checks["device cpu"]["detail"]
    assert "asimddp" in checks["device cpu"]["detail"]  # the dot-product INT8 kernels need it
    assert "onnxruntime" in checks["device onnxruntime"]["detail"]


def test_profile_and_a_search_verify_on_the_arm64_device(
    arm_profile, tiny_space_file, tmp_path, capsys
):
    db, artifacts = tmp_path / "lat.db", tmp_path / "art"
    common = [
        "--hw",
        str(arm_profile),
        "--space",
        str(tiny_space_file),
        "--db",
        str(db),
        "--artifacts",
        str(artifacts),
    ]
    assert main(["profile", *common, "--samples", "6", "--json"]) == 0
    capsys.readouterr()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT status, median_ms, environment, stats FROM measurements WHERE role = 'sample'"
    ).fetchall()
    assert len(rows) == 6 and all(r[0] in ("ok", "unstable") and r[1] > 0 for r in rows)
    for _, _, environment, stats in rows:
        env = json.loads(environment)
        assert env["machine"] == "aarch64" and "Cortex-A76" in env["cpu_model"]
        assert "bfnas" not in env["versions"] and env["versions"]["onnxruntime"]
        assert json.loads(stats)["device_code"] == device_code().sha256
    profiled = [
        SubnetConfig.from_json(a)
        for (a,) in con.execute(
            "SELECT s.json FROM subnets s JOIN measurements m ON m.subnet_key = s.key "
            "WHERE m.role = 'sample'"
        )
    ]
    con.close()

    # What a search does with its picks (`search.loop.DeviceVerifier`, the verifier `bfnas
    # search --verify` runs; a search needs 30 rows to fit first, 3 minutes of emulation):
    # each is built and measured on the device, a first-time subnet joining the samples and a
    # repeat kept apart as role "verify".
    profile, space = load_profile(arm_profile), load_space(str(tiny_space_file))
    fresh = next(
        c for c in (space.sample(random.Random(i)) for i in range(100)) if c not in profiled
    )
    with open_setup(profile, space, artifacts=artifacts) as setup, LatencyStore(db) as store:
        store.add_profile(profile.name, profile.resolved(), profile.hash())
        run_id = store.start_run(profile.hash(), "search", {"verify": 2})
        verify = DeviceVerifier(setup=setup, store=store)
        verified = [verify(fresh, run_id), verify(profiled[0], run_id)]
        assert all(v.result.status in ("ok", "unstable") for v in verified)
        assert all(v.latency_ms("median_ms") > 0 for v in verified)
        rows = {
            (r.role, r.subnet_key): r
            for role in ("sample", "verify")
            for r in store.measurements(profile.hash(), role=role)
        }
    assert {("sample", fresh.key()), ("verify", profiled[0].key())} <= set(rows)
    assert len(rows) == 6 + 2
    assert {r.environment["machine"] for r in rows.values()} == {"aarch64"}
    assert {r.extra["device_code"] for r in rows.values()} == {device_code().sha256}
