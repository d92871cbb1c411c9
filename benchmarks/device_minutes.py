"""Device time to a trusted latency predictor: random sampling vs `--until` vs `--until --prior`.

    python benchmarks/device_minutes.py --db scratch/minilm-l6.db [--splits 3] [--held-out 300]
        [--prior-hw local-cpu-fp32 --prior-hw local-cpu-int8-2t] [--bf-db scratch/bigger-faster.db]

The measurements are replayed from a fixed set measured once (its recipe:
benchmarks/data/README.md, "The fixed minilm-l6 set"): a strategy "measures" a subnet by
revealing its stored row, and its device time is the measuring wall time that row's store
entry records (`device_s`: every attempt, untrusted ones included). Each split holds out
`--held-out` random trusted rows; the rest is the pool every strategy draws from.

- random: the pool in random order, a fit every 5 rows (from 10), as often as `--until` fits;
- until (`search.until_trusted.UntilTrusted`, as `bfnas profile --until 0.95` runs it), with
  each chooser: design (the default, 40 % of each round drawn at random while the estimate is
  below the target; also with 80 %), disagreement, coverage, random (every row drawn at
  random, so every row audited);
- until + prior: the default, each fit offered a predictor of a `--prior-hw` profile fitted on
  all its trusted rows in the space.
For each: the device time at which the held-out share within 5 % first reaches 95 %, where
`--until` stopped by itself (rows, device time, its lower bound, the held-out share then).
With a prior: the held-out share within 10 % from 10 and 20 random rows.

On `bigger-faster` (with `--bf-db`): a prior fitted on the repository's seed FP32 table
(another machine, FP32) for `local-cpu-int8` from 10 / 20 / 50 rows, within 10 % and tau,
against a fit from scratch on the same rows.
Goals (issue 18): `--until` <= 0.5x random's device time; with a prior, >= 95 % within 10 %
from <= 20 rows of the new profile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from results_io import publish

from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.latency_predictor import LatencyPredictor, accuracy
from bfnas.search.predictor_file import PredictorScope
from bfnas.search.training import LatencyRows, load_rows
from bfnas.search.until_settings import UntilSettings
from bfnas.search.until_trusted import Measured, UntilTrusted, share_lower_bound

REPO = Path(__file__).resolve().parents[1]
SEED_FILE = REPO / "benchmarks" / "data" / "seed-latency-fp32.tsv"
TARGET, TOLERANCE = 0.95, 0.05


@dataclass
class Row:
    cfg: SubnetConfig
    ms: float | None  # the label; None for an untrusted row (it costs time, teaches nothing)
    device_s: float


def fixed_set(db: str, hw: str, space: str) -> tuple[LatencyRows, list[Row]]:
    with LatencyStore(db, read_only=True) as store:
        trusted = load_rows(store, hw, space)
        label = {c.key(): ms for c, ms in zip(trusted.cfgs, trusted.ms, strict=True)}
        rows = [
            Row(r.arch, label.get(r.subnet_key), r.device_s)
            for r in store.measurements(trusted.profile_hash)
            if r.space == space
        ]
    missing = sum(r.device_s is None for r in rows)
    if missing:
        sys.exit(f"{db}: {missing} rows record no device time (measured before bfnas kept it)")
    return trusted, rows


class Replay:
    def __init__(self, pool: list[Row]) -> None:
        self.by_key = {r.cfg.key(): r for r in pool}
        self.revealed: list[Row] = []

    def measured(self) -> Measured:
        ok = [r for r in self.revealed if r.ms is not None]
        return Measured(
            cfgs=[r.cfg for r in ok],
            ms=np.array([r.ms for r in ok]),
            keys={r.cfg.key() for r in self.revealed},
            device_s=float(sum(r.device_s for r in self.revealed)),
        )


def held_share(model: LatencyPredictor, held: list[Row], tol: float = TOLERANCE) -> float:
    p = model.predict([r.cfg for r in held])
    y = np.array([r.ms for r in held])
    return float(np.mean(np.abs(p / y - 1) <= tol))


def run_random(scope, pool, held, seed, prior=None, step=5):
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    curve, reached = [], None
    for n in range(10, len(order) + 1, step):
        seen = order[:n]
        ok = [r for r in seen if r.ms is not None]
        model = LatencyPredictor(scope, prior=prior).fit([r.cfg for r in ok], [r.ms for r in ok])
        device = sum(r.device_s for r in seen)
        share = held_share(model, held)
        curve.append({"rows": len(ok), "device_s": device, "held_out_within_5pct": share})
        if share >= TARGET:
            reached = curve[-1]
            break
    return {"reached": reached, "curve": curve}


def run_until(scope, pool, held, seed, choose, prior=None, **settings):
    replay = Replay(pool)
    settings = UntilSettings(
        target=TARGET, tolerance=TOLERANCE, choose=choose, seed=seed, **settings
    )

    def fit(cfgs, ms):
        return LatencyPredictor(scope, prior=prior).fit(cfgs, ms)

    until = UntilTrusted(settings, scope, [r.cfg for r in pool], replay.measured, fit=fit)
    curve, reached = [], None
    while True:
        chosen = until.next_round()
        if until.model is not None and until.curve:
            point = until.curve[-1].to_dict()
            point["held_out_within_5pct"] = held_share(until.model, held)
            curve.append(point)
            if reached is None and point["held_out_within_5pct"] >= TARGET:
                reached = point
        if not chosen:
            break
        replay.revealed.extend(replay.by_key[c.key()] for c in chosen)
    return {"reached": reached, "stop": until.stop, "stopped_at": curve[-1], "curve": curve}


def prior_model(db: str, hw: str, space: str) -> LatencyPredictor:
    with LatencyStore(db, read_only=True) as store:
        rows = load_rows(store, hw, space)
    return LatencyPredictor(rows.scope).fit(rows.cfgs, rows.ms)


def few_rows(scope, trusted_pool, held, seed, sizes, prior):
    """Within 10 % / 5 % and tau on the held-out rows from n random rows: what bfnas fits with
    the prior (rescaled and corrected by trees, kept only where it beats a fit from scratch
    out of fold), the same always kept, the rescaling alone, the prior as it is, and a fit
    from scratch."""
    from bfnas.search.latency_predictor import estimate, fit_estimate

    order = [trusted_pool[i] for i in np.random.default_rng(seed).permutation(len(trusted_pool))]
    y = np.array([r.ms for r in held])
    X_held = prior.features([r.cfg for r in held])
    out = {"prior as it is": accuracy(y, prior.predict(X_held))}
    for n in sizes:
        cfgs, ms = [r.cfg for r in order[:n]], np.array([r.ms for r in order[:n]])
        model = LatencyPredictor(scope, prior=prior).fit(cfgs, ms)
        out[f"bfnas --prior n={n}"] = accuracy(y, model.predict(X_held))
        out[f"bfnas --prior n={n}"]["prior_kept"] = model.prior is not None
        kept = LatencyPredictor(scope, prior=prior)
        kept._keep_prior_if_better = lambda cfgs, ms: None  # the prior however it does
        kept.fit(cfgs, ms)
        out[f"prior + trees n={n}"] = accuracy(y, kept.predict(X_held))
        coef = fit_estimate(prior.features(cfgs), ms, prior)
        out[f"prior rescaled n={n}"] = accuracy(y, estimate(X_held, coef, prior))
        scratch = LatencyPredictor(scope).fit(cfgs, ms)
        out[f"scratch n={n}"] = accuracy(y, scratch.predict(X_held))
    return out


def stop_counts(stops: list[str]) -> str:
    """Why each split's job stopped, counted: "10/10 trusted"."""
    return ", ".join(f"{stops.count(w)}/{len(stops)} {w}" for w in dict.fromkeys(stops))


def mean_of(dicts: list[dict], key: str) -> float:
    return statistics.mean(d[key] for d in dicts)


def fmt_reach(results: list[dict]) -> str:
    hit = [r["reached"] for r in results if r["reached"]]
    if len(hit) < len(results):
        return f"not reached in {len(results) - len(hit)} of {len(results)} splits"
    return (
        f"{statistics.mean(h['device_s'] for h in hit) / 60:.2f} min "
        f"({statistics.mean(h['rows'] for h in hit):.0f} rows)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="the fixed minilm-l6 set (and the prior's rows)")
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--space", default="minilm-l6")
    ap.add_argument(
        "--prior-hw",
        action="append",
        help="profile of a prior's rows (repeatable; default local-cpu-fp32 and, where the store "
        "has it, local-cpu-int8-2t)",
    )
    ap.add_argument("--bf-db", help="local-cpu-int8 rows of bigger-faster, for the seed prior")
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    t0 = time.time()

    trusted, rows = fixed_set(args.db, args.hw, args.space)
    scope = trusted.scope
    with LatencyStore(args.db, read_only=True) as store:
        stored = {p["name"] for p in store.profiles()}
    wanted = args.prior_hw or [h for h in ("local-cpu-fp32", "local-cpu-int8-2t") if h in stored]
    priors = {hw: prior_model(args.db, hw, args.space) for hw in wanted}
    data: dict = {
        "profile": args.hw,
        "space": args.space,
        "rows": len(rows),
        "trusted": len(trusted.cfgs),
        "device_s_total": sum(r.device_s for r in rows),
        "priors": {hw: len(p.oof_ms) for hw, p in priors.items()},
    }
    strategies = {
        "random": lambda pool, held, s: run_random(scope, pool, held, s),
        "until (design)": lambda pool, held, s: run_until(scope, pool, held, s, "design"),
        "until (design, audit 0.8)": lambda pool, held, s: run_until(
            scope, pool, held, s, "design", audit=0.8
        ),
        "until (disagreement)": lambda pool, held, s: run_until(
            scope, pool, held, s, "disagreement"
        ),
        "until (coverage)": lambda pool, held, s: run_until(scope, pool, held, s, "coverage"),
        "until (random)": lambda pool, held, s: run_until(scope, pool, held, s, "random"),
    }
    for hw, prior in priors.items():
        strategies[f"until --prior ({hw})"] = lambda pool, held, s, p=prior: run_until(
            scope, pool, held, s, "design", p
        )
    per: dict[str, list[dict]] = {k: [] for k in strategies}
    few: list[dict] = []
    for split in range(args.splits):
        ok_idx = [i for i, r in enumerate(rows) if r.ms is not None]
        rng = np.random.default_rng(1000 + split)
        held_idx = set(rng.choice(ok_idx, size=args.held_out, replace=False).tolist())
        held = [rows[i] for i in sorted(held_idx)]
        pool = [r for i, r in enumerate(rows) if i not in held_idx]
        for name, run in strategies.items():
            per[name].append(run(pool, held, split))
            print(f"split {split}: {name}: {fmt_reach(per[name][-1:])}", file=sys.stderr)
        trusted_pool = [r for r in pool if r.ms is not None]
        few.append(
            {
                f"{hw}: {k}": v
                for hw, prior in priors.items()
                for k, v in few_rows(scope, trusted_pool, held, split, (10, 20, 50), prior).items()
                if hw == wanted[0] or not k.startswith("scratch")
            }
        )
    # Every split's reach and stop, but only the first split's whole curve (the rest is
    # hundreds of kilobytes of the same shape).
    data["strategies"] = {
        name: [
            r if i == 0 else {k: v for k, v in r.items() if k != "curve"}
            for i, r in enumerate(results)
        ]
        for name, results in per.items()
    }
    data["few_rows"] = few

    random_s = [r["reached"]["device_s"] for r in per["random"] if r["reached"]]
    lines = [
        f"# Device time to a trusted predictor: {args.space} on {args.hw}",
        "",
        f"A fixed set of {len(rows)} measured subnets ({len(trusted.cfgs)} trusted; "
        f"{data['device_s_total'] / 60:.1f} device-minutes in all), replayed; "
        f"{args.splits} splits, "
        f"{args.held_out} held-out trusted rows each. Target: >= {TARGET:.0%} of held-out "
        f"predictions within {TOLERANCE:.0%}. Priors (each fitted on all its trusted rows of "
        f"the space, measured on the same machine): "
        + ", ".join(f"{hw} ({n} rows)" for hw, n in data["priors"].items())
        + ".",
        "",
        "| strategy | device time to >= 95 % held-out within 5 % | vs random | stopped by itself at"
        " | its lower bound then | held-out within 5 % then |",
        "|---|---|---|---|---|---|",
    ]
    for name, results in per.items():
        hit = [r["reached"]["device_s"] for r in results if r["reached"]]
        ratio = (
            f"{statistics.mean(hit) / statistics.mean(random_s):.2f}x"
            if hit and random_s and len(hit) == len(results)
            else "-"
        )
        if "stop" in results[0]:
            stops = [r["stopped_at"] for r in results]
            stopped = (
                f"{mean_of(stops, 'device_s') / 60:.2f} min, {mean_of(stops, 'rows'):.0f} rows "
                f"({stop_counts([r['stop'] for r in results])})"
            )
            bound = f"{mean_of(stops, 'lower_bound'):.1%}"
            worst = min(s["held_out_within_5pct"] for s in stops)
            then = f"{mean_of(stops, 'held_out_within_5pct'):.1%} (min {worst:.1%})"
        else:
            stopped = bound = then = "-"
        lines.append(f"| {name} | {fmt_reach(results)} | {ratio} | {stopped} | {bound} | {then} |")
    floor = next(n for n in range(1, 10_000) if share_lower_bound(n, n) >= TARGET)
    per_row = data["device_s_total"] / len(rows)
    lines += [
        "",
        f"Stopping by itself costs at least {floor} random rows all within (the one-sided "
        f"95 % bound of {floor} of {floor} is the first >= {TARGET:.0%}): "
        f"{floor * per_row / 60:.2f} device-minutes at this set's "
        f"{per_row:.2f} s a subnet, whatever chooses the rest. Random sampling gets there "
        "without knowing it has.",
    ]
    lines += [
        "",
        f"From few random rows of {args.hw}, held out as above (mean of {args.splits} splits; "
        "`bfnas --prior` keeps the prior only where it beats a fit from scratch out of fold, "
        "`prior + trees` always keeps it):",
        *fit_table(few),
    ]
    if args.bf_db:
        lines += bigger_faster(args.bf_db, args.splits, data)
    lines += ["", f"{time.time() - t0:.0f} s in all"]
    publish(args.out, "device_minutes", lines, data)
    return 0


def bigger_faster(db: str, splits: int, data: dict) -> list[str]:
    """The seed table's FP32 predictor as the prior of this machine's INT8 on bigger-faster."""
    from bfnas.bench.store.importer import parse_autotinybert
    from bfnas.models.space.search_space import load_space

    seed = parse_autotinybert(SEED_FILE, load_space("bigger-faster"))
    prior = LatencyPredictor(PredictorScope("seed-cpu-fp32", "bigger-faster", 128)).fit(
        [r.cfg for r in seed], [r.ms for r in seed]
    )
    trusted, rows = fixed_set(db, "local-cpu-int8", "bigger-faster")
    ok = [r for r in rows if r.ms is not None]
    results = []
    for split in range(splits):
        idx = np.random.default_rng(2000 + split).permutation(len(ok))
        pool, held = [ok[i] for i in idx[:50]], [ok[i] for i in idx[50:]]
        results.append(few_rows(trusted.scope, pool, held, split, (10, 20, 50), prior))
    data["bigger_faster"] = {"rows": len(ok), "results": results}
    lines = [
        "",
        f"bigger-faster: prior fitted on the seed FP32 table ({len(seed)} rows, another machine) "
        f"for local-cpu-int8 ({len(ok)} trusted rows here; n random rows fit, the rest held out; "
        f"mean of {splits} splits):",
        *fit_table(results),
    ]
    return lines


def fit_table(splits: list[dict]) -> list[str]:
    """A table of each fit's held-out metrics, the mean over splits."""
    lines = ["", "| fit | within 10 % | within 5 % | Kendall tau |", "|---|---|---|---|"]
    for key in splits[0]:
        ms = [s[key] for s in splits]
        lines.append(
            f"| {key} | {mean_of(ms, 'within_10pct'):.1%} | {mean_of(ms, 'within_5pct'):.1%} "
            f"| {mean_of(ms, 'kendall_tau'):.3f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
