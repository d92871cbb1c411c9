"""Pareto-mode benchmark: bfnas's own NSGA-II-style selection against pymoo's NSGA2.

    pip install pymoo   # only this benchmark needs it
    python benchmarks/pareto.py --db lat.db [--hw local-cpu-int8] [--space bigger-faster]

Both search the same space with the same predictor (fitted on the store's rows for the
profile), the same operators (the space's mutation and crossover), the same population and
generations, and the same constraint (top of the predicted spread under the budget). Scored
by the hypervolume of the feasible predicted front (latency to minimise, encoder params to
maximise; reference point: the budget and zero params), by the number of predictor-scored
candidates and by wall time, over several budgets and seeds. Issue 5 asks for the one to
ship to be chosen by this measurement. Writes benchmarks/results/pareto.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
from results_io import publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.space.search_space import load_space
from bfnas.search.evolution import Budget, EvolutionSettings, evolve, predictor_scorer
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.objectives import load_objective
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.training import load_rows


def hypervolume(points: list[tuple[float, float]], max_ms: float) -> float:
    """Area dominated by (ms, objective) points, ms <= max_ms, objective >= 0."""
    area, best = 0.0, 0.0
    # Sweep from the budget down: each point adds the strip its objective raises.
    for ms, obj in sorted(points, key=lambda p: p[0]):
        if ms <= max_ms and obj > best:
            area += (max_ms - ms) * (obj - best)
            best = obj
    return area


def pymoo_front(space, score, objective, budget: Budget, pop: int, gens: int, seed: int):
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.crossover import Crossover
    from pymoo.core.duplicate import HashDuplicateElimination
    from pymoo.core.mutation import Mutation
    from pymoo.core.problem import Problem
    from pymoo.core.sampling import Sampling
    from pymoo.optimize import minimize

    rng = random.Random(seed)

    class Subnets(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=1, n_obj=2, n_ieq_constr=1, vtype=object)

        def _evaluate(self, X, out, *args, **kwargs):
            cfgs = [x[0] for x in X]
            mid, _, hi = score(cfgs)
            out["F"] = np.column_stack([mid, [-objective(c) for c in cfgs]])
            out["G"] = (hi - budget.max_ms)[:, None]

    class Sample(Sampling):
        def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
            return np.array([[space.sample(rng)] for _ in range(n_samples)], dtype=object)

    class Mutate(Mutation):
        def _do(self, problem, X, *args, random_state=None, **kwargs):
            return np.array([[space.mutate(x[0], rng)] for x in X], dtype=object)

    class Cross(Crossover):
        def __init__(self) -> None:
            super().__init__(2, 1)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            _, n_matings, _ = X.shape
            out = np.empty((1, n_matings, 1), dtype=object)
            for k in range(n_matings):
                out[0, k, 0] = space.crossover(X[0, k, 0], X[1, k, 0], rng)
            return out

    def key(v):
        return v if isinstance(v, str) else v.X[0].key()

    algorithm = NSGA2(
        pop_size=pop,
        sampling=Sample(),
        crossover=Cross(),
        mutation=Mutate(),
        eliminate_duplicates=HashDuplicateElimination(func=key),
    )
    res = minimize(Subnets(), algorithm, ("n_gen", gens), seed=seed, verbose=False)
    evaluated = res.algorithm.evaluator.n_eval
    pts = []
    if res.F is not None:
        F, G = np.atleast_2d(res.F), np.atleast_2d(res.G)
        pts = [(float(f[0]), float(-f[1])) for f, g in zip(F, G, strict=True) if g[0] <= 0]
    return pts, evaluated


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", required=True)
    ap.add_argument("--hw", default="local-cpu-int8", help="profile name in the store")
    ap.add_argument("--space", default="bigger-faster")
    ap.add_argument("--population", type=int, default=60)
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    space = load_space(args.space)
    objective = load_objective("params")
    with LatencyStore(Path(args.db)) as store:
        try:
            hw = load_profile(args.hw).hash()
        except Exception:  # an imported profile is a label in the store, not a file
            hw = args.hw
        rows = load_rows(store, hw, space.name)
    model = LatencyPredictor(rows.scope, PredictorSettings()).fit(rows.cfgs, rows.ms)
    score = predictor_scorer(model)
    budgets = np.quantile(rows.ms, [0.2, 0.4, 0.6, 0.8])
    table = []
    for b in budgets:
        budget = Budget(float(b))
        for seed in range(args.seeds):
            t = time.perf_counter()
            own = evolve(
                space,
                score,
                objective,
                budget,
                EvolutionSettings(
                    population=args.population,
                    parents=args.population // 2,
                    generations=args.generations,
                    mode="pareto",
                    seed=seed,
                ),
            )
            own_s = time.perf_counter() - t
            t = time.perf_counter()
            pts, n_eval = pymoo_front(
                space, score, objective, budget, args.population, args.generations, seed
            )
            moo_s = time.perf_counter() - t
            table.append(
                {
                    "budget_ms": float(b),
                    "seed": seed,
                    "own_hv": hypervolume([(c.predicted_ms, c.objective) for c in own.front], b),
                    "own_evaluated": own.evaluated,
                    "own_s": own_s,
                    "own_front": len(own.front),
                    "pymoo_hv": hypervolume(pts, b),
                    "pymoo_evaluated": n_eval,
                    "pymoo_s": moo_s,
                }
            )
    rel = [r["own_hv"] / r["pymoo_hv"] for r in table if r["pymoo_hv"]]
    lines = [
        f"{rows.profile} / {space.name}: predictor on {len(rows.cfgs)} rows; population "
        f"{args.population}, "
        f"{args.generations} generations, {args.seeds} seeds per budget",
        "",
        "| budget ms | seed | own HV | own scored | own s | pymoo HV | pymoo scored | pymoo s | "
        "own / pymoo HV |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['budget_ms']:.3f} | {r['seed']} | {r['own_hv']:.4g} | {r['own_evaluated']} | "
            f"{r['own_s']:.2f} | "
            f"{r['pymoo_hv']:.4g} | {r['pymoo_evaluated']} | {r['pymoo_s']:.2f} | "
            f"{r['own_hv'] / r['pymoo_hv'] if r['pymoo_hv'] else float('nan'):.3f} |"
            for r in table
        ),
        "",
        f"own / pymoo hypervolume: median {statistics.median(rel):.3f}, min {min(rel):.3f}, max "
        f"{max(rel):.3f}",
        f"time: own {statistics.mean(r['own_s'] for r in table):.2f} s, "
        f"pymoo {statistics.mean(r['pymoo_s'] for r in table):.2f} s per search (mean)",
    ]
    publish(args.out, "pareto", lines, {"rows": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
