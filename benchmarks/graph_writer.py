"""Graph-writer benchmark: does the directly written INT8 graph time like the exported one?

    python benchmarks/graph_writer.py [--hw local-cpu-int8] [--space bigger-faster] [--subnets 12]

For each random subnet, builds the `dynamic` INT8 artifact both ways (models/deploy/graph_writer.py,
and TorchScript export + ONNX Runtime's quantize_dynamic), then measures the two files
alternately, `--repeats` times each, in fresh worker processes under the profile. Reports
the build time of each path and the ratio of their median latencies. Writes
benchmarks/results/graph_writer.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from results_io import publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.profiling import plan_subnets
from bfnas.bench.runners.local import LocalRunner
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.deploy.onnx_export import ExportSettings
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.space.search_space import load_space


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--space", default="bigger-faster")
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    profile, space = load_profile(args.hw), load_space(args.space)
    supernet = SuperBert.random(SupernetDims.for_space(space), seed=0)
    recipe = get_recipe("dynamic")
    runner = LocalRunner()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bfnas-writer-") as tmp:
        caches = {
            "direct": ArtifactCache(Path(tmp) / "direct"),
            "torchscript": ArtifactCache(
                Path(tmp) / "ts", export=ExportSettings(exporter="torchscript")
            ),
        }
        for cfg in plan_subnets(space, args.subnets, "random", args.seed, profile.workload.seq_len):
            arts, build_s = {}, {}
            for name, cache in caches.items():
                t = time.perf_counter()
                arts[name] = cache.build(supernet, cfg, "int8", recipe)
                build_s[name] = time.perf_counter() - t
            ms: dict[str, list[float]] = {name: [] for name in arts}
            for _ in range(args.repeats):
                for name, art in arts.items():
                    ms[name].append(runner.run(str(art.path), art.sha256, profile).median_ms)
            med = {name: statistics.median(v) for name, v in ms.items()}
            rows.append(
                {
                    "arch": str(cfg),
                    "build_s": build_s,
                    "median_ms": med,
                    "ratio": med["direct"] / med["torchscript"],
                }
            )
    runner.close()
    ratios = [r["ratio"] for r in rows]
    lines = [
        f"profile {profile.name}, space {space.name}, {len(rows)} random subnets, "
        f"{args.repeats} fresh-process measurements of each file (median of medians)",
        "",
        "| subnet | build direct s | build torchscript s | direct ms | torchscript ms | ratio |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['arch']} | {r['build_s']['direct']:.2f} | {r['build_s']['torchscript']:.2f} | "
            f"{r['median_ms']['direct']:.3f} | {r['median_ms']['torchscript']:.3f} | "
            f"{r['ratio']:.3f} |"
            for r in rows
        ),
        "",
        f"latency ratio direct / torchscript: median {statistics.median(ratios):.3f}, "
        f"range {min(ratios):.3f}-{max(ratios):.3f}",
        f"build time: direct {statistics.mean(r['build_s']['direct'] for r in rows):.2f} s, "
        "torchscript + quantize_dynamic "
        f"{statistics.mean(r['build_s']['torchscript'] for r in rows):.2f} s "
        "(mean; both include the fidelity check)",
    ]
    publish(
        args.out,
        "graph_writer",
        lines,
        {"profile": profile.name, "space": space.name, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
