"""`bfnas predictor fit|eval|predict|plot`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bfnas.commands.common import (
    EXIT_OK,
    add_arch_arg,
    arch_where,
    command,
    console,
    group,
    parse_arch,
    print_json,
    unit_warnings,
)
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir, check_output_file


def register(sub) -> None:
    g = group(
        sub,
        "predictor",
        "latency predictor: fit, eval, predict, plot",
        "bfnas predictor fit --hw local-cpu-int8 --db lat.db --out pred/ --json",
    )
    p = command(
        g,
        "fit",
        "fit a LightGBM latency predictor on a profile's stored latencies",
        "bfnas predictor fit --hw seed-cpu-fp32 --db lat.db --out pred/ "
        "--train-size 300 --test-size 2000 --seed 0 --json",
        cmd_fit,
    )
    p.add_argument("--hw", required=True, help="profile name (or hash) in the store")
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--out", required=True, help="folder to write the model to")
    p.add_argument("--space", help="only rows of this space (needed when the profile has several)")
    p.add_argument("--train-size", type=int, help="fit on this many random rows ...")
    p.add_argument("--test-size", type=int, help="... and report on this many other rows")
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="without --train-size: K-fold CV for the metrics, then fit on all (default 5)",
    )
    p.add_argument("--seed", type=int, default=0, help="split and LightGBM seed (default 0)")
    p.add_argument(
        "--target",
        default="ratio",
        choices=("ms", "log", "ratio"),
        help="what LightGBM learns: latency, its log, or its ratio to a fitted "
        "analytic estimate (default ratio)",
    )
    p.add_argument(
        "--monotone",
        action="store_true",
        help="monotone constraints on size features (ms/log targets)",
    )
    p.add_argument(
        "--prior",
        metavar="MODEL_DIR",
        help="a predictor of another profile in the same space and workload: the new one "
        "rescales its predictions and corrects them, so a few rows suffice",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        g,
        "eval",
        "score a saved predictor on a store's latencies for its profile",
        "bfnas predictor eval --model pred/ --db lat.db --json",
        cmd_eval,
    )
    p.add_argument("--model", required=True, help="folder written by `predictor fit`")
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        g,
        "predict",
        "predicted latency of one architecture, with its spread",
        "bfnas predictor predict --model pred/ --arch "
        '\'{"layers": 4, "hidden": 384, "heads": 12, "qkv": 384, "ffn": 1016}\' --json',
        cmd_predict,
    )
    p.add_argument("--model", required=True, help="folder written by `predictor fit`")
    add_arch_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        g,
        "plot",
        "predicted vs measured (with a +-10 %% band) and residuals vs features",
        "bfnas predictor plot --model pred/ --db lat.db --out pred.png",
        cmd_plot,
    )
    p.add_argument("--model", required=True, help="folder written by `predictor fit`")
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--json", action="store_true", help="print JSON")


def _store(path: str):
    from bfnas.bench.store.latency_store import LatencyStore

    # Read-only: a missing, empty, foreign or damaged file is one line and stays as it was.
    return LatencyStore(path, read_only=True)


def _model_rows(model_dir: str, db: str):
    """A saved predictor and its profile's rows in the store (refused if it has none)."""
    from bfnas.search.latency_predictor import LatencyPredictor
    from bfnas.search.training import load_rows

    model = LatencyPredictor.load(model_dir)
    with _store(db) as store:
        rows = load_rows(store, model.scope.profile_hash, model.scope.space)
    return model, rows


def cmd_fit(args: argparse.Namespace) -> int:
    from bfnas.bench.store.latency_store import LATENCY_UNITS
    from bfnas.search.latency_predictor import LatencyPredictor, accuracy, load_prior
    from bfnas.search.predictor_file import META_FILE, MODEL_FILE, PredictorSettings
    from bfnas.search.training import check_folds, cross_validate, holdout_split, load_rows

    check_output_dir(args.out, "--out", holds=(MODEL_FILE, META_FILE))
    if (args.train_size is None) != (args.test_size is None):
        raise InputError("--train-size", None, "give --train-size and --test-size together")
    settings = PredictorSettings(target=args.target, monotone=args.monotone, seed=args.seed)
    with _store(args.db) as store:
        rows = load_rows(store, args.hw, args.space)
    prior = load_prior(args.prior, rows.space, rows.seq_len, rows.batch) if args.prior else None
    n = len(rows.cfgs)
    if args.train_size is not None:  # checked before any output
        train, test = holdout_split(n, args.train_size, args.test_size, args.seed)
    else:
        check_folds(n, args.folds, per_fold=2 if prior is not None else 10)
    holdout = args.train_size is not None
    what = f"fitting on {len(train)} rows" if holdout else f"{args.folds}-fold CV on {n} rows"
    with ProgressDisplay(
        console(stderr=True),
        "bfnas predictor fit",
        what,
        total=None if holdout else args.folds + 1,
        transient=True,
        columns=("description", "bar", "percent", "remaining"),
    ) as progress:
        if holdout:
            model = LatencyPredictor(rows.scope, settings, prior=prior).fit(*rows.subset(train))
            test_cfgs, test_ms = rows.subset(test)
            metrics = accuracy(test_ms, model.predict(test_cfgs))
            evaluation = {"method": "holdout", "train_rows": len(train), "test_rows": len(test)}
        else:
            metrics = cross_validate(
                rows,
                settings,
                args.folds,
                args.seed,
                on_fold=lambda k: progress.update(advance=1),
                prior=prior,
            )
            model = LatencyPredictor(rows.scope, settings, prior=prior).fit(rows.cfgs, rows.ms)
            # Each row is predicted once, by the fold model that did not see it.
            evaluation = {"method": f"{args.folds}-fold CV", "train_rows": n, "test_rows": n}
            progress.update(completed=args.folds + 1)  # the folds, then the final fit
    model.metrics = {**metrics, **evaluation, "label": rows.label}
    model.anchor_ms = rows.anchor_ms
    folder = model.save(args.out)
    out = {
        "metrics": {k: v for k, v in metrics.items() if k != "fold_std"},
        **evaluation,
        "model": str(folder),
        "profile": rows.profile,
        "profile_hash": rows.profile_hash,
        "space": rows.space,
        "label": rows.label,
        "unit_text": LATENCY_UNITS[rows.label],
        "target": settings.target,
        "prior": None if model.prior is None else model.prior.scope.profile_hash,
        # Offered a prior, the fit keeps it only where it beats a fit from scratch out of fold.
        "prior_choice": model.prior_choice,
    }
    if "fold_std" in metrics:
        out["fold_std"] = metrics["fold_std"]
    if args.json:
        return print_json(out)
    sizes = (
        f"{n} rows"
        if evaluation["method"] != "holdout"
        else f"{evaluation['train_rows']} train / {evaluation['test_rows']} held-out rows"
    )
    _print_metrics(
        f"{rows.profile} / {rows.space}: {evaluation['method']}, {sizes}, "
        f"learning {LATENCY_UNITS[rows.label]}",
        metrics,
    )
    console().print(f"model written to {folder}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from bfnas.bench.store.latency_store import LATENCY_UNITS
    from bfnas.search.latency_predictor import accuracy

    model, rows = _model_rows(args.model, args.db)
    metrics = accuracy(rows.ms, model.predict(rows.cfgs))
    warnings = unit_warnings(model, rows.anchor_ms, args.db)
    for line in warnings:
        console(stderr=True).print(f"warning: {line}", markup=False)
    out = {
        "metrics": metrics,
        "warnings": warnings,
        "rows": len(rows.cfgs),
        "profile": rows.profile,
        "profile_hash": rows.profile_hash,
        "space": rows.space,
        "label": rows.label,
        "unit_text": LATENCY_UNITS[rows.label],
        "note": "rows the model was fitted on are included; see `fit` for held-out figures",
    }
    if args.json:
        return print_json(out)
    _print_metrics(
        f"{rows.profile} / {rows.space}: {len(rows.cfgs)} rows, {LATENCY_UNITS[rows.label]}",
        metrics,
    )
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from bfnas.models.space.search_space import load_space
    from bfnas.search.latency_predictor import LatencyPredictor

    cfg = parse_arch(args.arch)
    model = LatencyPredictor.load(args.model)
    try:
        space = load_space(model.scope.space)
    except InputError:
        space = None  # fitted on a space file that is not here: shape checks only
    if space is not None:
        space.check(cfg, where=arch_where(args.arch))
    lo, hi = model.predict_interval([cfg])
    from bfnas.bench.store.latency_store import LATENCY_UNITS

    unit = model.metrics.get("label")
    out = {
        "arch": cfg.to_dict(),
        "latency_ms": float(model.predict([cfg])[0]),
        "low_ms": float(lo[0]),
        "high_ms": float(hi[0]),
        "unit": unit,
        "unit_text": LATENCY_UNITS.get(unit, "ms, unit not recorded"),
        "profile_hash": model.scope.profile_hash,
        "space": model.scope.space,
    }
    if args.json:
        return print_json(out)
    console().print(
        f"{cfg}: {out['latency_ms']:.3f} ms (spread {out['low_ms']:.3f}-{out['high_ms']:.3f} ms; "
        f"{out['unit_text']})"
    )
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from bfnas.search.plots import plot_predictor

    if not args.out.lower().endswith(".png"):
        raise InputError("--out", None, "the plot is written as PNG: give a .png file")
    check_output_file(args.out, "--out")
    model, rows = _model_rows(args.model, args.db)
    path = plot_predictor(model, rows, Path(args.out))
    if args.json:
        return print_json({"plot": str(path), "rows": len(rows.cfgs)})
    console().print(f"wrote {path}")
    return EXIT_OK


def _print_metrics(title: str, m: dict) -> None:
    console().print(
        f"{title}\n  within 5 %: {m['within_5pct']:.1%}   within 10 %: {m['within_10pct']:.1%}   "
        f"MAPE: {m['mape']:.2%}   RMSE: {m['rmse_ms']:.3f} ms   Kendall tau: {m['kendall_tau']:.3f}"
    )
