"""`LatencyPredictor`: LightGBM on subnet features, with a per-prediction spread.

What makes it a latency predictor is here: the features of a subnet at a workload, the
target (by default the ratio of latency to an analytic estimate, `fit_estimate`), a prior
from another device (`latency_priors`), relative errors and a multiplicative band. The
fitting, the out-of-fold spread and the fold models are `estimator.Estimator`'s; the folder
(LightGBM's text model plus predictor.json, never pickled) is `predictor_file`'s.

A model knows the profile (by hash) and space it was fitted for and refuses the others. Its
spread comes from out-of-fold predictions (split conformal), so it is calibrated on data
like the training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
from scipy.optimize import nnls

from bfnas.errors import InputError, short
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.estimator import (
    Estimator,
    FittedModel,
    Identity,
    Log,
    TargetFit,
    Transform,
    fold_disagreement,
    identity_target,
    log_target,
)
from bfnas.search.features import FEATURES, MONOTONE, feature_matrix
from bfnas.search.latency_priors import (
    PRIOR_DIR,
    check_prior,
    check_rescaling,
    fit_rescaling,
    prior_choice,
    rescale,
)
from bfnas.search.predictor_file import (
    FORMAT,
    META_FILE,
    MODEL_FILE,
    LatencyMeta,
    PredictorScope,
    PredictorSettings,
    PriorRef,
    predictor_folder,
    read_booster,
    read_meta,
    write_folder,
)

# Columns of the analytic estimate behind the "ratio" target: a fixed cost, a cost per
# layer, a cost per MAC of each matrix-product class and one per element of each
# element-wise class, fitted non-negative on the training rows.
ESTIMATE_COLUMNS = (
    "layers",
    "macs_qkv",
    "macs_attn",
    "macs_out",
    "macs_ffn",
    "elems_attn_probs",
    "elems_hidden_states",
    "elems_ffn_states",
    "elems_qkv_states",
)


def estimate_design(X: np.ndarray) -> np.ndarray:
    """The analytic estimate's design matrix: a constant and its columns of the features."""
    cols = [FEATURES.index(c) for c in ESTIMATE_COLUMNS]
    return np.column_stack([np.ones(len(X)), X[:, cols]])


def fit_estimate(
    X: np.ndarray, ms: np.ndarray, prior: LatencyPredictor | None = None
) -> list[float]:
    """The estimate's coefficients, fitted for relative error: non-negative per-op costs of
    the analytic estimate, or with a prior (another profile's predictor) the rescaling
    `exp(c0) * prior ** c1` of its predictions, fitted on logs."""
    if prior is not None:
        return fit_rescaling(prior.predict(X), ms)
    design = estimate_design(X)
    scale = np.abs(design).max(0)
    scale[scale == 0] = 1
    # Relative error is what matters: weight each row by 1/latency.
    coef, _ = nnls(design / scale / ms[:, None], np.ones(len(ms)))
    if not np.any(coef):
        coef[0] = float(np.median(ms))
    return list(coef / scale)


def estimate(
    X: np.ndarray, coef: Sequence[float], prior: LatencyPredictor | None = None
) -> np.ndarray:
    if prior is not None:
        return rescale(prior.predict(X), coef)
    return estimate_design(X) @ np.asarray(coef)


@dataclass(frozen=True)
class RatioToEstimate:
    """The "ratio" target: latency over the estimate (`estimate`), fitted on each fit's
    rows, so the trees only learn what the arithmetic misses."""

    coef: list[float]
    prior: LatencyPredictor | None = None

    def forward(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y / estimate(X, self.coef, self.prior)

    def inverse(self, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return raw * estimate(X, self.coef, self.prior)


def target_fit(target: str, prior: LatencyPredictor | None = None) -> TargetFit:
    """What the estimator fits for a target: ms as they are, their log, or their ratio to
    the estimate fitted on the same rows."""
    if target == "ms":
        return identity_target
    if target == "log":
        return log_target
    return lambda X, ms: RatioToEstimate(fit_estimate(X, ms, prior), prior)


@dataclass
class LatencyPredictor:
    scope: PredictorScope
    settings: PredictorSettings = field(default_factory=PredictorSettings)
    estimate_coef: list[float] | None = None
    booster: lgb.Booster | None = None
    metrics: dict = field(default_factory=dict)
    rounds: int | None = None
    # Quantiles of measured / predicted on out-of-fold predictions: the spread's factors.
    spread: tuple[float, float] | None = None
    # Of the last fit, not saved: each training row's out-of-fold prediction (what an
    # estimate of held-out accuracy is made from) and the fold models that made them (an
    # ensemble whose disagreement says where the predictor is unsure).
    oof_ms: np.ndarray | None = field(default=None, repr=False, compare=False)
    fold_models: list[FittedModel] = field(default_factory=list, repr=False, compare=False)
    # Another profile's predictor in the same space and workload: the estimate the trees
    # correct is its prediction rescaled (`fit_estimate`), so a new device needs few rows.
    prior: LatencyPredictor | None = None
    # Whether the last fit kept the prior it was given, and the out-of-fold errors that
    # decided (`latency_priors.prior_choice`); saved.
    prior_choice: dict | None = None
    # The store's usual anchor times its rows were normalized by (`LatencyRows.anchor_ms`):
    # another store of the profile may run them at another speed (`anchor_shift`); saved.
    anchor_ms: dict[str, float] = field(default_factory=dict)

    def features(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        return feature_matrix(cfgs, self.scope.seq_len, self.scope.batch)

    # -- fitting -------------------------------------------------------------------------
    def estimator(self) -> Estimator:
        """The estimator this predictor's settings fit: the features' names, the target, and
        monotone constraints on the size features (for latency itself, not for its ratio)."""
        s = self.settings
        monotone = [MONOTONE[f] for f in FEATURES] if s.monotone and s.target != "ratio" else None
        return Estimator(s, FEATURES, target_fit(s.target, self.prior), monotone)

    def _transform(self) -> Transform:
        """The fitted target's way back to ms, rebuilt from what is saved."""
        if self.settings.target == "ratio":
            assert self.estimate_coef is not None
            return RatioToEstimate(self.estimate_coef, self.prior)
        return Identity() if self.settings.target == "ms" else Log()

    def fit(self, cfgs: Sequence[SubnetConfig], latency_ms: Sequence[float]) -> LatencyPredictor:
        X, ms = self.features(cfgs), np.asarray(latency_ms, dtype=np.float64)
        # A prior's rescaling has two coefficients; from scratch the estimate has ten.
        least = 5 if self.prior is not None else 10
        if len(X) < least:
            raise ValueError(f"need at least {least} measured subnets to fit, got {len(X)}")
        if np.any(ms <= 0):
            raise ValueError("latencies must be positive")
        if self.prior is not None:
            check_prior(self.prior.scope, self.scope.space, self.scope.seq_len, self.scope.batch)
            if self.settings.target != "ratio":
                raise InputError.bad_setting("target", "a prior is rescaled by the ratio target")
        fitted = self.estimator().fit(X, ms)
        assert fitted.model is not None
        self.rounds, self.booster = fitted.rounds, fitted.model.booster
        transform = fitted.model.transform
        self.estimate_coef = transform.coef if isinstance(transform, RatioToEstimate) else None
        self.oof_ms, self.fold_models = fitted.oof, fitted.fold_models
        self.spread = fitted.oof_spread(ms, relative=True)
        if self.prior is not None and len(X) >= 10:
            self._keep_prior_if_better(cfgs, ms)
        return self

    def _keep_prior_if_better(self, cfgs: Sequence[SubnetConfig], ms: np.ndarray) -> None:
        """Keep the prior only where it predicts the new rows better out of fold than a fit
        from scratch does (`latency_priors.prior_choice`); else become that fit."""
        assert self.prior is not None and self.oof_ms is not None
        scratch = LatencyPredictor(self.scope, self.settings).fit(cfgs, ms)
        assert scratch.oof_ms is not None
        self.prior_choice = prior_choice(
            self.prior.scope.profile_hash, ms, self.oof_ms, scratch.oof_ms
        )
        if not self.prior_choice["used"]:
            for name in ("estimate_coef", "booster", "rounds", "spread", "oof_ms", "fold_models"):
                setattr(self, name, getattr(scratch, name))
            self.prior = None

    def fold_disagreement(self, cfgs: Sequence[SubnetConfig] | np.ndarray) -> np.ndarray:
        """For each config, the standard deviation of the fold models' log predictions: how
        much models fitted on different parts of the data disagree about it (0 before a fit)."""
        X = cfgs if isinstance(cfgs, np.ndarray) else self.features(cfgs)
        return fold_disagreement(self.fold_models, X, log=True)

    # -- predicting ----------------------------------------------------------------------
    def predict(self, cfgs: Sequence[SubnetConfig] | np.ndarray) -> np.ndarray:
        """Latency in ms for each config (or each row of a feature matrix)."""
        X = cfgs if isinstance(cfgs, np.ndarray) else self.features(cfgs)
        if self.booster is None:
            raise ValueError("not fitted: call fit first")
        return FittedModel(self.booster, self._transform()).predict(X)

    def predict_interval(
        self, cfgs: Sequence[SubnetConfig] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A (low, high) band in ms holding the measured latency with the spread quantiles'
        probability (10-90 %: 80 %); search can keep a candidate only if `high` fits."""
        return self.band(self.predict(cfgs))

    def band(self, predicted_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) band around predictions already made."""
        lo, hi = self.spread or (1.0, 1.0)
        return predicted_ms * min(lo, 1.0), predicted_ms * max(hi, 1.0)

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """The folder `load` reads: model.txt, predictor.json and the prior in `prior/`."""
        if self.booster is None:
            raise ValueError("not fitted: nothing to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.prior is not None:  # first: a folder whose predictor.json names it has it
            self.prior.save(folder / PRIOR_DIR)
        meta = LatencyMeta(
            format=FORMAT,
            features=list(FEATURES),
            settings=self.settings,
            metrics=self.metrics,
            rounds=self.rounds,
            scope=self.scope,
            estimate_columns=list(ESTIMATE_COLUMNS),
            estimate_coef=None if self.estimate_coef is None else list(self.estimate_coef),
            spread=list(self.spread) if self.spread else None,
            prior=PriorRef(profile_hash=self.prior.scope.profile_hash) if self.prior else None,
            prior_choice=self.prior_choice,
            anchor_ms=self.anchor_ms,
        )
        return write_folder(folder, self.booster, meta)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        profile_hash: str | None = None,
        space: str | None = None,
        allow_prior: bool = True,
    ) -> LatencyPredictor:
        """A folder written by `save`. Every field of predictor.json is checked against a
        schema, and model.txt against it, before LightGBM reads anything: a damaged folder
        is one line naming the file and the field."""
        folder = predictor_folder(folder, "`bfnas predictor fit` or `LatencyPredictor.save`")
        meta_path = folder / META_FILE
        meta = read_meta(meta_path, LatencyMeta, FEATURES)
        _check_meta(meta, str(meta_path))
        scope = meta.scope
        if profile_hash and scope.profile_hash != profile_hash:
            raise InputError(
                str(meta_path),
                "scope.profile_hash",
                f"fitted for profile {scope.profile_hash}, not {profile_hash}",
            )
        if space and scope.space != space:
            raise InputError(
                str(meta_path), "scope.space", f"fitted for space {scope.space!r}, not {space!r}"
            )
        booster = read_booster(folder / MODEL_FILE, meta, meta_path)
        prior = None
        if meta.prior is not None:
            if not allow_prior:
                raise InputError(
                    str(meta_path), "prior", "fitted on a prior itself: a prior has none"
                )
            prior = cls.load(folder / PRIOR_DIR, allow_prior=False)
            if prior.scope.profile_hash != meta.prior.profile_hash:
                raise InputError(
                    str(meta_path), "prior.profile_hash", f"not the hash of {PRIOR_DIR}/'s model"
                )
            check_prior(prior.scope, scope.space, scope.seq_len, scope.batch, str(meta_path))
        spread = meta.spread
        return cls(
            scope,
            meta.settings,
            meta.estimate_coef,
            booster,
            meta.metrics.model_dump(),
            meta.rounds,
            (spread[0], spread[1]) if spread else None,
            prior=prior,
            prior_choice=meta.prior_choice.model_dump() if meta.prior_choice else None,
            anchor_ms=dict(meta.anchor_ms),
        )


def _check_meta(meta: LatencyMeta, where: str) -> None:
    """What the schema cannot say of a latency predictor.json: the estimate is this bfnas's,
    with as many coefficients as its target needs, and they are ones a fit could give."""
    if meta.estimate_columns != list(ESTIMATE_COLUMNS):
        raise InputError(
            where, "estimate_columns", "another analytic estimate than this bfnas computes"
        )
    coef = meta.estimate_coef
    # The analytic estimate's per-op costs; with a prior, its rescaling (log scale, slope).
    want = 2 if meta.prior is not None else len(ESTIMATE_COLUMNS) + 1
    if meta.settings.target == "ratio" and (coef is None or len(coef) != want):
        raise InputError(
            where, "estimate_coef", f"the ratio target needs {want} coefficients, got {short(coef)}"
        )
    if meta.prior is None and coef is not None and min(coef) < 0:
        i = int(np.argmin(coef))
        raise InputError(
            where, f"estimate_coef[{i}]", f"a cost cannot be negative (got {short(coef[i])})"
        )
    if meta.prior is not None and coef is not None:
        check_rescaling(coef, where)
    if meta.spread is not None and meta.spread[0] > meta.spread[1]:
        raise InputError(where, "spread", f"low {meta.spread[0]} is above high {meta.spread[1]}")


def load_prior(folder: str | Path, space: str, seq_len: int, batch: int) -> LatencyPredictor:
    """`--prior`: a saved predictor of another profile, checked for this space and workload.
    A damaged folder, or one of another space or workload, is one line naming its file. Here
    rather than in `latency_priors`, which `LatencyPredictor` builds on: it loads one."""
    prior = LatencyPredictor.load(folder, allow_prior=False)
    check_prior(prior.scope, space, seq_len, batch, str(Path(folder) / META_FILE))
    return prior


def accuracy(measured_ms: Sequence[float], predicted_ms: Sequence[float]) -> dict[str, float]:
    """RMSE (ms), MAPE, shares within +-5 % and +-10 %, and Kendall's tau of the ranking."""
    from scipy.stats import kendalltau

    y, p = np.asarray(measured_ms, dtype=np.float64), np.asarray(predicted_ms, dtype=np.float64)
    rel = np.abs(p - y) / y
    return {
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape": float(rel.mean()),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "kendall_tau": float(kendalltau(y, p).statistic),
    }
