"""Fleet benchmark: subnets measured per minute by `bfnas profile` on two Ray devices vs one.

    python benchmarks/ray_fleet.py [--hw local-cpu-int8] [--space bigger-faster] \
        [--samples 30] [--repeats 2]

A real local Ray cluster (`ray.cluster_utils.Cluster`): a head with no CPUs and two nodes,
each advertising one unit of the profile's resource and pinned to its own core
(BFNAS_CPU_AFFINITY), as two devices started with `ray start --resources` would be. The same
planned subnets are profiled into a new store with one device (`max_devices=1`) and with
both, alternating the order over `--repeats` rounds; subnets/min is the median over rounds.

The artifacts are built once before the timed runs: on this 2-core machine the driver would
otherwise compete for the cores the two "devices" are pinned to, which a real fleet's driver
does not (its build cost is reported apart). The drift reference is off in both runs (the
one-device run would otherwise measure it more often). Both devices share one host here, so
each sees the other as "other processes" in /proc: the profile's max_other_cpu is raised to
1.5 cores for this benchmark, and the agreement of the two runs' normalized latencies is
reported so any interference shows.

The same job is also run without Ray ("local x2"): two `LocalRunner`s in this process,
each pinning its workers to one of the two cores, fed by the same parallel profiling job. It
tells how far two cores of this host scale for measurement at all, Ray aside.

Goal (issue 7): two devices >= 1.8x one. Writes benchmarks/results/ray_fleet.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from results_io import publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.profiling import ProfileJob, anchor_artifact, artifact_for, plan_subnets
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.runners.ray import RayRunner
from bfnas.bench.runners.targets import RayTarget
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.space.search_space import load_space


def fleet_profile(name: str):
    base = load_profile(name)
    measure = base.measure.model_copy(update={"drift_every": 0, "max_other_cpu": 1.5})
    target = RayTarget(resource=base.name, workdir=base.target.workdir)
    return base.model_copy(update={"measure": measure, "target": target})


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by this driver and by every other process, by kind (from /proc):
    what besides the two measuring workers took the cores."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
            cmd = (
                (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        f = rest.split()
        pid = int(stat.parent.name)
        server = "bfnas.bench.device.forkserver" in cmd
        # A fork server's workers have exited by now: their time is in its children's fields.
        used = (int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if server else 0)) / tick
        kind = (
            "driver"
            if pid == os.getpid()
            else "measuring workers"
            if server
            else "ray actors"
            if "ray::" in head or "default_worker" in cmd
            else "ray daemons"
            if any(k in cmd for k in ("raylet", "gcs_server", "ray/", "dashboard"))
            else "other"
        )
        out[kind] = out.get(kind, 0.0) + used
    return out


class PinnedLocalRunners:
    """Two local "devices" without Ray: one LocalRunner per core, its workers pinned there."""

    def __init__(self, cores: list[int]) -> None:
        import queue

        self.lanes = len(cores)
        self._idle: queue.Queue = queue.Queue()
        self._all = [(LocalRunner(), c) for c in cores]
        for pair in self._all:
            self._idle.put(pair)

    def run(self, model, sha256, profile, anchor=None):
        runner, core = self._idle.get()
        try:
            rt = profile.runtime.model_copy(update={"cpu_affinity": [core]})
            return runner.run(model, sha256, profile.model_copy(update={"runtime": rt}), anchor)
        finally:
            self._idle.put((runner, core))

    def close(self) -> None:
        for runner, _ in self._all:
            runner.close()


def profile_once(
    profile,
    space,
    supernet,
    cache,
    devices: int,
    samples: int,
    seed: int,
    db: Path,
    local_cores: list[int] | None = None,
) -> dict:
    runner = (
        PinnedLocalRunners(local_cores) if local_cores else RayRunner(profile, max_devices=devices)
    )
    try:
        with LatencyStore(db) as store:
            cpu0 = cpu_seconds()
            t = time.perf_counter()
            setup = MeasurementSetup(profile, space, supernet, cache, runner)
            out = ProfileJob(setup=setup, store=store, samples=samples, seed=seed).run()
            seconds = time.perf_counter() - t
            cpu1 = cpu_seconds()
            rows = store.db.execute(
                "SELECT subnet_key, ratio FROM measurements WHERE role = 'sample' AND status = 'ok'"
            ).fetchall()
    finally:
        runner.close()
    cpu = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 1) for k in cpu1}
    return {
        "devices": devices if not local_cores else f"local x{len(local_cores)}",
        "seconds": seconds,
        "per_min": 60 * samples / seconds,
        "cpu_seconds": cpu,
        "ok": out["ok"],
        "unstable": out["unstable"],
        "failed": out["failed"],
        "ratios": {k: r for k, r in rows if r is not None},
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hw", default="local-cpu-int8")
    p.add_argument("--space", default="bigger-faster")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("needs two cores: one per device")
    profile = fleet_profile(a.hw)
    space = load_space(a.space)
    supernet = SuperBert.random(SupernetDims.for_space(space), seed=0)
    work = Path(tempfile.mkdtemp(prefix="bfnas-fleet-"))
    cache = ArtifactCache(work / "artifacts")

    t = time.perf_counter()
    plan = plan_subnets(space, a.samples, "random", a.seed, profile.workload.seq_len)
    for cfg in plan:
        artifact_for(cache, supernet, cfg, profile)
        anchor_artifact(cache, profile, cfg)
    build_s = time.perf_counter() - t

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for i in range(2):
        cluster.add_node(
            num_cpus=1,
            resources={profile.name: 1},
            env_vars={
                "BFNAS_CPU_AFFINITY": str(cores[i]),
                "BFNAS_RAY_BLOBS": str(work / f"node{i}"),
            },
        )
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    runs = []
    try:
        for r in range(a.repeats):
            for devices in (1, 2, 0) if r % 2 == 0 else (0, 2, 1):
                db = work / f"r{r}-d{devices}.db"
                runs.append(
                    profile_once(
                        profile,
                        space,
                        supernet,
                        cache,
                        devices,
                        a.samples,
                        a.seed,
                        db,
                        local_cores=cores[:2] if devices == 0 else None,
                    )
                )
                print(
                    f"round {r}: {runs[-1]['devices']} device(s): {runs[-1]['per_min']:.1f} "
                    "subnets/min; CPU s "
                    f"{runs[-1]['cpu_seconds']}",
                    flush=True,
                )
    finally:
        ray.shutdown()
        cluster.shutdown()

    one = statistics.median(x["per_min"] for x in runs if x["devices"] == 1)
    two = statistics.median(x["per_min"] for x in runs if x["devices"] == 2)
    local = statistics.median(x["per_min"] for x in runs if x["devices"] == "local x2")
    # Agreement of the normalized latencies (ratio to the anchor) measured by one device and by two.
    r1 = next(x for x in runs if x["devices"] == 1)["ratios"]
    r2 = next(x for x in runs if x["devices"] == 2)["ratios"]
    diffs = sorted(abs(r2[k] / r1[k] - 1) for k in r1.keys() & r2.keys())
    lines = [
        "# Ray fleet: two devices vs one",
        "",
        f"`python benchmarks/ray_fleet.py --hw {a.hw} --space {a.space} --samples {a.samples} "
        f"--repeats {a.repeats}`",
        "",
        f"Host: {os.cpu_count()} cores; devices = two Ray nodes on this host, pinned to cores "
        f"{cores[:2]}; "
        f"ray {ray.__version__}. Artifacts built beforehand ({build_s:.1f} s for {len(plan)} "
        "subnets + anchors).",
        "",
        "| round | devices | seconds | subnets/min | ok | unstable | failed |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {i // 3} | {x['devices']} | {x['seconds']:.1f} | {x['per_min']:.1f} | {x['ok']} | "
            f"{x['unstable']} | "
            f"{x['failed']} |"
            for i, x in enumerate(runs)
        ],
        "",
        f"**Two devices: {two:.1f} subnets/min vs one: {one:.1f} → {two / one:.2f}x** (goal ≥ "
        "1.8x).",
        "",
        f"Without Ray, two LocalRunners pinned to the two cores: {local:.1f} subnets/min → "
        f"{local / one:.2f}x the one Ray device.",
        "",
        "CPU seconds per run, by process kind (from /proc; the measuring workers include their "
        "warm-up):",
        "",
        *[
            f"- round {i // 3}, {x['devices']} device(s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(x["cpu_seconds"].items()))
            for i, x in enumerate(runs)
        ],
        "",
        f"Normalized latency, two-device run vs one-device run, same subnets (n={len(diffs)}): "
        f"median |difference| {statistics.median(diffs):.2%}, 90th percentile "
        f"{diffs[int(0.9 * (len(diffs) - 1))]:.2%}, max {diffs[-1]:.2%}.",
    ]
    publish(
        a.out,
        "ray_fleet",
        lines,
        {
            "runs": [{k: v for k, v in x.items() if k != "ratios"} for x in runs],
            "one_per_min": one,
            "two_per_min": two,
            "speedup": two / one,
            "local_two_per_min": local,
            "build_seconds": build_s,
            "ratio_abs_diff": diffs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
