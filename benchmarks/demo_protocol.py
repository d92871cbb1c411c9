"""Which protocol lets `bfnas demo` tell subnets apart on its small task, at what cost?

    python benchmarks/demo_protocol.py [--protocols standard,demo] [--seeds 0,1,2]

The demo's task (`task_data.DEMO_TASK`: the offline task at 80 sentences a module, 40 % of
them dev) and each protocol named, on the hand-scaled MiniLM families (fewer layers at full
width; all six layers uniformly narrower), every model from all-MiniLM-L6-v2's weights and
pooler, over the seeds. Fine-tunes go through the `FinetuneJob` the demo uses (two worker
processes of one thread each on this 2-core machine) into an accuracy store in `--work`, so
a rerun resumes. Per protocol: each model's dev accuracy mean ± std, the cost of a fine-tune
and whether each family is in order of size within the noise.

Writes benchmarks/results/demo_protocol.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

from results_io import publish

from bfnas.bench.jobs.finetuning import FinetuneJob, FinetuneSource
from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.models.space.search_space import load_space
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.protocols import get_protocol
from bfnas.models.train.task_data import DEMO_TASK, build_task
from bfnas.search.baselines import hand_scaled


def in_order(rows: list[dict]) -> list[tuple[str, str]]:
    """Neighbours out of order by more than their two stds together (smallest first)."""
    return [
        (a["arch"], b["arch"])
        for a, b in zip(rows, rows[1:], strict=False)
        if b["mean"] < a["mean"] - (a["std"] + b["std"])
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--protocols", default="standard,demo")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="scratch/demo_protocol")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    task_dir = work / "task"
    manifest = build_task(task_dir, DEMO_TASK)
    dev = read_task(task_dir).dev
    majority = 100 * max(Counter(dev.labels).values()) / len(dev.labels)
    space = load_space("minilm-l6")
    families = hand_scaled(space)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    with AccuracyStore(work / "accuracy.db") as store:
        for name in args.protocols.split(","):
            protocol = get_protocol(name)
            job = FinetuneJob(
                store=store,
                source=FinetuneSource("minilm", str(task_dir), str(work / "teachers")),
                protocol=protocol,
                space=space.name,
                teacher_cfg=space.largest(),
                workers=args.workers,
                threads=args.workers,
                on_event=lambda e: (
                    print(e.kind, e.cfg, e.seed, e.done, e.total, flush=True)
                    if e.kind == "finished"
                    else None
                ),
            )
            # The full model is in both families: fine-tuned (and counted) once.
            cfgs = list(dict.fromkeys(c for members in families.values() for c in members))
            records = job.run([(c, s) for c in cfgs for s in seeds])
            by_arch: dict[str, list] = {}
            for r in records:
                by_arch.setdefault(str(r.arch), []).append(r)
            fam_rows = {}
            for family, members in families.items():
                rows = []
                for c in members:
                    rs = [r for r in by_arch[str(c)] if r.status == "ok"]
                    acc = [100 * r.accuracy for r in rs]
                    rows.append(
                        {
                            "arch": str(c),
                            "params": c.params(embeddings=False),
                            "per_seed": acc,
                            "mean": statistics.fmean(acc),
                            "std": statistics.stdev(acc),
                            "seconds": statistics.fmean(r.train_seconds for r in rs),
                        }
                    )
                fam_rows[family] = {"rows": rows, "inversions": in_order(rows)}
            results[name] = {
                "protocol": protocol.describe(),
                "hash": protocol.hash(),
                "families": fam_rows,
            }
    elapsed = time.perf_counter() - t0
    lines = [
        f"The demo's task: {manifest['train_examples']} train / {manifest['dev_examples']} dev "
        f"sentences, {len(manifest['labels'])} labels (the majority class is {majority:.1f} % "
        "of dev); "
        f"from all-MiniLM-L6-v2's weights and pooler; seeds {args.seeds}; {args.workers} "
        "worker processes of one torch thread each on this 2-core machine.",
        "",
    ]
    for name, r in results.items():
        lines += [f"## {name}: {r['protocol']}", ""]
        for family, f in r["families"].items():
            lines += [
                f"{family}: in order of size within the noise: "
                + ("yes" if not f["inversions"] else f"no, inverted: {f['inversions']}"),
                "",
                "| model | encoder params | dev accuracy per seed (%) | mean | std | s per run |",
                "|---|---|---|---|---|---|",
            ]
            for row in f["rows"]:
                per = ", ".join(f"{a:.1f}" for a in row["per_seed"])
                lines.append(
                    f"| {row['arch']} | {row['params']:,} | {per} | {row['mean']:.2f} | "
                    f"{row['std']:.2f} | {row['seconds']:.1f} |"
                )
            lines.append("")
    lines += [
        f"{elapsed / 60:.1f} minutes for what this run fine-tuned (stored fine-tunes resumed).",
        "Seconds: training wall time of one fine-tune in its worker, two at once on this "
        "2-core machine, beside whatever else ran: a cost here then, not a quiet figure.",
        "",
        "One small offline task (stdlib docstring sentences by module), not GLUE; a demo's "
        "accuracies, comparable only with each other.",
    ]
    publish(
        args.out,
        "demo_protocol",
        lines,
        {"seeds": seeds, "majority_pct": majority, "protocols": results},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
