"""Predictor benchmark: bfnas's LightGBM predictor against the seed's MLP and a linear model,
on the same splits, in the same run.

    python benchmarks/predictor.py --db lat.db --hw seed-cpu-fp32 [--hw local-cpu-int8 ...]
        [--sizes 100,300,1000] [--test-size 2000] [--seeds 5]

For every profile, training size n and seed: n random rows train, `--test-size` other rows
are held out (fewer when the store has fewer: all the rest). Methods:
- bfnas: `LatencyPredictor` with its default settings (ratio to a fitted analytic estimate);
  also the "log" target, to show what the choice of target is worth;
- seed MLP: features hidden, layers, mean FFN, mean qkv (standardized); 3 hidden layers of
  128 ReLU units; Adam (lr 1e-3), full batch, 3,000 steps, on the standardized latency;
- linear: least squares of latency on a constant, layers and the analytic MACs per op class
  and the parameter count;
- MACs only: bfnas's recipe before issue 18 (the estimate of a fixed cost, a cost per layer and
  per MAC of each product class; the trees without the element-wise features), to show what
  the element-wise op costs are worth.
Goals (issue 4): bfnas >= seed MLP and >= linear at every n on +-10 % and tau; on the tool's
own labels +-10 % >= 99.5 % and +-5 % >= 97 % with <= 300 measured subnets. Issue 18: on the
per-layer `minilm-l6` space (`--space minilm-l6`, the fixed set of benchmarks/data/README.md)
>= 95 % within 5 % at n = 100.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from results_io import publish

from bfnas.bench.store.latency_store import LatencyStore
from bfnas.search.features import FEATURES
from bfnas.search.latency_predictor import LatencyPredictor, accuracy
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.training import LatencyRows, load_rows

LINEAR_COLUMNS = ("layers", "macs_qkv", "macs_attn", "macs_out", "macs_ffn", "params")
SEED_MLP_COLUMNS = ("hidden", "layers", "ffn_mean", "qkv_mean")


def fit_predict_linear(X_train, y_train, X_test):
    cols = [FEATURES.index(c) for c in LINEAR_COLUMNS]
    scale = np.abs(X_train[:, cols]).max(0)
    scale[scale == 0] = 1

    def design(X):
        return np.column_stack([np.ones(len(X)), X[:, cols] / scale])

    coef, *_ = np.linalg.lstsq(design(X_train), y_train, rcond=None)
    return design(X_test) @ coef


MACS_ONLY_ESTIMATE = ("layers", "macs_qkv", "macs_attn", "macs_out", "macs_ffn")


def fit_predict_macs_only(X_train, y_train, X_test, seed: int):
    """The predictor as it was before the element-wise features: same target and rounds rule."""
    import lightgbm as lgb
    from scipy.optimize import nnls

    keep = [i for i, f in enumerate(FEATURES) if not f.startswith("elems_")]
    cols = [FEATURES.index(c) for c in MACS_ONLY_ESTIMATE]

    def design(X):
        return np.column_stack([np.ones(len(X)), X[:, cols]])

    scale = np.abs(design(X_train)).max(0)
    scale[scale == 0] = 1
    coef, _ = nnls(design(X_train) / scale / y_train[:, None], np.ones(len(y_train)))
    est_tr, est_te = design(X_train) / scale @ coef, design(X_test) / scale @ coef
    params = {
        "objective": "regression",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": min(5, max(len(X_train) // 10, 1)),
        "min_data_in_bin": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    data = lgb.Dataset(X_train[:, keep], y_train / est_tr, params={"min_data_in_bin": 1})
    rounds = 300
    if len(X_train) >= 50:
        cv = lgb.cv(
            params,
            data,
            300,
            nfold=5,
            stratified=False,
            seed=seed,
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        rounds = max(len(next(iter(cv.values()))), 1)
    return lgb.train(params, data, rounds).predict(X_test[:, keep]) * est_te


def fit_predict_seed_mlp(X_train, y_train, X_test, seed: int, steps: int = 3000):
    import torch

    torch.manual_seed(seed)
    cols = [FEATURES.index(c) for c in SEED_MLP_COLUMNS]
    xtr, xte = X_train[:, cols], X_test[:, cols]
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    ymu, ysd = y_train.mean(), y_train.std() + 1e-9
    net = torch.nn.Sequential(
        torch.nn.Linear(len(cols), 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    yt = torch.tensor((y_train - ymu) / ysd, dtype=torch.float32)[:, None]
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(torch.tensor((xte - mu) / sd, dtype=torch.float32)).numpy()[:, 0]
    return out * ysd + ymu


def run_profile(rows: LatencyRows, sizes: list[int], test_size: int, seeds: int) -> list[dict]:
    X_all = feature_matrix_of(rows)
    results = []
    for n in sizes:
        if n + 10 > len(rows.cfgs):
            print(
                f"{rows.profile}: skipping n={n}, the store has {len(rows.cfgs)} rows",
                file=sys.stderr,
            )
            continue
        per_method: dict[str, list[dict]] = {}
        for seed in range(seeds):
            idx = np.random.default_rng(seed).permutation(len(rows.cfgs))
            train, test = idx[:n], idx[n : n + test_size]
            y_tr, y_te = rows.ms[train], rows.ms[test]
            preds = {}
            coverage = None
            for target in ("ratio", "log"):
                model = LatencyPredictor(rows.scope, PredictorSettings(target=target, seed=seed))
                model.fit(*rows.subset(train))
                preds[f"bfnas ({target})"] = model.predict(X_all[test])
                if target == "ratio":
                    lo, hi = model.predict_interval(X_all[test])
                    coverage = float(np.mean((lo <= y_te) & (y_te <= hi)))
            preds["seed MLP"] = fit_predict_seed_mlp(X_all[train], y_tr, X_all[test], seed)
            preds["linear"] = fit_predict_linear(X_all[train], y_tr, X_all[test])
            preds["MACs only (before)"] = fit_predict_macs_only(
                X_all[train], y_tr, X_all[test], seed
            )
            for name, p in preds.items():
                m = accuracy(y_te, np.maximum(p, 1e-6))
                if name == "bfnas (ratio)":
                    m["spread_coverage"] = coverage
                per_method.setdefault(name, []).append(m)
        for name, ms in per_method.items():
            agg = {k: statistics.mean(m[k] for m in ms) for k in ms[0]}
            cov_note = agg.pop("spread_coverage", None)
            agg["within_10pct_min"] = min(m["within_10pct"] for m in ms)
            results.append(
                {
                    "profile": rows.profile,
                    "label": rows.label,
                    "n": n,
                    "test_rows": min(test_size, len(rows.cfgs) - n),
                    "method": name,
                    **agg,
                    "spread_coverage": cov_note,
                }
            )
    return results


def predict_speed(rows: LatencyRows, n: int = 100_000) -> dict:
    """Seconds to score `n` random configs of the space (features + LightGBM), best of 3."""
    import random

    from bfnas.models.space.search_space import load_space

    space = load_space(rows.space)
    rng = random.Random(0)
    cfgs = [space.sample(rng) for _ in range(n)]
    model = LatencyPredictor(rows.scope).fit(*rows.subset(np.arange(min(300, len(rows.cfgs)))))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        model.predict(cfgs)
        best = min(best, time.perf_counter() - t)
    return {"configs": n, "seconds": best, "rounds": model.rounds}


def feature_matrix_of(rows: LatencyRows) -> np.ndarray:
    from bfnas.search.features import feature_matrix

    return feature_matrix(rows.cfgs, rows.seq_len, rows.batch)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", required=True)
    ap.add_argument(
        "--hw", action="append", required=True, help="profile in the store (repeatable)"
    )
    ap.add_argument("--space", help="only rows of this space (needed when a profile has several)")
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--name", default="predictor", help="results file name")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.time()
    results = []
    with LatencyStore(args.db) as store:
        all_rows = [load_rows(store, hw, args.space) for hw in args.hw]
    for rows in all_rows:
        results += run_profile(rows, sizes, args.test_size, args.seeds)
    spaces = ", ".join(sorted({r.space for r in all_rows}))
    lines = [
        f"space {spaces}; {args.seeds} seeds per cell; metrics are means over seeds on "
        "held-out rows (min over seeds for +-10 % in brackets)",
        "",
        "| profile (label) | n train | held out | method | within 5 % | within 10 % | MAPE | "
        "Kendall tau |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['profile']} ({r['label']}) | {r['n']} | {r['test_rows']} | {r['method']} | "
            f"{r['within_5pct']:.1%} | {r['within_10pct']:.1%} ({r['within_10pct_min']:.1%}) | "
            f"{r['mape']:.2%} | {r['kendall_tau']:.3f} |"
        )
    lines += [
        "",
        "spread (10th-90th percentile models, nominal 80 %): share of held-out latencies inside",
    ]
    lines += [
        f"- {r['profile']} n={r['n']}: {r['spread_coverage']:.1%}"
        for r in results
        if r["spread_coverage"] is not None
    ]
    verdicts = []
    for prof in {r["profile"] for r in results}:
        for n in sorted({r["n"] for r in results if r["profile"] == prof}):
            cell = {r["method"]: r for r in results if r["profile"] == prof and r["n"] == n}
            ours = cell["bfnas (ratio)"]
            beats = all(
                ours[k] >= cell[m][k]
                for m in ("seed MLP", "linear")
                for k in ("within_10pct", "kendall_tau")
            )
            verdicts.append(
                f"{prof} n={n}: bfnas >= seed MLP and linear on +-10 % and tau: "
                f"{'yes' if beats else 'NO'}"
            )
    speed = predict_speed(all_rows[0])
    lines += [
        "",
        *sorted(verdicts),
        "",
        f"batched predict: {speed['configs']:,} configs of {all_rows[0].space} in "
        f"{speed['seconds']:.2f} s including features (goal < 1 s), 1 thread",
        f"{time.time() - t0:.0f} s in all",
    ]
    publish(args.out, args.name, lines, {"results": results, "predict_speed": speed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
