"""Stability benchmark: 5 subnets x 5 fresh-process measurements each on a profile.

    python benchmarks/stability.py [--hw local-cpu-int8] [--space bigger-faster] \
        [--subnets 5] [--repeats 5]

Prints, per subnet, the CoV of the 5 raw medians and of the 5 anchor-normalized latencies
(ratio to the paired anchor x the anchor's median over the whole run), and writes
benchmarks/results/stability.md. Goal (issue 3): <= 1.0 % on this 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_io import cov, publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.measurement import measure_artifact
from bfnas.bench.jobs.profiling import anchor_artifact, artifact_for, plan_subnets
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_store import normalized_ms
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.space.search_space import load_space


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--space", default="bigger-faster")
    ap.add_argument("--subnets", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    profile = load_profile(args.hw)
    space = load_space(args.space)
    supernet = SuperBert.random(SupernetDims.for_space(space), seed=0)
    cfgs = plan_subnets(space, args.subnets, "stratified", args.seed)
    runner = LocalRunner()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bfnas-stab-") as tmp:
        cache = ArtifactCache(Path(tmp))
        arts = [artifact_for(cache, supernet, c, profile) for c in cfgs]
        anchors = [anchor_artifact(cache, profile, c) for c in cfgs]
        results: list[list[dict]] = [[] for _ in cfgs]
        for r in range(args.repeats):  # interleaved: each round measures every subnet once
            for i, art in enumerate(arts):
                res = measure_artifact(
                    runner, str(art.path), art.sha256, profile, anchors[i]
                ).to_dict()  # the flat record: summarised as JSON below
                results[i].append(res)
                print(
                    f"round {r + 1} subnet {i + 1}: {res['status']} "
                    f"median {res.get('median_ms', float('nan')):.3f} ms ratio "
                    f"{res.get('ratio', float('nan')):.4f}",
                    file=sys.stderr,
                )
    # As the store does: each anchor's baseline is the median of its medians over the run.
    by_anchor: dict[str, list[float]] = {}
    for rs in results:
        for res in rs:
            if "anchor" in res:
                by_anchor.setdefault(res["anchor_key"], []).append(res["anchor"]["median_ms"])
    baselines = {k: statistics.median(v) for k, v in by_anchor.items()}
    lines = [
        f"profile {profile.name}, space {space.name}, {args.repeats} fresh-process measurements "
        f"per subnet; anchor baselines " + ", ".join(f"{v:.3f} ms" for v in baselines.values())
        if baselines
        else "no anchor",
        "",
        "| subnet | MACs (G) | median ms (mean of 5) | CoV of raw medians | CoV of normalized | "
        "runs per measurement | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for cfg, rs in zip(cfgs, results, strict=True):
        ok = [x for x in rs if x["status"] != "failed"]
        med = [x["median_ms"] for x in ok]
        norm = [normalized_ms(x["ratio"], baselines[x["anchor_key"]]) for x in ok if "ratio" in x]
        row = {
            "arch": str(cfg),
            "gmacs": cfg.total_macs(128) / 1e9,
            "median_ms": statistics.mean(med),
            "cov_raw": cov(med),
            "cov_normalized": cov(norm) if len(norm) > 1 else None,
            "runs": statistics.mean(x["runs"] for x in ok),
            "statuses": [x["status"] for x in rs],
        }
        rows.append(row)
        lines.append(
            f"| {row['arch']} | {row['gmacs']:.3f} | {row['median_ms']:.3f} | "
            f"{row['cov_raw']:.2%} | "
            f"{row['cov_normalized']:.2%} | {row['runs']:.0f} | {', '.join(row['statuses'])} |"
        )
    worst_raw = max(r["cov_raw"] for r in rows)
    worst_norm = max(r["cov_normalized"] or 0 for r in rows)
    lines += [
        "",
        f"worst CoV: raw medians {worst_raw:.2%}, normalized {worst_norm:.2%} "
        f"(goal <= 1.0 %); {time.time() - t0:.0f} s in all",
    ]
    publish(args.out, "stability", lines, {"rows": rows, "baselines_ms": baselines})
    return 0


if __name__ == "__main__":
    sys.exit(main())
