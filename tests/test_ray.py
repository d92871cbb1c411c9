"""The Ray runner on a real local Ray cluster (`ray.cluster_utils.Cluster`): a head without
CPUs and two nodes, each advertising one device of the same profile and pinned to its own
core, as `ray start --resources` would on two devices."""

import json
import os
import sqlite3
import time
import tomllib

import pytest
import ray
from conftest import FAST_PROFILE

from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.profiling import ProfileJob
from bfnas.bench.runners.base import DeviceUnreachable
from bfnas.bench.runners.ray import RayRunner, parse_affinity
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings

pytestmark = pytest.mark.ray

DEVICE = "test-ray-int8"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    blobs = tmp_path_factory.mktemp("ray-blobs")
    cores = sorted(os.sched_getaffinity(0))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = []
    for i in range(2):
        # The first node also advertises the fast test profile by its own name (`--ray`).
        resources = {DEVICE: 1, **({"test-cpu-int8": 1} if i == 0 else {})}
        nodes.append(
            c.add_node(
                num_cpus=1,
                resources=resources,
                env_vars={
                    "BFNAS_CPU_AFFINITY": str(cores[i % len(cores)]),
                    "BFNAS_RAY_BLOBS": str(blobs / f"node{i}"),
                },
            )
        )
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    yield c, nodes, blobs
    ray.shutdown()
    c.shutdown()


def ray_profile(**measure):
    data = tomllib.loads(FAST_PROFILE)
    data["name"] = DEVICE
    data["target"] = {"kind": "ray", "resource": DEVICE}
    data["measure"].update(measure)
    return parse_profile(data, "<ray test>")


def _artifact_hashes(db):
    con = sqlite3.connect(db)
    try:
        return {
            json.loads(r[0])["sha256"]
            for r in con.execute("SELECT artifact FROM measurements WHERE role = 'sample'")
        }
    finally:
        con.close()


def test_a_device_keeps_received_models_and_reads_shared_ones(tmp_path):
    from bfnas.bench.runners.ray import DeviceHost
    from bfnas.models.digest import file_sha256

    host = DeviceHost(str(tmp_path / "blobs"))
    try:
        model = tmp_path / "m.onnx"
        model.write_bytes(b"model bytes")
        sha = file_sha256(model)
        assert not host.has(sha) and not host.has(sha, str(tmp_path / "elsewhere.onnx"))
        with pytest.raises(ValueError, match="does not hash"):
            host.put(sha, b"other bytes")
        host.put(sha, model.read_bytes())
        assert host.has(sha) and (tmp_path / "blobs" / f"{sha}.onnx").read_bytes() == b"model bytes"
        other = tmp_path / "n.onnx"
        other.write_bytes(b"another model")
        assert host.has(file_sha256(other), str(other)) and host._model(file_sha256(other)) == str(
            other
        )
    finally:
        host.runner.close()


def test_affinity_lists():
    assert parse_affinity("0,2-3, 5") == [0, 2, 3, 5]


def _samples(db):
    con = sqlite3.connect(db)
    try:
        return [
            (r[0], json.loads(r[1]))
            for r in con.execute("SELECT subnet_key, stats FROM measurements WHERE role = 'sample'")
        ]
    finally:
        con.close()


def test_two_devices_share_a_job_one_measurement_each_at_a_time(
    cluster, tiny_space, tiny_supernet, tmp_path
):
    profile = ray_profile(min_seconds=0.3, max_seconds=0.5, drift_every=0)
    runner = RayRunner(profile, shared_files=False)  # models sent through Ray, as to a remote node
    try:
        assert runner.lanes == 2
        assert len({tuple(d["affinity"]) for d in runner.devices}) == min(
            2, len(os.sched_getaffinity(0))
        )
        cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
        with LatencyStore(tmp_path / "ray.db") as store:
            out = ProfileJob(
                setup=MeasurementSetup(profile, tiny_space, tiny_supernet, cache, runner),
                store=store,
                samples=6,
                seed=2,
            ).run()
    finally:
        runner.close()
    assert out["status"] == "finished" and out["ok"] + out["unstable"] == 6
    blobs = cluster[2]
    received = {p.name for p in blobs.glob("node*/*.onnx")}
    assert {f"{sha}.onnx" for sha in _artifact_hashes(tmp_path / "ray.db")} <= received
    rows = _samples(tmp_path / "ray.db")
    assert len(rows) == len({k for k, _ in rows}) == 6
    by_device: dict[int, list[tuple[float, float]]] = {}
    for _, stats in rows:
        d = stats["device"]
        by_device.setdefault(d["pid"], []).append((d["started"], d["finished"]))
    assert len(by_device) == 2  # both devices measured
    for spans in by_device.values():  # never two measurements at once on one device
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    # ... while the two devices did work at the same time.
    (a, b) = by_device.values()
    assert any(x[0] < y[1] and y[0] < x[1] for x in a for y in b)


def test_profile_with_ray_flag_uses_the_resource_named_after_the_profile(
    cluster, tiny_space_file, fast_profile_file, tmp_path, capsys
):
    c, _, _ = cluster
    db = tmp_path / "p.db"
    argv = [
        "profile",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--samples",
        "2",
        "--db",
        str(db),
        "--artifacts",
        str(tmp_path / "arts"),
        "--ray",
        c.address,
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] + out["unstable"] == 2
    with LatencyStore(db) as store:
        prof = store.db.execute("SELECT json FROM profiles").fetchone()[0]
    target = json.loads(prof)["target"]
    assert target["kind"] == "ray" and target["resource"] == "test-cpu-int8"
    # Only the first node advertises test-cpu-int8: one device did all of it.
    assert len({s["device"]["pid"] for _, s in _samples(db)}) == 1


def test_a_live_cluster_passes_the_reachability_check(cluster):
    """What `connect` asks before `ray.init` (a TCP connection, then the GCS's cluster id)
    is answered by a real cluster; tests/test_job_refusals.py has the addresses it refuses."""
    from bfnas.bench.runners.ray import check_reachable

    c, _, _ = cluster
    t = time.monotonic()
    check_reachable(c.address, 5.0)
    assert time.monotonic() - t < 5


def test_hw_check_on_ray_runs_the_check_on_a_device(cluster, fast_profile_file, capsys):
    c, _, _ = cluster
    assert main(["hw", "check", str(fast_profile_file), "--ray", c.address, "--json"]) == 0
    checks = {x["name"]: x for x in json.loads(capsys.readouterr().out)["checks"]}
    assert (
        checks["resource test-cpu-int8"]["ok"]
        and "1 device" in checks["resource test-cpu-int8"]["detail"]
    )
    assert checks["device provider CPUExecutionProvider"]["ok"]


def test_a_profile_no_node_advertises_is_refused(cluster, tmp_path, capsys):
    c, _, _ = cluster
    path = tmp_path / "nobody.toml"
    path.write_text(FAST_PROFILE.replace('name = "test-cpu-int8"', 'name = "nobody-has-this"'))
    assert main(["hw", "check", str(path), "--ray", c.address]) == 2
    err = capsys.readouterr().err
    assert "nobody-has-this" in err and "ray start" in err and err.count("\n") == 1
    with pytest.raises(DeviceUnreachable, match="nobody-has-this"):
        RayRunner(parse_profile(tomllib.loads(path.read_text()), str(path)))


def test_a_lost_device_node_moves_its_work_to_the_other(
    cluster, tiny_space, tiny_supernet, tmp_path
):
    """Runs last: removes a node from the module's cluster."""
    c, nodes, _ = cluster
    profile = ray_profile(min_seconds=0.3, max_seconds=0.5, drift_every=0)
    runner = RayRunner(profile)
    cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
    removed = []

    def on_event(e):
        if e.kind == "measured" and not removed:
            c.remove_node(nodes[1])
            removed.append(True)

    try:
        with LatencyStore(tmp_path / "lost.db") as store:
            out = ProfileJob(
                setup=MeasurementSetup(profile, tiny_space, tiny_supernet, cache, runner),
                store=store,
                samples=5,
                seed=3,
                on_event=on_event,
            ).run()
    finally:
        runner.close()
    assert removed and out["status"] == "finished" and runner.alive == 1
    assert out["ok"] + out["unstable"] == 5 and out["failed"] == 0
    rows = _samples(tmp_path / "lost.db")
    assert len(rows) == len({k for k, _ in rows}) == 5
