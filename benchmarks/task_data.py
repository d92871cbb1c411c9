"""Is the offline task (`bfnas data task`) discriminative? After the same fine-tune, the full
MiniLM and the smallest `minilm-l6` subnet should differ by >= 10 dev accuracy points, and
the full model's seed-to-seed std should be <= 1 point.

    python benchmarks/task_data.py [--seeds 3] [--epochs 2] [--lr 1e-4]

Both start from all-MiniLM-L6-v2's weights (the smallest subnet is the leading slice of
them) with its pooler and a fresh linear head, and are fine-tuned with the same settings
(`--epochs`, `--lr`, batch 32, max_len 64) for each seed. Writes
benchmarks/results/task_data.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from results_io import publish

from bfnas.models.nn.checkpoint import load_supernet, minilm_dir, read_pooler
from bfnas.models.space.search_space import load_space
from bfnas.models.train.finetune import FinetuneSettings, finetune_subnet, prepare_task
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.task_data import TaskDataSettings, build_task


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    space = load_space("minilm-l6")
    supernet = load_supernet(minilm_dir())
    pooler = read_pooler(minilm_dir())
    models = {"full MiniLM": space.largest(), "smallest minilm-l6 subnet": space.smallest()}
    runs: dict[str, list[dict]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory(prefix="bfnas-task-") as tmp:
        t0 = time.perf_counter()
        manifest = build_task(Path(tmp) / "task", TaskDataSettings())
        build_s = time.perf_counter() - t0
        task = read_task(Path(tmp) / "task")
        for seed in range(args.seeds):
            settings = FinetuneSettings(
                epochs=args.epochs, lr=args.lr, batch=32, max_len=64, seed=seed
            )
            for name, cfg in models.items():
                data = prepare_task(supernet, cfg, task, minilm_dir(), settings)
                r = finetune_subnet(supernet, cfg, data, settings, pooler=pooler)
                runs[name].append(r)
                print(f"{name} seed {seed}: {r['accuracy']:.4f} ({r['train_seconds']:.0f} s)")
    acc = {name: [100 * r["accuracy"] for r in rs] for name, rs in runs.items()}
    mean = {name: statistics.mean(a) for name, a in acc.items()}
    std = {name: statistics.stdev(a) if len(a) > 1 else 0.0 for name, a in acc.items()}
    full, small = models
    gap = mean[full] - mean[small]
    majority = 100 * runs[full][0]["majority_accuracy"]
    lines = [
        f"Offline task: {len(manifest['labels'])} classes "
        f"({', '.join(manifest['labels'])}), {manifest['train_examples']} train / "
        f"{manifest['dev_examples']} dev sentences (Python {manifest['python']}, built in "
        f"{build_s:.1f} s; dropped: {manifest['dropped']}); majority class {majority:.1f} %",
        f"Fine-tune: {args.epochs} epochs, lr {args.lr:g}, batch 32, max_len 64, seeds 0.."
        f"{args.seeds - 1}; from all-MiniLM-L6-v2's weights and pooler",
        "",
        "| model | params (encoder) | dev accuracy per seed (%) | mean | std | train s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} `{models[name]}` | {models[name].params(embeddings=False):,} | "
            f"{', '.join(f'{a:.1f}' for a in acc[name])} | {mean[name]:.1f} | "
            f"{std[name]:.2f} | {statistics.mean(r['train_seconds'] for r in runs[name]):.0f} |"
            for name in models
        ),
        "",
        f"gap full - smallest: {gap:.1f} points (goal >= 10): "
        f"{'met' if gap >= 10 else 'NOT met'}; full model's seed std {std[full]:.2f} points "
        f"(goal <= 1): {'met' if std[full] <= 1 else 'NOT met'}",
    ]
    publish(
        args.out,
        "task_data",
        lines,
        {
            "manifest": manifest,
            "accuracy_percent": acc,
            "mean": mean,
            "std": std,
            "gap_points": gap,
            "majority_percent": majority,
            "settings": {"epochs": args.epochs, "lr": args.lr, "batch": 32, "max_len": 64},
            "train_seconds": {n: [r["train_seconds"] for r in rs] for n, rs in runs.items()},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
