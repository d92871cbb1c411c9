"""The accuracy predictor's settings, chosen on synthetic accuracies: 15-60 fine-tuned subnets.

    python benchmarks/accuracy_predictor.py [--reps 20]

Real fine-tunes are too dear to sweep settings over, so the accuracies are synthetic but
shaped like real ones (`minilm-l6`'s subnets, SST-2-like: 80-90 %, a seed's noise of one
point, each subnet fine-tuned with 1-3 seeds, its label the mean over them):

- size: accuracy a saturating function of encoder params alone, 0.80 + 0.10 (1 - exp(-P /
  2.5M)): a noisy monotone function of params, where ranking by params is perfect;
- shape: 0.78 + 0.07 (1 - exp(-P / 2.5M)) + 0.04 (1 - exp(-(layers - 1) / 1.5)), less 1.5
  points where a layer has fewer than 3 heads: depth and a bottleneck matter beyond size;
- shape, near a budget: the same, among subnets of 0.35-0.5 GMACs at 128 tokens only (a
  latency budget's neighbourhood, where search ranks, and params say little);
- + one-shot: the same, with a one-shot score (the true accuracy plus one point of noise)
  given as an extra column.

Each cell is the held-out Kendall tau against the true accuracies (300 subnets not fitted
on), the mean over `--reps` draws; `params` ranks by encoder params, `score` by the one-shot
score alone; `oof` is the tau the default fit reports of itself (out of fold, against the
noisy labels), which is what `accuracy_until` stops on.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from results_io import publish
from scipy.stats import kendalltau

from bfnas.models.space.search_space import load_space
from bfnas.search.accuracy_predictor import AccuracyPredictor
from bfnas.search.features import FEATURES, feature_matrix
from bfnas.search.predictor_file import AccuracyScope, AccuracySettings

REPO = Path(__file__).resolve().parents[1]
SCOPE = AccuracyScope(
    task_sha256="0" * 64,
    protocol_hash="synthetic",
    protocol="synthetic",
    space="minilm-l6",
    weights_sha256="synthetic",
)
SEED_SD = 0.01
HELD_OUT = 300
SIZES = (15, 30, 60)
CONFIGS = {
    "default": AccuracySettings(),
    "trees always": AccuracySettings(trees="always"),
    "line only": AccuracySettings(trees="never"),
    "no margin": AccuracySettings(trees_margin=0.0),
    "no CV rounds": AccuracySettings(cv_rounds=False, trees="always"),
    "all features": AccuracySettings(features="all"),
    "4 leaves": AccuracySettings(num_leaves=4),
    "trees alone": AccuracySettings(target="accuracy"),
    "unweighted": AccuracySettings(weight_by_seeds=False),
}
WORLDS = ("size", "shape", "shape, near a budget", "+ one-shot")


def truth(world: str, X: np.ndarray) -> np.ndarray:
    p = X[:, FEATURES.index("params")] / 1e6
    if world == "size":
        return 0.80 + 0.10 * (1 - np.exp(-p / 2.5))
    layers, heads_min = X[:, FEATURES.index("layers")], X[:, FEATURES.index("heads_min")]
    return (
        0.78
        + 0.07 * (1 - np.exp(-p / 2.5))
        + 0.04 * (1 - np.exp(-(layers - 1) / 1.5))
        - 0.015 * (heads_min < 3)
    )


def pools() -> dict[str, tuple[list, np.ndarray]]:
    """The space's subnets the draws come from: all, and those near a budget."""
    space, rng = load_space("minilm-l6"), random.Random(0)
    cfgs = list({c.key(): c for c in (space.sample(rng) for _ in range(40_000))}.values())
    X = feature_matrix(cfgs, 128)
    macs = X[:, FEATURES.index("macs_total")]
    near = (macs >= 0.35e9) & (macs <= 0.5e9)
    return {"all": (cfgs, X), "near": ([c for c, k in zip(cfgs, near, strict=True) if k], X[near])}


def one(world: str, pool, n: int, rep: int) -> dict[str, float]:
    cfgs, X = pool
    rng = np.random.default_rng(rep)
    idx = rng.choice(len(cfgs), n + HELD_OUT, replace=False)
    true = truth(world, X[idx])
    seeds = rng.integers(1, 4, len(idx))
    measured = np.clip(true + rng.normal(0, SEED_SD, len(idx)) / np.sqrt(seeds), 0, 1)
    score = true + rng.normal(0, SEED_SD, len(idx))
    train, test = np.arange(n), np.arange(n, len(idx))
    picked = [cfgs[i] for i in idx]
    fit_cfgs, test_cfgs = [picked[i] for i in train], [picked[i] for i in test]
    with_score = world == "+ one-shot"
    out = {
        "params": kendalltau(true[test], X[idx][test, FEATURES.index("params")]).statistic,
        "score": kendalltau(true[test], score[test]).statistic,
    }
    for name, settings in CONFIGS.items():
        p = AccuracyPredictor(SCOPE, settings)
        extra = {"oneshot": score[train]} if with_score else None
        p.fit(fit_cfgs, measured[train], extra, seeds[train])
        predicted = p.predict(test_cfgs, {"oneshot": score[test]} if with_score else None)
        out[name] = kendalltau(true[test], predicted).statistic
        if name == "default":
            out["oof"] = p.metrics["oof_kendall_tau"]
            out["trees used"] = float(p.metrics["trees"]["used"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    start = time.time()
    drawn = pools()
    columns = ["params", "score", *CONFIGS, "oof", "trees used"]
    rows = []
    for world in WORLDS:
        pool = drawn["near" if world in ("shape, near a budget", "+ one-shot") else "all"]
        for n in SIZES:
            runs = [one(world, pool, n, rep) for rep in range(args.reps)]
            means = {c: float(np.nanmean([r[c] for r in runs])) for c in columns}
            rows.append({"world": world, "rows": n, **means})
            print(f"{world} n={n}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    shown = [c for c in columns if c != "score"]
    lines = [
        "# The accuracy predictor on 15-60 fine-tuned subnets (synthetic accuracies)",
        "",
        f"`python benchmarks/accuracy_predictor.py --reps {args.reps}`: held-out Kendall tau "
        f"against the true accuracies ({HELD_OUT} subnets), the mean over {args.reps} draws; "
        "how the accuracies are made is in the script's docstring. `params`: ranking by "
        "encoder params; `oof`: the default fit's own out-of-fold tau (against noisy labels); "
        "`trees used`: the share of default fits that kept their trees. With the one-shot "
        "score, the score alone ranks at "
        + ", ".join(f"{r['score']:.3f} (n={r['rows']})" for r in rows if r["world"] == "+ one-shot")
        + ".",
        "",
        "| world | rows | " + " | ".join(shown) + " |",
        "|---|---:|" + "---:|" * len(shown),
    ]
    for r in rows:
        cells = " | ".join(f"{r[c]:.3f}" for c in shown)
        lines.append(f"| {r['world']} | {r['rows']} | {cells} |")
    lines += ["", f"{time.time() - start:.0f} s on this machine."]
    publish(args.out, "accuracy_predictor", lines, {"reps": args.reps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
