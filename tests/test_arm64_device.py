"""bfnas on an ARM64 device: Debian's aarch64 Python 3.11 with only numpy and onnxruntime,
emulated by qemu-aarch64-static (user mode) and reached through a real sshd on 127.0.0.1.
The host ships the device code; the device runs it on another ISA and another Python.
Emulated timings say that it works, never how fast a board is."""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import FAST_PROFILE

from bfnas.bench.runners.device_code import device_code
from bfnas.cli import main

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
    assert main(["profile", *common, "--samples", "30", "--json"]) == 0
    capsys.readouterr()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT status, median_ms, environment, stats FROM measurements WHERE role = 'sample'"
    ).fetchall()
    assert len(rows) == 30 and all(r[0] in ("ok", "unstable") and r[1] > 0 for r in rows)
    for _, _, environment, stats in rows:
        env = json.loads(environment)
        assert env["machine"] == "aarch64" and "Cortex-A76" in env["cpu_model"]
        assert "bfnas" not in env["versions"] and env["versions"]["onnxruntime"]
        assert json.loads(stats)["device_code"] == device_code().sha256
    median = sorted(r[1] for r in rows)[15]
    # A search whose winners are proven on the device: measured there, stored as `verify`.
    code = main(
        [
            "search",
            *common,
            "--max-latency-ms",
            f"{median:.4f}",
            "--population",
            "20",
            "--parents",
            "6",
            "--generations",
            "3",
            "--verify",
            "2",
            "--rounds",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    verified = [v for r in result["rounds"] for v in r["verified"]]
    assert len(verified) == 2 and all(v["measured_ms"] > 0 for v in verified)
    # Each verification is a new row, measured on the device: a subnet measured for the first
    # time joins the samples, a repeat is kept apart as role "verify".
    machines = [
        json.loads(r[0])["machine"]
        for r in con.execute(
            "SELECT environment FROM measurements WHERE role IN ('sample', 'verify')"
        )
    ]
    con.close()
    assert len(machines) == 30 + 2 and set(machines) == {"aarch64"}
