"""Memory and model size: how steady the measured memory is, and how well a search's
predictors of both predict subnets they did not see.

    python benchmarks/resources.py [--hw local-cpu-int8] [--space minilm-l6] [--samples 80]
        [--repeats 5] [--work scratch/resources]

1. `--samples` subnets of the space profiled on the profile by `bfnas profile` (the packaged
   MiniLM's weights), each measurement recording the worker's peak resident memory above
   its baseline with the runtime imported, and the INT8 file's bytes.
2. Each resource's predictor (`search.resources.ResourcePredictor`, linear in the encoder's
   parameters, width and depth) fitted on those rows; every row predicted by a fold model
   that did not see it (5 folds): within 5 % / 10 %, Kendall's tau, the band a search admits
   by.
3. The memory of 3 subnets (smallest, middle, largest file) measured `--repeats` times in
   fresh workers: the spread a limit has to live with.

Writes benchmarks/results/resources.{md,json}. The store lives in `--work` (a rerun reads
its measurements back).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from results_io import publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_store import LatencyRow, LatencyStore
from bfnas.cli import main as bfnas
from bfnas.models.digest import file_sha256
from bfnas.search.resources import RESOURCES, ResourcePredictor, resource_rows
from bfnas.search.training import TRUSTED


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--space", default="minilm-l6")
    ap.add_argument("--samples", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default="scratch/resources")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db, artifacts = work / "latency.db", work / "artifacts"
    t0 = time.perf_counter()
    code = bfnas(
        ["profile", "--hw", args.hw, "--space", args.space, "--checkpoint", "minilm",
         "--samples", str(args.samples), "--db", str(db), "--artifacts", str(artifacts)]
    )  # fmt: skip
    if code != 0:
        return code
    profile_s = time.perf_counter() - t0
    profile = load_profile(args.hw)
    with LatencyStore(db, create=False) as store:
        rows = [
            r for r in store.measurements(profile.hash(), statuses=TRUSTED)
            if r.space == args.space
        ]  # fmt: skip
    fitted = {}
    for name, resource in RESOURCES.items():
        cfgs, values = resource_rows(rows, resource)
        p = ResourcePredictor(resource, profile.workload.seq_len).fit(cfgs, values)
        fitted[name] = {
            **p.metrics,
            "spread": list(p.spread),
            "min": float(values.min()),
            "median": float(statistics.median(values)),
            "max": float(values.max()),
        }
    repeat = repeatability(rows, profile, args.repeats)
    payload = {
        "profile": profile.name,
        "profile_hash": profile.hash(),
        "space": args.space,
        "rows": len(rows),
        "predictors": fitted,
        "repeatability": repeat,
        "profile_seconds": profile_s,
        "seconds": time.perf_counter() - t0,
    }
    publish(args.out, "resources", report_lines(payload), payload)
    return 0


def repeatability(rows: list[LatencyRow], profile, repeats: int) -> list[dict]:
    """Memory of the smallest, middle and largest file, measured `repeats` times each."""
    files = sorted(
        (r for r in rows if r.artifact),
        key=lambda r: RESOURCES["size"].value(r.extra) or 0.0,
    )
    picks = [files[0], files[len(files) // 2], files[-1]]
    runner = LocalRunner()
    out = []
    try:
        for r in picks:
            path = r.artifact["path"]
            sha = file_sha256(path)
            memory = [
                runner.run(path, sha, profile).memory["peak_above_baseline_mb"]
                for _ in range(repeats)
            ]
            out.append(
                {
                    "arch": r.arch.to_json(),
                    "size_mb": RESOURCES["size"].value(r.extra),
                    "memory_mb": memory,
                    "spread_mb": max(memory) - min(memory),
                }
            )
    finally:
        runner.close()
    return out


def report_lines(p: dict) -> list[str]:
    lines = [
        "# Memory and model size: measured, and predicted for unseen subnets",
        "",
        f"`python benchmarks/resources.py` on profile `{p['profile']}` (hash "
        f"`{p['profile_hash']}`), space `{p['space']}`: {p['rows']} trusted measurements "
        f"(profiling {p['profile_seconds']:.0f} s; {p['seconds']:.0f} s in all).",
        "",
        "Memory: the worker's peak resident memory while the INT8 file is loaded and run "
        "once, above the process's own with the runtime imported (ONNX Runtime's arena "
        "included). Size: the INT8 file's bytes.",
        "",
        "| resource | range (MB) | within 5 % | within 10 % | Kendall tau | band (measured / "
        "predicted, 10th-90th pct) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in p["predictors"].items():
        lines.append(
            f"| {name} | {m['min']:.1f} - {m['max']:.1f} (median {m['median']:.1f}) | "
            f"{m['within_5pct']:.0%} | {m['within_10pct']:.0%} | {m['kendall_tau']:.3f} | "
            f"{m['spread'][0]:.3f} - {m['spread'][1]:.3f} |"
        )
    lines += [
        "",
        "Every row predicted by a fold model that did not see it (5 folds). A search admits a "
        "candidate when its prediction times the band's top is under the limit, and holds "
        "each verified subnet to the limit as measured.",
        "",
        "Repeatability of the memory figure (fresh worker each time):",
        "",
        "| file | memory over repeats (MB) | spread |",
        "|---|---|---|",
    ]
    for r in p["repeatability"]:
        runs = ", ".join(f"{m:.1f}" for m in r["memory_mb"])
        lines.append(f"| {r['size_mb']:.1f} MB | {runs} | {r['spread_mb']:.2f} MB |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
