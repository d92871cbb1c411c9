"""`AccuracyPredictor`: a subnet's fine-tuned dev accuracy from its architecture, the latency
predictor's counterpart, fitted on the accuracy store's fine-tunes.

A fine-tune costs minutes to hours, so this predictor learns from 15-60 subnets, not
hundreds. What LightGBM learns by default is what a least-squares line in log(encoder
params) (and the caller's extra columns, such as a one-shot score) leaves over, with few,
small trees on the subnet's sizes (`AccuracySettings`), their rounds picked by CV; and the
trees are kept only where they rank better out of fold than the line alone. The line ranks
every subnet as params do (trees alone on 15 rows are a few steps, under which most
subnets tie); the trees learn what params miss (depth, a bottleneck layer), which is most of
what matters among subnets near one latency budget. Measured on synthetic accuracies in
benchmarks/accuracy_predictor.py (results in benchmarks/results/accuracy_predictor.md).

The target is a subnet's mean dev accuracy over its seeds (a fraction); a subnet of more
seeds weighs more in the trees (`weight_by_seeds`; the line is fitted unweighted, the
estimator's target sees no weights). Out-of-fold predictions give the metrics (Kendall tau,
Spearman, the mean error in accuracy points, and params' own tau on the same rows) and an
additive spread; the fold models' disagreement is `uncertainty`, what `accuracy_until`
chooses the next fine-tunes by.

The fitting, the folds and the booster file are `estimator`'s; the folder (LightGBM's text
model plus predictor.json, kind "accuracy", never pickled) is `predictor_file`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from bfnas.bench.store.accuracy_store import AccuracyStore, WeightsSource
from bfnas.errors import InputError, short
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.estimator import (
    Estimator,
    FittedModel,
    Identity,
    TargetFit,
    Transform,
    fold_disagreement,
    identity_target,
)
from bfnas.search.features import FEATURES, feature_matrix
from bfnas.search.predictor_file import (
    FORMAT,
    META_FILE,
    MODEL_FILE,
    AccuracyMeta,
    AccuracyScope,
    AccuracySettings,
    predictor_folder,
    read_booster,
    read_meta,
    write_folder,
)

# The subnet's columns (`settings.features`). "sizes" (the default): its dimensions, the
# smallest layer's (a bottleneck), its MACs and encoder parameters. "all": every column of
# `feature_matrix` but the workload's constants (one scope has one sequence length and batch
# 1), the per-op MACs and element counts the latency predictor needs included. On 15-60 rows
# the sizes ranked as well or better (benchmarks/results/accuracy_predictor.md).
FEATURE_SETS = {
    "sizes": (
        "layers",
        "hidden",
        "heads_mean",
        "heads_min",
        "qkv_mean",
        "qkv_min",
        "ffn_mean",
        "ffn_min",
        "macs_total",
        "params",
    ),
    "all": tuple(f for f in FEATURES if f not in ("seq_len", "batch")),
}
# The line under the "residual" target: log(encoder params), then every extra column.
LOG_PARAMS = "log_params"
# Fewer rows make 5-fold out-of-fold figures (and the line's coefficients) noise.
MIN_ROWS = 8
# A tiny ridge on the standardized line: defined when a column does not vary (or two are
# collinear), and no pull on a line that is well determined.
RIDGE = 1e-3

Extra = Mapping[str, Sequence[float]] | None


def baseline_design(X: np.ndarray, n_extra: int) -> np.ndarray:
    """The line's columns of a feature matrix: log(params), then the extra columns (last).
    Both feature sets end in params, so it is the column before the extra ones."""
    params = X[:, X.shape[1] - n_extra - 1]
    cols = [np.log(np.maximum(params, 1.0))]
    cols += [X[:, X.shape[1] - n_extra + i] for i in range(n_extra)]
    return np.column_stack(cols)


def fit_baseline(X: np.ndarray, y: np.ndarray, n_extra: int) -> list[float]:
    """Least squares of y on the line's columns (standardized, a tiny ridge); the intercept
    first, then one coefficient per column in raw units."""
    Z = baseline_design(X, n_extra)
    mu, sd = Z.mean(0), Z.std(0)
    sd[sd == 0] = 1.0
    S = (Z - mu) / sd
    beta = np.linalg.solve(S.T @ S + RIDGE * len(S) * np.eye(S.shape[1]), S.T @ (y - y.mean()))
    coef = beta / sd
    return [float(y.mean() - mu @ coef), *map(float, coef)]


@dataclass(frozen=True)
class ResidualOfLine:
    """The "residual" target: accuracy minus the line (`fit_baseline`), fitted on each fit's
    rows, so the trees only learn what the line misses."""

    coef: list[float]
    n_extra: int

    def line(self, X: np.ndarray) -> np.ndarray:
        return self.coef[0] + baseline_design(X, self.n_extra) @ np.asarray(self.coef[1:])

    def forward(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y - self.line(X)

    def inverse(self, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return raw + self.line(X)


def target_fit(target: str, n_extra: int) -> TargetFit:
    if target == "accuracy":
        return identity_target
    return lambda X, y: ResidualOfLine(fit_baseline(X, y, n_extra), n_extra)


@dataclass
class SmallDataEstimator(Estimator):
    """The estimator for a few noisy rows: the rounds picked by CV from `MIN_ROWS` rows (not
    50: trees fitted to seed noise cost ranking), leaves kept at `min_child_samples` rows (at
    most a quarter of the fit's; the generic estimator shrinks a leaf to a tenth of the rows,
    which suits latency, with little noise, but here a leaf of one row learns a seed's noise).
    With `grow` False it fits the target alone: one tree of one leaf, which cannot split (the
    line, or the mean under the "accuracy" target), in the same file format."""

    cv_min_rows: int = MIN_ROWS
    grow: bool = True

    def params(self, n: int) -> dict:
        params = super().params(n)
        least = max(1, min(self.settings.min_child_samples, n // 4))
        params["min_data_in_leaf"] = least if self.grow else n
        return params

    def cv_rounds(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> int:
        return super().cv_rounds(X, y, weights) if self.grow else 1


def _tau(y: np.ndarray, predicted: np.ndarray) -> float:
    """Kendall tau, -1 where the prediction ranks nothing (a constant: NaN)."""
    tau = ranking_metrics(y, predicted)["kendall_tau"]
    return tau if np.isfinite(tau) else -1.0


def ranking_metrics(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Kendall tau and Spearman rho of the ranking, and the mean absolute error in accuracy
    points (percent). A constant prediction ranks nothing: its tau is NaN."""
    import warnings

    from scipy.stats import kendalltau, spearmanr

    y, p = np.asarray(measured, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    with warnings.catch_warnings():
        # Constant input is answered with NaN, which callers handle; scipy's warning about
        # it would reach the user's terminal.
        warnings.simplefilter("ignore")
        tau, rho = kendalltau(y, p).statistic, spearmanr(y, p).statistic
    return {
        "kendall_tau": float(tau),
        "spearman": float(rho),
        "mae_points": float(100 * np.mean(np.abs(p - y))),
    }


@dataclass
class AccuracyPredictor:
    scope: AccuracyScope
    settings: AccuracySettings = field(default_factory=AccuracySettings)
    # The names of the caller's extra columns it was fitted with (a one-shot score, ...):
    # every prediction needs them, in any order.
    extra: tuple[str, ...] = ()
    booster: lgb.Booster | None = None
    baseline_coef: list[float] | None = None
    rounds: int | None = None
    # Quantiles of measured - predicted, out of fold (accuracy as a fraction): the spread.
    spread: tuple[float, float] | None = None
    metrics: dict = field(default_factory=dict)
    # Of the last fit, not saved: each row's out-of-fold prediction, and the fold models
    # that made them (their disagreement is `uncertainty`).
    oof: np.ndarray | None = field(default=None, repr=False, compare=False)
    fold_models: list[FittedModel] = field(default_factory=list, repr=False, compare=False)

    @property
    def feature_names(self) -> list[str]:
        return [*FEATURE_SETS[self.settings.features], *self.extra]

    def features(self, cfgs: Sequence[SubnetConfig], extra: Extra = None) -> np.ndarray:
        """The subnets' features at the scope's sequence length, then the extra columns."""
        columns = [FEATURES.index(f) for f in FEATURE_SETS[self.settings.features]]
        X = feature_matrix(cfgs, self.scope.seq_len)[:, columns]
        given = dict(extra or {})
        if set(given) != set(self.extra):
            raise ValueError(
                f"extra columns {sorted(given)} given, the predictor has {sorted(self.extra)}"
            )
        cols = [np.asarray(given[name], dtype=np.float64) for name in self.extra]
        for name, col in zip(self.extra, cols, strict=True):
            if col.shape != (len(cfgs),) or not np.all(np.isfinite(col)):
                raise ValueError(f"extra column {name!r}: one finite number a subnet needed")
        return np.column_stack([X, *cols]) if cols else X

    # -- fitting -------------------------------------------------------------------------
    def estimator(self, grow: bool = True) -> Estimator:
        s = self.settings
        target = target_fit(s.target, len(self.extra))
        return SmallDataEstimator(s, self.feature_names, target, grow=grow)

    def fit(
        self,
        cfgs: Sequence[SubnetConfig],
        accuracies: Sequence[float],
        extra: Extra = None,
        n_seeds: Sequence[int] | None = None,
    ) -> AccuracyPredictor:
        """Fit on each subnet's mean dev accuracy over its `n_seeds` seeds (default one
        each); `extra` gives the caller's named columns, one number a subnet."""
        names = tuple(extra or {})
        if set(names) & {*FEATURES, LOG_PARAMS}:
            raise ValueError(f"extra columns {list(names)} reuse a feature's name")
        self.extra = names
        X, y = self.features(cfgs, extra), np.asarray(accuracies, dtype=np.float64)
        if len(X) < MIN_ROWS or y.shape != (len(X),):
            raise ValueError(
                f"need at least {MIN_ROWS} fine-tuned subnets, one accuracy each; got {len(X)}"
            )
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError("accuracies must be fractions in [0, 1]")
        seeds = np.ones(len(y)) if n_seeds is None else np.asarray(n_seeds, dtype=np.float64)
        if seeds.shape != y.shape or seeds.min() < 1:
            raise ValueError("n_seeds: one count (>= 1) a subnet")
        weights = seeds / seeds.mean() if self.settings.weight_by_seeds else None
        fitted, choice = self._fit_choosing_trees(X, y, weights)
        assert fitted.model is not None and fitted.oof is not None
        self.booster, self.rounds = fitted.model.booster, fitted.rounds
        transform = fitted.model.transform
        self.baseline_coef = transform.coef if isinstance(transform, ResidualOfLine) else None
        self.oof, self.fold_models = fitted.oof, fitted.fold_models
        self.spread = fitted.oof_spread(y, relative=False)
        params = X[:, len(self.feature_names) - len(names) - 1]
        self.metrics = {
            **{f"oof_{k}": v for k, v in ranking_metrics(y, fitted.oof).items()},
            # What ranking by size alone gives on the same rows: the predictor's to beat.
            "params_kendall_tau": ranking_metrics(y, params)["kendall_tau"],
            "rows": len(y),
            "seeds": int(seeds.sum()),
            "trees": choice,
            "label": "mean dev accuracy over seeds",
        }
        return self

    def _fit_choosing_trees(
        self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None
    ) -> tuple[Estimator, dict]:
        """The target alone (the line) or the target and trees on it (`settings.trees`);
        "auto" keeps the trees only where their out-of-fold Kendall tau beats the line's by
        more than `trees_margin` (0.02). Ranking, not squared error, decides: where accuracy follows
        size alone, trees that bend the line to its curvature lower the error and misrank
        subnets the line ranks right. The margin because the two taus are noisy, and the line
        is the simpler: without it the predictor ranked such accuracies at 0.994-0.998 where
        params rank them at 1.0, with it at 0.996-1.000 (trees kept in 0-5 % of the fits), at
        no cost where the trees matter (benchmarks/results/accuracy_predictor.md). Choosing
        the better of two out-of-fold figures flatters the one chosen a little: two
        candidates, not many."""
        mode = self.settings.trees
        fits = {}
        for grow in (False, True):
            if mode == "auto" or (mode == "always") == grow:
                fits[grow] = self.estimator(grow).fit(X, y, weights)
        tau = {grow: _tau(y, f.oof) for grow, f in fits.items()}
        if len(fits) == 1:
            (grow,) = fits
        else:
            grow = tau[True] > tau[False] + self.settings.trees_margin
        choice: dict = {"mode": mode, "used": grow}
        choice.update({f"oof_kendall_tau_{'trees' if g else 'line'}": t for g, t in tau.items()})
        return fits[grow], choice

    # -- predicting ----------------------------------------------------------------------
    def _transform(self) -> Transform:
        if self.settings.target == "residual":
            assert self.baseline_coef is not None
            return ResidualOfLine(self.baseline_coef, len(self.extra))
        return Identity()

    def predict(self, cfgs: Sequence[SubnetConfig], extra: Extra = None) -> np.ndarray:
        """Each subnet's predicted mean dev accuracy (a fraction, held in [0, 1])."""
        if self.booster is None:
            raise ValueError("not fitted: call fit first")
        X = self.features(cfgs, extra)
        return np.clip(FittedModel(self.booster, self._transform()).predict(X), 0.0, 1.0)

    def predict_interval(
        self, cfgs: Sequence[SubnetConfig], extra: Extra = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A (low, high) band holding the measured accuracy with the spread quantiles'
        probability (10-90 %: 80 %), on data like the training rows: the prediction plus the
        out-of-fold residuals' quantiles."""
        predicted = self.predict(cfgs, extra)
        lo, hi = self.spread or (0.0, 0.0)
        return np.clip(predicted + min(lo, 0.0), 0, 1), np.clip(predicted + max(hi, 0.0), 0, 1)

    def uncertainty(self, cfgs: Sequence[SubnetConfig], extra: Extra = None) -> np.ndarray:
        """For each subnet, the standard deviation of the fold models' predicted accuracies:
        where models fitted on different rows disagree, a fine-tune teaches most. The fold
        models are not saved: this needs a fit in this process."""
        if len(self.fold_models) < 2:
            raise ValueError("uncertainty needs the fold models of a fit (they are not saved)")
        return fold_disagreement(self.fold_models, self.features(cfgs, extra))

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """The folder `load` reads: model.txt and predictor.json (kind "accuracy")."""
        if self.booster is None:
            raise ValueError("not fitted: nothing to save")
        meta = AccuracyMeta(
            format=FORMAT,
            features=self.feature_names,
            settings=self.settings,
            metrics=self.metrics,
            rounds=self.rounds,
            scope=self.scope,
            extra=list(self.extra),
            baseline_columns=[LOG_PARAMS, *self.extra],
            baseline_coef=self.baseline_coef,
            spread=list(self.spread) if self.spread else None,
        )
        return write_folder(folder, self.booster, meta)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        task_sha256: str | None = None,
        protocol_hash: str | None = None,
        space: str | None = None,
        weights_sha256: str | None = None,
    ) -> AccuracyPredictor:
        """A folder written by `save`, every field checked before LightGBM reads anything: a
        damaged folder, one of another kind, or one fitted for another task, protocol, space
        or supernet than those given is one line naming the file and the field."""
        folder = predictor_folder(folder, "`AccuracyPredictor.save`")
        meta_path = folder / META_FILE
        meta = read_meta(
            meta_path, AccuracyMeta, lambda m: [*FEATURE_SETS[m.settings.features], *m.extra]
        )
        _check_meta(meta, str(meta_path))
        for name, want in (
            ("task_sha256", task_sha256),
            ("protocol_hash", protocol_hash),
            ("space", space),
            ("weights_sha256", weights_sha256),
        ):
            have = getattr(meta.scope, name)
            if want is not None and have != want:
                raise InputError(
                    str(meta_path), f"scope.{name}", f"fitted for {have!r}, not {want!r}"
                )
        booster = read_booster(folder / MODEL_FILE, meta, meta_path)
        spread = meta.spread
        return cls(
            meta.scope,
            meta.settings,
            tuple(meta.extra),
            booster,
            meta.baseline_coef,
            meta.rounds,
            (spread[0], spread[1]) if spread else None,
            meta.metrics.model_dump(),
        )


def _check_meta(meta: AccuracyMeta, where: str) -> None:
    """What the schema cannot say of an accuracy predictor.json."""
    names = meta.extra
    if len(set(names)) != len(names) or set(names) & {*FEATURES, LOG_PARAMS}:
        raise InputError(where, "extra", f"names repeated or a feature's: {short(names)}")
    if meta.baseline_columns != [LOG_PARAMS, *names]:
        raise InputError(where, "baseline_columns", "another line than this bfnas fits")
    coef, want = meta.baseline_coef, len(names) + 2
    if meta.settings.target == "residual" and (coef is None or len(coef) != want):
        got = short(coef)
        raise InputError(
            where, "baseline_coef", f"the residual target needs {want} coefficients, got {got}"
        )
    if meta.spread is not None and meta.spread[0] > meta.spread[1]:
        raise InputError(where, "spread", f"low {meta.spread[0]} is above high {meta.spread[1]}")


def rows_from_store(
    store: AccuracyStore,
    task_sha256: str,
    protocol_hash: str,
    source: WeightsSource,
    space: str,
) -> tuple[list[SubnetConfig], np.ndarray, np.ndarray]:
    """(subnets, mean dev accuracy over their seeds, number of seeds) of the store's current
    'ok' fine-tunes of this task, protocol, starting weights and space; failed and
    superseded ones count in neither. Subnets in the order first fine-tuned."""
    by_key: dict[str, tuple[SubnetConfig, list[float]]] = {}
    for r in store.finetunes(task_sha256, protocol_hash, None, source, statuses=("ok",)):
        if r.space == space and r.accuracy is not None:
            by_key.setdefault(r.subnet_key, (r.arch, []))[1].append(r.accuracy)
    cfgs = [cfg for cfg, _ in by_key.values()]
    mean = np.array([np.mean(a) for _, a in by_key.values()], dtype=np.float64)
    seeds = np.array([len(a) for _, a in by_key.values()], dtype=np.int64)
    return cfgs, mean, seeds
