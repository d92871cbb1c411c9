"""Stage-1 benchmark: does distillation training improve the supernet's subnets, and do two
training seeds agree on which subnets are good?

    python benchmarks/supernet.py [--steps 100] [--subnets 10] [--lines 20000]

Corpus: the standard library's docstrings (`bfnas data corpus --stdlib`), the first `--lines`
lines, built into shards with MiniLM's tokenizer (seq 64). Teacher and starting supernet:
all-MiniLM-L6-v2, space `minilm-l6`. Trained twice (seeds 0 and 1) for `--steps` steps of the
sandwich rule (batch 8). Scored: the one-shot CKA to the teacher of `--subnets` random
subnets on the held-out shard, before and after; Kendall tau between the two seeds' scores;
training steps/s on this machine. Writes benchmarks/results/supernet.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

from results_io import publish
from scipy.stats import kendalltau

from bfnas.models.nn.checkpoint import load_supernet, minilm_dir, read_config
from bfnas.models.space.search_space import load_space
from bfnas.models.train.distill import SupernetTrainer, TrainSettings
from bfnas.models.train.oneshot import OneShotScorer, held_out_batch
from bfnas.pipeline import Stage1Settings, stage1_data


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    space = load_space("minilm-l6")
    _, _, raw = read_config(minilm_dir())
    rng = random.Random(123)
    cfgs = [space.sample(rng) for _ in range(args.subnets)]
    with tempfile.TemporaryDirectory(prefix="bfnas-stage1-") as tmp:
        tmp = Path(tmp)
        data = stage1_data("minilm", tmp, Stage1Settings(corpus_lines=args.lines))
        batch = held_out_batch(tmp / "data", 16)
        teacher = load_supernet("minilm")
        before = OneShotScorer(
            load_supernet("minilm"), space.largest(), batch, teacher=teacher
        ).many(cfgs)
        after, speed = {}, {}
        for seed in (0, 1):
            trainer = SupernetTrainer(
                load_supernet("minilm"),
                load_supernet("minilm"),
                space.largest(),
                space,
                tmp / "data",
                tmp / f"sn{seed}",
                TrainSettings(
                    steps=args.steps, batch=8, lr=1e-4, seed=seed, checkpoint_every=args.steps
                ),
                raw,
            )
            result = trainer.train()
            speed[seed] = result["steps_per_s"]
            after[seed] = OneShotScorer(
                trainer.supernet, space.largest(), batch, teacher=teacher
            ).many(cfgs)
    improved = sum(a > b for a, b in zip(after[0], before, strict=True))
    tau_seeds = kendalltau(after[0], after[1]).statistic
    tau_before = kendalltau(before, after[0]).statistic
    lines = [
        f"minilm-l6 supernet from all-MiniLM-L6-v2, {args.steps} steps x (largest + smallest + 2 "
        "random), "
        f"batch 8, seq 64; corpus: {data['sequences']} sequences of stdlib docstrings "
        f"({len(data['shards'])} shards, "
        "the last held out)",
        "",
        "| subnet | one-shot CKA before | after (seed 0) | after (seed 1) |",
        "|---|---|---|---|",
        *(
            f"| {c} | {b:.3f} | {a0:.3f} | {a1:.3f} |"
            for c, b, a0, a1 in zip(cfgs, before, after[0], after[1], strict=True)
        ),
        "",
        f"improved by training (seed 0): {improved}/{len(cfgs)}; mean CKA "
        f"{statistics.mean(before):.3f} -> "
        f"{statistics.mean(after[0]):.3f} (seed 1: {statistics.mean(after[1]):.3f})",
        f"ranking agreement between the two training seeds: Kendall tau {tau_seeds:.3f} "
        f"(before vs after, seed 0: {tau_before:.3f})",
        f"training speed on this machine: {speed[0]:.2f} / {speed[1]:.2f} steps/s (2 cores)",
    ]
    publish(
        args.out,
        "supernet",
        lines,
        {
            "before": before,
            "after": after,
            "steps_per_s": speed,
            "tau_seeds": tau_seeds,
            "improved": improved,
            "subnets": [c.to_dict() for c in cfgs],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
