"""Training data for the latency predictor, read from a `LatencyStore`, and the ways of
scoring a predictor on it (held-out rows, K-fold cross-validation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.folds import out_of_fold_predictions
from bfnas.search.latency_predictor import LatencyPredictor, accuracy
from bfnas.search.predictor_file import PredictorScope, PredictorSettings

# Only latencies that can be trusted train a predictor: `unstable` and `failed` stay out.
TRUSTED = ("ok", "imported")


@dataclass
class LatencyRows:
    profile: str
    profile_hash: str
    space: str
    seq_len: int
    batch: int
    label: str  # "normalized_ms" (anchor-normalized) or "median_ms"
    cfgs: list[SubnetConfig]
    ms: np.ndarray
    # Per anchor the rows were normalized by, its usual time in this store: what the unit
    # "anchor-normalized ms" means here (another store of the profile can differ).
    anchor_ms: dict[str, float] = field(default_factory=dict)

    @property
    def scope(self) -> PredictorScope:
        return PredictorScope(self.profile_hash, self.space, self.seq_len, self.batch)

    def subset(self, idx: np.ndarray) -> tuple[list[SubnetConfig], np.ndarray]:
        return [self.cfgs[i] for i in idx], self.ms[idx]

    def fit(self, settings: PredictorSettings) -> LatencyPredictor:
        """A latency predictor fitted on every row, knowing its unit (`metrics["label"]`):
        a search verifying with it compares its measurements in that unit, not in raw ms."""
        model = LatencyPredictor(self.scope, settings).fit(self.cfgs, self.ms)
        model.metrics = {**model.metrics, "label": self.label}
        return model


def _resolve_profile(store: LatencyStore, name_or_hash: str, where: str) -> dict:
    found = [p for p in store.profiles() if name_or_hash in (p["name"], p["hash"])]
    if not found:
        known = ", ".join(sorted({p["name"] for p in store.profiles()})) or "none"
        raise InputError(
            where, None, f"no profile {name_or_hash!r} in the store (stored: {known})", setting="hw"
        )
    if len(found) > 1:
        hashes = ", ".join(p["hash"] for p in found)
        raise InputError(
            where,
            None,
            f"{name_or_hash!r} names several profile versions ({hashes}); pass the hash",
            setting="hw",
        )
    return found[0]


def load_rows(store: LatencyStore, hw: str, space: str | None = None) -> LatencyRows:
    """Every trusted sample measurement of one profile (and space) in the store.

    The label is the anchor-normalized latency where every row has one (measured by bfnas
    with an anchor), else the raw median (imported data, or profiles without an anchor)."""
    where = str(store.path)
    prof = _resolve_profile(store, hw, where)
    rows = store.measurements(prof["hash"], statuses=TRUSTED)
    spaces = sorted({r.space for r in rows})
    if space is not None:
        rows = [r for r in rows if r.space == space]
    elif len(spaces) > 1:
        raise InputError(
            where,
            None,
            f"profile {prof['name']} has rows of several spaces ({', '.join(spaces)}); pick one",
            setting="space",
        )
    if not rows:
        raise InputError(
            where,
            "measurements",
            f"no trusted measurements of {prof['name']}" + (f" in space {space}" if space else ""),
        )
    label = "normalized_ms" if all(r.normalized_ms for r in rows) else "median_ms"
    anchor_ms = (
        {r.anchor_key: r.anchor_baseline_ms for r in rows} if label == "normalized_ms" else {}
    )
    resolved = json.loads(prof["json"])
    workload = resolved.get("workload") or {}
    return LatencyRows(
        profile=prof["name"],
        profile_hash=prof["hash"],
        space=rows[0].space,
        seq_len=int(workload.get("seq_len", 128)),
        batch=int(workload.get("batch", 1)),
        label=label,
        cfgs=[r.arch for r in rows],
        ms=np.array([r.latency(label) for r in rows], dtype=np.float64),
        anchor_ms=anchor_ms,
    )


def anchor_shift(fitted_ms: dict[str, float], here_ms: dict[str, float]) -> float:
    """The largest relative difference between the anchors' usual times in a store (`here_ms`)
    and those a predictor was fitted with: its prediction p is about p * (1 + shift) in that
    store's anchor-normalized ms. 0 where they share no anchor."""
    shifts = [here_ms[k] / ms - 1 for k, ms in fitted_ms.items() if k in here_ms]
    return max(shifts, key=abs, default=0.0)


def holdout_split(
    n: int, train_size: int, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if train_size < 10:
        raise InputError.bad_setting("train_size", f"must be at least 10 rows, got {train_size}")
    if test_size < 1:
        raise InputError.bad_setting("test_size", f"must be at least 1 row, got {test_size}")
    if train_size + test_size > n:
        raise InputError.bad_setting(
            "train_size", f"{train_size} + {test_size} rows asked, the store has {n}"
        )
    idx = np.random.default_rng(seed).permutation(n)
    return idx[:train_size], idx[train_size : train_size + test_size]


def check_folds(n: int, folds: int, per_fold: int = 10) -> None:
    """K-fold CV needs `per_fold` rows a fold (with a prior a fit needs fewer: 2)."""
    if folds < 2:
        raise InputError.bad_setting("folds", f"must be at least 2, got {folds}")
    if n < folds * per_fold:
        raise InputError.bad_setting(
            "folds", f"{folds}-fold CV needs at least {folds * per_fold} rows, have {n}"
        )


def out_of_fold(
    rows: LatencyRows,
    settings: PredictorSettings,
    folds: int = 5,
    seed: int = 0,
    on_fold: Callable[[int], None] | None = None,
    prior: LatencyPredictor | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Each row's prediction by the fold model that did not see it, and each fold's metrics."""
    n = len(rows.cfgs)
    check_folds(n, folds, per_fold=2 if prior is not None else 10)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = LatencyPredictor(rows.scope, settings, prior=prior).fit(*rows.subset(train))
        return model.predict(rows.subset(test)[0])

    predicted, parts = out_of_fold_predictions(n, folds, seed, fit_predict, on_fold=on_fold)
    return predicted, [accuracy(rows.ms[test], predicted[test]) for test in parts]


def cross_validate(
    rows: LatencyRows,
    settings: PredictorSettings,
    folds: int = 5,
    seed: int = 0,
    on_fold: Callable[[int], None] | None = None,
    prior: LatencyPredictor | None = None,
) -> dict:
    """K-fold CV: every row predicted once by a model that did not see it; metrics over all
    out-of-fold predictions, plus the spread of each metric across folds."""
    predicted, per_fold = out_of_fold(rows, settings, folds, seed, on_fold, prior)
    metrics = accuracy(rows.ms, predicted)
    metrics["fold_std"] = {k: float(np.std([f[k] for f in per_fold])) for k in per_fold[0]}
    return metrics
