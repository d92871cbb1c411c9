"""Throughput benchmark: subnets measured per minute, end to end, by `bfnas profile` and by
the seed's method, on the same random subnets, in the same run.

    python benchmarks/throughput.py [--hw local-cpu-int8] [--space bigger-faster] [--samples 30]

bfnas: a `ProfileJob` into a new store with a cold artifact cache: extract the dense subnet,
export, quantize, check fidelity, then time it in a fresh worker process under the profile's
stopping rule (paired anchor, drift reference every K subnets included).

Seed-style: export the whole elastic supernet run at the subnet's config (TorchScript tracing
of `SuperBert.forward`), ONNX Runtime dynamic quantization, a new session, 5 timed runs after
one warm-up run, the mean. Its stability is measured in the same run: `--repeat-subnets`
subnets timed `--repeats` times each that way, the CoV of those means.

Goal (issue 3): bfnas >= 3x the seed's subnets/min. Writes benchmarks/results/throughput.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from results_io import cov, publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.profiling import ProfileJob, plan_subnets
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.deploy.encoder_io import INPUT_NAMES, token_batches
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig


class ElasticAtConfig(torch.nn.Module):
    """The whole supernet with one config fixed: what the seed exported per subnet."""

    def __init__(self, supernet: SuperBert, cfg: SubnetConfig) -> None:
        super().__init__()
        self.supernet, self.cfg = supernet, cfg

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.supernet(input_ids, self.cfg, attention_mask, token_type_ids)


def seed_export(supernet: SuperBert, cfg: SubnetConfig, folder: Path) -> Path:
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    example = token_batches(1, 1, 16, supernet.dims.vocab.vocab_size)[0]
    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)
    axes = {n: {0: "batch", 1: "sequence"} for n in (*INPUT_NAMES, "out")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ElasticAtConfig(supernet, cfg).eval(),
            args,
            str(fp32),
            dynamo=False,
            opset_version=17,
            input_names=list(INPUT_NAMES),
            output_names=["out"],
            dynamic_axes=axes,
        )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return int8


def seed_time(model: Path, feed: dict, runs: int = 5) -> float:
    """Mean of `runs` timed runs in a new 1-thread session after one warm-up run (ms)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.mean(samples)


def kendall_tau(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return 2 * s / (n * (n - 1))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--space", default="bigger-faster")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat-subnets", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    profile, space = load_profile(args.hw), load_space(args.space)
    supernet = SuperBert.random(SupernetDims.for_space(space), seed=0)
    cfgs = plan_subnets(space, args.samples, "random", args.seed, profile.workload.seq_len)
    w = profile.workload
    feed = token_batches(1, w.batch, w.seq_len, supernet.dims.vocab.vocab_size, seed=1)[0]

    with (
        tempfile.TemporaryDirectory(prefix="bfnas-throughput-") as tmp,
        Progress(console=console) as progress,
    ):
        tmp = Path(tmp)
        # bfnas, cold cache, new store.
        task = progress.add_task("bfnas profile", total=len(cfgs))
        ours: dict[str, dict] = {}

        def on_event(e) -> None:
            if e.kind == "measured":
                ours[e.cfg.key()] = e.result.to_dict()  # the flat record, summarised below
                progress.advance(task)

        store = LatencyStore(tmp / "lat.db")
        job = ProfileJob(
            setup=MeasurementSetup(
                profile, space, supernet, ArtifactCache(tmp / "cache"), LocalRunner()
            ),
            store=store,
            samples=args.samples,
            strategy="random",
            seed=args.seed,
            on_event=on_event,
        )
        t0 = time.perf_counter()
        summary = job.run()
        ours_s = time.perf_counter() - t0
        # Where bfnas's time went: building artifacts (extract, export, quantize, fidelity)
        # versus measuring (worker start, session, warm-up, timed runs, re-measures).
        build_s = sum(
            sum(r.artifact["seconds"].values())
            for role in ("sample", "reference")
            for r in store.measurements(role=role)
            if r.artifact
        )
        store.close()

        # Seed-style, same subnets.
        task = progress.add_task("seed-style", total=len(cfgs))
        seed_ms, seed_files = {}, {}
        t0 = time.perf_counter()
        for i, cfg in enumerate(cfgs):
            folder = tmp / f"seed{i}"
            folder.mkdir()
            seed_files[cfg.key()] = seed_export(supernet, cfg, folder)
            seed_ms[cfg.key()] = seed_time(seed_files[cfg.key()], feed)
            progress.advance(task)
        seed_s = time.perf_counter() - t0

        # The seed's stability: the same subnets timed again, the seed's way.
        picks = cfgs[: args.repeat_subnets]
        task = progress.add_task("seed-style repeats", total=len(picks) * args.repeats)
        seed_repeats = {c.key(): [] for c in picks}
        for _ in range(args.repeats):
            for c in picks:
                seed_repeats[c.key()].append(seed_time(seed_files[c.key()], feed))
                progress.advance(task)

    keys = [c.key() for c in cfgs if c.key() in ours and ours[c.key()]["status"] != "failed"]
    ours_ms = [ours[k]["median_ms"] for k in keys]
    seed_list = [seed_ms[k] for k in keys]
    ours_rate, seed_rate = len(cfgs) / ours_s * 60, len(cfgs) / seed_s * 60
    seed_cov = [cov(v) for v in seed_repeats.values()]
    stab = Path(args.out) / "stability.json"
    ours_cov = json.loads(stab.read_text()) if stab.exists() else None
    result = {
        "profile": profile.name,
        "space": space.name,
        "samples": len(cfgs),
        "bfnas": {
            "seconds": ours_s,
            "subnets_per_min": ours_rate,
            "build_seconds": build_s,
            "statuses": {s: summary[s] for s in ("ok", "unstable", "failed")},
            "mean_runs": statistics.mean(ours[k]["runs"] for k in keys),
            "reference_measurements": len(summary["reference_ms"]),
        },
        "seed": {
            "seconds": seed_s,
            "subnets_per_min": seed_rate,
            "runs": 5,
            "repeat_cov": seed_cov,
        },
        "speedup": ours_rate / seed_rate,
        "kendall_tau_bfnas_vs_seed": kendall_tau(ours_ms, seed_list),
        "median_seed_over_bfnas": statistics.median(
            s / o for s, o in zip(seed_list, ours_ms, strict=True)
        ),
    }
    lines = [
        f"profile {profile.name}, space {space.name}, {len(cfgs)} random subnets (seed "
        f"{args.seed})",
        "",
        "| method | seconds | subnets/min | per subnet |",
        "|---|---|---|---|",
        "| bfnas profile (fresh worker, anchor-paired, CI stop; "
        f"{result['bfnas']['mean_runs']:.0f} runs "
        f"mean; {result['bfnas']['reference_measurements']} drift-reference measurements) | "
        f"{ours_s:.1f} | "
        f"{ours_rate:.1f} | {ours_s / len(cfgs):.2f} s |",
        f"| seed-style (whole elastic model exported, dynamic INT8, 5 runs, mean) | {seed_s:.1f} | "
        f"{seed_rate:.1f} | {seed_s / len(cfgs):.2f} s |",
        "",
        f"bfnas time: building artifacts {build_s:.1f} s (extract, export, quantize, fidelity), "
        f"measuring and the rest {ours_s - build_s:.1f} s",
        f"speed-up: {result['speedup']:.2f}x (goal >= 3x)",
        f"seed-style stability: CoV of {args.repeats} repeated means per subnet: "
        + ", ".join(f"{c:.1%}" for c in seed_cov)
        + f" (worst {max(seed_cov):.1%})",
    ]
    if ours_cov:
        rows = ours_cov["rows"]
        lines.append(
            "bfnas stability (benchmarks/results/stability.md): worst CoV of normalized latency "
            f"{max(r['cov_normalized'] or 0 for r in rows):.1%}, of raw medians "
            f"{max(r['cov_raw'] for r in rows):.1%}"
        )
    lines += [
        "Kendall tau between the two methods' latencies: "
        f"{result['kendall_tau_bfnas_vs_seed']:.3f}; "
        f"seed-style / bfnas latency, median: {result['median_seed_over_bfnas']:.2f}"
    ]
    publish(args.out, "throughput", lines, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
