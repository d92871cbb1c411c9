"""The SSH runner against a real OpenSSH server on 127.0.0.1 (started by the `sshd` fixture
with its own host key, an authorized user key and known_hosts)."""

import json
import os
import sqlite3
import threading
import time
import tomllib
from pathlib import Path

import pytest
from conftest import FAST_PROFILE, bare_python

from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.measurement import measure_artifact
from bfnas.bench.jobs.profiling import ProfileJob
from bfnas.bench.runners.base import DeviceUnreachable
from bfnas.bench.runners.device_code import device_code
from bfnas.bench.runners.ssh import SshRunner
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.subnet import SubnetConfig

pytestmark = pytest.mark.ssh


def ssh_profile(sshd, workdir: Path, measure: dict | None = None, **target):
    data = tomllib.loads(FAST_PROFILE)
    data["name"] = "test-ssh-int8"
    data["target"] = sshd.target(workdir=str(workdir), **target)
    data["measure"].update(measure or {})
    return parse_profile(data, "<ssh test>")


@pytest.fixture(scope="module")
def model(artifact_root, tiny_supernet):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    art = cache.build(
        tiny_supernet, SubnetConfig(1, 64, (2,), (64,), (128,)), "int8", get_recipe("dynamic")
    )
    return str(art.path), art.sha256


def test_a_measurement_over_ssh_uploads_once_and_runs_the_worker_on_the_device(
    sshd, model, tmp_path
):
    profile = ssh_profile(sshd, tmp_path / "device")
    runner = SshRunner(profile.target)
    try:
        first = measure_artifact(runner, *model, profile)
        second = runner.run(*model, profile)
        assert first.status == second.status == "ok"
        assert first.provider == "CPUExecutionProvider" and first.runs >= 10
        assert first.device == {"host": "127.0.0.1", "port": sshd.port}
        # The worker ran in its own process on the "device", not in this one.
        assert first.pid != second.pid != os.getpid()
        assert runner.uploads == 2  # the device code and the model, each once
        assert (tmp_path / "device" / "blobs" / f"{model[1]}.onnx").read_bytes() == Path(
            model[0]
        ).read_bytes()
        control = runner._control
        assert _processes_mentioning(control)  # the shared master connection is up
    finally:
        runner.close()
    time.sleep(0.2)
    assert not Path(control).exists() and not _processes_mentioning(control)
    # A new runner finds the file on the device by its hash and sends nothing.
    again = SshRunner(profile.target)
    try:
        assert again.run(*model, profile).status == "ok" and again.uploads == 0
    finally:
        again.close()


def test_a_damaged_file_on_the_device_is_sent_again(sshd, model, tmp_path):
    profile = ssh_profile(sshd, tmp_path / "device")
    blob = tmp_path / "device" / "blobs" / f"{model[1]}.onnx"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"not the model")
    runner = SshRunner(profile.target)
    try:
        assert runner.run(*model, profile).status == "ok"
        assert runner.uploads == 2 and blob.read_bytes() == Path(model[0]).read_bytes()
    finally:
        runner.close()


def test_remote_arguments_are_quoted(sshd, model, tmp_path):
    home_marker = sshd.home / "bfnas-quoting-canary"  # the device's home, where ~ points there
    home_marker.unlink(missing_ok=True)
    workdir = tmp_path / "dev dir;touch ~/bfnas-quoting-canary;$(touch ~/bfnas-quoting-canary)"
    profile = ssh_profile(sshd, workdir)
    runner = SshRunner(profile.target)
    try:
        assert runner.run(*model, profile).status == "ok"
    finally:
        runner.close()
    assert (workdir / "blobs" / f"{model[1]}.onnx").is_file()
    assert not home_marker.exists()


def test_a_wrong_host_key_is_refused_without_retrying(sshd, model, tmp_path):
    wrong = tmp_path / "known_hosts"
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    wrong.write_text(
        f"[127.0.0.1]:{sshd.port} {' '.join((tmp_path / 'other.pub').read_text().split()[:2])}\n"
    )
    profile = ssh_profile(sshd, tmp_path / "device", known_hosts=str(wrong))
    runner = SshRunner(profile.target, backoff_s=5)
    t = time.monotonic()
    try:
        with pytest.raises(DeviceUnreachable, match="Host key verification failed"):
            runner.run(*model, profile)
    finally:
        runner.close()
    assert runner.retried == 0 and time.monotonic() - t < 5
    assert not (tmp_path / "device").exists()


def test_a_worker_failure_on_the_device_is_a_failed_measurement(sshd, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    import hashlib

    profile = ssh_profile(sshd, tmp_path / "device")
    runner = SshRunner(profile.target)
    try:
        out = runner.run(str(bad), hashlib.sha256(bad.read_bytes()).hexdigest(), profile)
    finally:
        runner.close()
    assert out.status == "failed" and out.reason and runner.retried == 0


def test_a_worker_over_its_timeout_is_killed_on_the_device(sshd, model, tmp_path):
    # min_runs holds whatever max_seconds says: this worker would time for hours.
    profile = ssh_profile(sshd, tmp_path / "device", {"min_runs": 10_000_000, "timeout_s": 2})
    runner = SshRunner(profile.target)
    t = time.monotonic()
    try:
        out = runner.run(*model, profile)
        assert out.status == "failed" and out.reason == "timeout after 2 s (on the device)"
        assert time.monotonic() - t < 30 and runner.retried == 0
        # The device's fork server survived its child and measures the next subnet.
        assert runner.run(*model, ssh_profile(sshd, tmp_path / "device")).status == "ok"
    finally:
        runner.close()


def test_a_worker_killed_on_the_device_is_a_failed_measurement(sshd, model, tmp_path):
    profile = ssh_profile(sshd, tmp_path / "device", {"min_runs": 10_000_000, "timeout_s": 60})
    runner = SshRunner(profile.target)

    def kill_when_running() -> None:
        for _ in range(400):
            if runner.active_pid:
                time.sleep(0.3)
                os.kill(
                    runner.active_pid, 9
                )  # the "device" is this machine: its pid is ours to see
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    try:
        out = runner.run(*model, profile)
    finally:
        killer.join()
        runner.close()
    assert out.status == "failed" and "SIGKILL" in out.reason and runner.retried == 0


def test_a_device_with_only_python_numpy_and_onnxruntime_measures(
    sshd, model, runtime_only_python, tmp_path
):
    """The host ships the device code: a device Python holding numpy and onnxruntime and
    nothing else (no bfnas, no pydantic) measures, and keeps the code by its hash."""
    profile = ssh_profile(sshd, tmp_path / "device", python=str(runtime_only_python))
    runner = SshRunner(profile.target)
    try:
        out = measure_artifact(runner, *model, profile)
        assert out.status == "ok" and out.provider == "CPUExecutionProvider"
        assert out.device_code == device_code().sha256
        assert "bfnas" not in out.environment["versions"]
        shipped = tmp_path / "device" / "code" / device_code().file_name
        assert shipped.read_bytes() == device_code().data
        assert runner.uploads == 2  # the code and the model
    finally:
        runner.close()
    again = SshRunner(profile.target)
    try:
        assert again.run(*model, profile).status == "ok" and again.uploads == 0
    finally:
        again.close()


def test_a_device_python_without_its_runtime_is_named(sshd, model, tmp_path):
    empty = bare_python(tmp_path / "empty", ())
    profile = ssh_profile(sshd, tmp_path / "device", python=str(empty))
    runner = SshRunner(profile.target)
    try:
        with pytest.raises(
            DeviceUnreachable, match="did not start.*install what it names.*No module named"
        ):
            runner.run(*model, profile)
    finally:
        runner.close()
    assert runner.retried == 0


def _ssh_toml(sshd, tmp_path, workdir: Path, **extra) -> Path:
    target = "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in sshd.target(workdir=str(workdir), **extra).items()
    )
    path = tmp_path / "test-ssh-int8.toml"
    path.write_text(
        FAST_PROFILE.replace('name = "test-cpu-int8"', 'name = "test-ssh-int8"')
        + f"\n[target]\n{target}\n"
    )
    return path


def test_hw_check_probes_the_device_over_ssh(sshd, tmp_path, capsys):
    path = _ssh_toml(sshd, tmp_path, tmp_path / "device")
    assert main(["hw", "check", str(path), "--json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["ssh"]["ok"] and checks["device python"]["ok"]
    assert checks["device code"]["ok"] and checks["device numpy"]["ok"]
    assert checks["device provider CPUExecutionProvider"]["ok"]
    assert not (tmp_path / "device").exists()  # a check leaves nothing on the device
    # The same device with a Python that has no numpy and no onnxruntime: both named, exit 2.
    empty = bare_python(tmp_path / "empty", ())
    path.write_text(
        path.read_text().replace(f'python = "{sshd.target()["python"]}"', f'python = "{empty}"')
    )
    assert main(["hw", "check", str(path), "--json"]) == 2
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    failed = {name for name, c in checks.items() if not c["ok"]}
    assert failed == {"device numpy", "device onnxruntime"}
    assert "pip install numpy" in checks["device numpy"]["detail"]
    assert main(["hw", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "numpy" in err and "onnxruntime" in err and err.count("\n") == 1


def test_profile_over_ssh_survives_a_dropped_connection(
    sshd, tiny_space, tiny_supernet, model, tmp_path
):
    """sshd and every session are killed while a measurement runs, then sshd comes back:
    the job reconnects, measures that subnet again, and stores each subnet exactly once."""
    profile = ssh_profile(
        sshd, tmp_path / "device", {"min_seconds": 1.0, "max_seconds": 1.5, "drift_every": 0}
    )
    runner = SshRunner(profile.target, retries=6, backoff_s=0.5)
    cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
    outcome: dict = {}

    def profile_job() -> None:
        with LatencyStore(
            tmp_path / "ssh.db"
        ) as store:  # SQLite: used in the thread that opened it
            outcome.update(
                ProfileJob(
                    setup=MeasurementSetup(profile, tiny_space, tiny_supernet, cache, runner),
                    store=store,
                    samples=3,
                    seed=1,
                ).run()
            )

    thread = threading.Thread(target=profile_job)
    thread.start()
    deadline = time.monotonic() + 120
    while _samples(tmp_path / "ssh.db") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the second subnet's measurement
    sshd.stop()
    time.sleep(1.0)
    sshd.start()
    thread.join(180)
    runner.close()
    assert not thread.is_alive()
    assert outcome["status"] == "finished" and outcome["ok"] + outcome["unstable"] == 3
    assert runner.retried >= 1
    con = sqlite3.connect(tmp_path / "ssh.db")
    keys = [r[0] for r in con.execute("SELECT subnet_key FROM measurements WHERE role = 'sample'")]
    assert len(keys) == len(set(keys)) == 3
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    hosts = {
        json.loads(r[0])["device"]["host"] for r in con.execute("SELECT stats FROM measurements")
    }
    assert hosts == {"127.0.0.1"}


def test_an_unreachable_device_stops_the_job_and_a_rerun_resumes(
    sshd, tiny_space_file, tmp_path, capsys
):
    path = _ssh_toml(sshd, tmp_path, tmp_path / "device", retries=2, retry_backoff_s=0.2)
    db = tmp_path / "p.db"
    argv = _profile_argv(path, tiny_space_file, db, tmp_path / "arts", "--samples", "2")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 2
    sshd.stop()
    try:
        argv[argv.index("2")] = "4"
        t = time.monotonic()
        assert main([*argv[:-1]]) == 1
        err = capsys.readouterr().err
        assert "device unreachable" in err and "rerun" in err
        assert time.monotonic() - t < 30
    finally:
        sshd.start()
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == 2 and again["ok"] + again["unstable"] == 2
    assert _samples(db) == 4


def _profile_argv(hw: Path, space: Path, db: Path, artifacts: Path, *how: str) -> list[str]:
    """`bfnas profile` of a space on an SSH profile into a store, `--json` last."""
    return [
        "profile", "--hw", str(hw), "--space", str(space), *how,
        "--db", str(db), "--artifacts", str(artifacts), "--json",
    ]  # fmt: skip


def _samples(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM measurements WHERE role = 'sample'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_profile_until_over_ssh_stops_on_the_devices_own_time(
    sshd, tiny_space_file, tmp_path, capsys
):
    """`--until` on a device reached over SSH: rounds, a stop on the bound, and the device
    time it reports is what the device's measurements recorded."""
    path = _ssh_toml(sshd, tmp_path, tmp_path / "device")
    db = tmp_path / "u.db"
    how = ("--until", "0.8", "--tolerance", "0.5", "--round-size", "2", "--max-subnets", "20")
    # 10 of 10 within ±50 % bound the share at 74 %: it takes a second round.
    argv = _profile_argv(path, tiny_space_file, db, tmp_path / "arts", *how)
    assert main(argv) == 0
    until = json.loads(capsys.readouterr().out)["until"]
    assert until["stop"] == "trusted" and len(until["curve"]) >= 2
    with LatencyStore(db, read_only=True) as store:
        rows = store.measurements()  # the samples
    assert until["curve"][-1]["measured"] == len(rows) > 10
    assert until["curve"][-1]["device_s"] == pytest.approx(sum(r.device_s for r in rows))
    assert {r.extra["device"]["host"] for r in rows} == {"127.0.0.1"}
