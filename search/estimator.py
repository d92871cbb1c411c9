"""`Estimator`: a LightGBM regressor over a feature matrix, and its booster as a text file.

What every bfnas predictor shares (the latency predictor today, an accuracy predictor next):
the boosting settings, the number of rounds picked by cross-validation, out-of-fold
predictions and the spread made from them, the fold models' disagreement, and reading a
saved booster back without trusting it. It knows nothing of what is predicted: the caller
gives the features' names and a target transform (what LightGBM learns in place of y, fitted
on each fit's rows), and says whether its errors are relative (latency) or absolute.

A booster is saved as LightGBM's own text model, never pickled; reading one back checks the
text before LightGBM's parser sees it (`check_model_text`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bfnas.errors import InputError, short
from bfnas.models.outputs import atomic_path
from bfnas.search.folds import out_of_fold_predictions

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
# Fewer rows leave a fold with too little to fit on (two folds of two).
MIN_ROWS = 4
# Below this many rows, 5-fold CV is too noisy to choose the number of rounds by.
CV_MIN_ROWS = 50

_Init = TypeVar("_Init", bound=Callable[..., None])


def python_init(init: _Init) -> _Init:
    """Mark a settings class's own `__init__` as pydantic marks its base one. Pydantic calls a
    model's own `__init__` for every nested instance it validates, with the raw values of the
    file, in Python mode: a JSON array would be refused as a tuple, and a file's error would
    be reported as a setting. Marked, the `__init__` serves calls from Python only, and a file
    is validated by the schema alone (tests/test_estimator.py holds both to it)."""
    init.__pydantic_base_init__ = True  # type: ignore[attr-defined]
    return init


class Settings(BaseModel):
    """Settings built in Python and stored in a predictor folder, one schema for both: strict
    ("0.5" is not a number and true is not a count), unknown fields refused, frozen. Built
    from Python, a refused value is an `InputError` naming the setting (the CLI names its
    flag); validated from a file, a `ValidationError` that the file's reader reports with the
    file and the field."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @python_init
    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = err["loc"] or ("settings",)
            rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
            reason = {"extra_forbidden": "unknown setting"}.get(err["type"], err["msg"])
            if err["type"] != "extra_forbidden":
                reason = f"{reason} (got {short(err.get('input'))})"
            raise InputError.bad_setting(str(loc[0]), reason, rest.lstrip(".") or None) from None


class EstimatorSettings(Settings):
    n_estimators: int = Field(default=300, ge=1)  # at most; `cv_rounds` picks fewer
    cv_rounds: bool = True
    learning_rate: Positive = 0.05
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int = Field(default=5, ge=1)
    # The out-of-fold quantiles a spread is made of (10-90 %: about 80 % of new rows inside).
    spread_quantiles: tuple[Fraction, Fraction] = (0.1, 0.9)
    seed: int = 0


# -- what LightGBM learns ------------------------------------------------------------------
class Transform(Protocol):
    """What LightGBM learns in place of the caller's y (`forward`), and back (`inverse`).
    Fitted on each fit's rows, every fold its own: a transform may be learned from them, as
    the latency predictor's ratio to an analytic estimate is."""

    def forward(self, X: np.ndarray, y: np.ndarray) -> np.ndarray: ...

    def inverse(self, X: np.ndarray, raw: np.ndarray) -> np.ndarray: ...


# (features, y) of the rows of one fit -> the transform fitted on them.
TargetFit = Callable[[np.ndarray, np.ndarray], Transform]


class Identity:
    """y itself."""

    def forward(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y

    def inverse(self, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return raw


class Log:
    """log y: errors become relative ones, and a prediction is positive."""

    def forward(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.log(y)

    def inverse(self, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return np.exp(raw)


def identity_target(X: np.ndarray, y: np.ndarray) -> Transform:
    return Identity()


def log_target(X: np.ndarray, y: np.ndarray) -> Transform:
    return Log()


@dataclass(frozen=True)
class FittedModel:
    """One booster and the transform its predictions go back through."""

    booster: lgb.Booster
    transform: Transform

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.transform.inverse(X, self.booster.predict(X, num_threads=1))

    def save(self, path: str | Path) -> str:
        """The booster as LightGBM's text model at `path`; its sha256, for `load` to check.
        The transform is the caller's to save (what it was fitted to: coefficients, ...)."""
        return write_booster(self.booster, Path(path))

    @classmethod
    def load(cls, path: str | Path, transform: Transform, sha256: str | None = None) -> FittedModel:
        return cls(load_booster(Path(path), sha256), transform)


# -- fitting -------------------------------------------------------------------------------
@dataclass
class Estimator:
    """LightGBM on a feature matrix: `fit` picks the rounds by 5-fold CV, fits on every row,
    then refits on 5 folds so each row has a prediction by a model that did not see it (the
    spread, `oof_spread`) and the fold models can say where they disagree."""

    settings: EstimatorSettings = field(default_factory=EstimatorSettings)
    # The columns' names, saved in the booster and checked when it is read back.
    feature_names: Sequence[str] | None = None
    target: TargetFit = identity_target
    # LightGBM's monotone constraint per feature (+1, 0, -1), or none.
    monotone: Sequence[int] | None = None
    # From how many rows `cv_rounds` picks the rounds (below: `n_estimators`). A predictor of
    # few, noisy rows (accuracy) picks them by CV from fewer: trees on noise cost it ranking.
    cv_min_rows: int = CV_MIN_ROWS
    # Of the last fit: the model of all rows, its rounds, each row's out-of-fold prediction
    # and the fold models that made them.
    model: FittedModel | None = field(default=None, repr=False)
    rounds: int | None = None
    oof: np.ndarray | None = field(default=None, repr=False, compare=False)
    fold_models: list[FittedModel] = field(default_factory=list, repr=False, compare=False)

    def params(self, n: int) -> dict:
        """LightGBM's parameters for a fit on n rows: deterministic and single-threaded, so a
        seed gives the same model on every machine."""
        s = self.settings
        params = {
            "objective": "regression",
            "learning_rate": s.learning_rate,
            "num_leaves": s.num_leaves,
            # A leaf of 5 rows is most of a 30-row fit: smaller with fewer rows.
            "min_data_in_leaf": min(s.min_child_samples, max(n // 10, 1)),
            "min_data_in_bin": 1,
            "seed": s.seed,
            "deterministic": True,
            "num_threads": 1,
            "verbose": -1,
        }
        if self.monotone is not None:
            params["monotone_constraints"] = list(self.monotone)
            params["monotone_constraints_method"] = "advanced"
        return params

    def _dataset(self, X: np.ndarray, raw: np.ndarray, weights: np.ndarray | None) -> lgb.Dataset:
        names = list(self.feature_names) if self.feature_names is not None else "auto"
        return lgb.Dataset(
            X, raw, weight=weights, feature_name=names, params={"min_data_in_bin": 1, "verbose": -1}
        )

    def fit_one(
        self, X: np.ndarray, y: np.ndarray, rounds: int, weights: np.ndarray | None = None
    ) -> FittedModel:
        """One model of `rounds` trees on these rows, its transform fitted on them too."""
        transform = self.target(X, y)
        data = self._dataset(X, transform.forward(X, y), weights)
        return FittedModel(lgb.train(self.params(len(X)), data, rounds), transform)

    def cv_rounds(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> int:
        """How many rounds the data support (at most `n_estimators`): 5-fold CV with early
        stopping. With 100 rows the correction on top of the latency predictor's analytic
        estimate overfits after a few dozen; with thousands it keeps gaining."""
        s = self.settings
        if not s.cv_rounds or len(X) < self.cv_min_rows:
            return s.n_estimators
        transform = self.target(X, y)
        cv = lgb.cv(
            self.params(len(X)),
            self._dataset(X, transform.forward(X, y), weights),
            s.n_estimators,
            nfold=5,
            stratified=False,
            seed=s.seed,
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        return max(len(next(iter(cv.values()))), 1)

    def fit(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Estimator:
        """Fit on every row (rounds by CV), then the out-of-fold predictions: 5 folds (fewer
        below 10 rows), same settings and rounds, each row predicted by the model without it.
        `weights` weigh the rows in every fit."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(X) < MIN_ROWS or len(X) != len(y):
            raise ValueError(f"need at least {MIN_ROWS} rows and one y a row, got {X.shape}")
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.rounds = self.cv_rounds(X, y, w)
        self.model = self.fit_one(X, y, self.rounds, w)
        self.fold_models = []

        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            part = None if w is None else w[train]
            self.fold_models.append(self.fit_one(X[train], y[train], self.rounds, part))
            return self.fold_models[-1].predict(X[test])

        # Training rows in row order: the order the latency predictor's published figures
        # came from (`out_of_fold_predictions` says why the order matters to the last bits).
        self.oof, _ = out_of_fold_predictions(
            len(X), min(5, len(X) // 2), self.settings.seed, fit_predict, train_in_row_order=True
        )
        return self

    # -- predicting --------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise ValueError("not fitted: call fit first")
        return self.model.predict(X)

    def oof_spread(self, y: np.ndarray, relative: bool = True) -> tuple[float, float]:
        """The spread quantiles of the last fit's out-of-fold residuals (`residual_quantiles`)."""
        if self.oof is None:
            raise ValueError("not fitted: call fit first")
        return residual_quantiles(y, self.oof, self.settings.spread_quantiles, relative)

    def fold_disagreement(self, X: np.ndarray, log: bool = False) -> np.ndarray:
        return fold_disagreement(self.fold_models, X, log)


def residual_quantiles(
    y: np.ndarray, predicted: np.ndarray, quantiles: Sequence[float], relative: bool = True
) -> tuple[float, float]:
    """Split-conformal bounds: the quantiles of y / predicted (`relative`: a band is the
    prediction times them) or of y - predicted (the prediction plus them). From out-of-fold
    predictions they are calibrated on data like the training rows; they say nothing of a
    region the data never covered."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    residual = y / np.maximum(p, 1e-9) if relative else y - p
    lo, hi = quantiles
    return float(np.quantile(residual, lo)), float(np.quantile(residual, hi))


def fold_disagreement(
    models: Sequence[FittedModel], X: np.ndarray, log: bool = False
) -> np.ndarray:
    """For each row of X, the standard deviation of the fold models' predictions (of their
    logs with `log`): how much models fitted on different parts of the data disagree about
    it, where new rows would teach most. Zeros without two fold models."""
    if len(models) < 2:
        return np.zeros(len(X))
    predicted = np.array([m.predict(X) for m in models])
    return (np.log(np.maximum(predicted, 1e-12)) if log else predicted).std(0)


# -- the booster as a file ------------------------------------------------------------------
def write_booster(booster: lgb.Booster, path: Path) -> str:
    """LightGBM's text model, written atomically; its sha256, which `load_booster` checks."""
    with atomic_path(path) as tmp:
        booster.save_model(str(tmp))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_booster(
    path: Path, sha256: str | None = None, recorded_in: str = "the recorded sha256"
) -> lgb.Booster:
    """A text model written by `write_booster`, checked before LightGBM's parser reads it:
    against `sha256` where the caller recorded one (`recorded_in` names where, for the
    message), else by `check_model_text`. A damaged file is one line naming it."""
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(where, None, f"cannot read ({exc.strerror or exc})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(
            where, None, f"changed or damaged since it was fitted (its sha256 is not {recorded_in})"
        )
    check_model_text(data, where)
    try:
        with _native_stderr_silenced():
            return lgb.Booster(model_str=data.decode())
    except lgb.basic.LightGBMError as exc:
        raise InputError(
            where, None, f"not a LightGBM model ({short(str(exc).strip(), 200)})"
        ) from None


def check_model_text(data: bytes, where: str) -> None:
    """What LightGBM's C++ parser takes on trust in a text model: a header ending in
    `tree_sizes`, exactly those trees, each with arrays as long as its leaves say and children
    and features in range, then `end of trees`. A file cut short or edited there makes it read
    past its end and kill the process (a segfault, an abort), not raise. A recorded sha256
    catches any change since the fit; this is for files written without one."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InputError(where, None, "not a LightGBM model (not a text file)") from None
    if not text.startswith("tree\n"):
        raise InputError(where, None, "not a LightGBM model (it does not start with 'tree')")
    head, found, _ = text.partition("\nTree=")
    header = _key_values(head)
    for key, want in (("num_class", "1"), ("num_tree_per_iteration", "1")):
        if key not in header:
            raise InputError(where, key, "missing from the header (damaged?)")
        if header[key] != want:
            raise InputError(
                where, key, f"must be {want} (a bfnas regression model), got {short(header[key])}"
            )
    names = header.get("feature_names", "").split()
    if header.get("max_feature_idx") != str(len(names) - 1) or not names:
        raise InputError(where, "max_feature_idx", "does not match feature_names")
    sizes = header.get("tree_sizes", "").split()
    if not found or not sizes or not all(re.fullmatch(r"[1-9][0-9]{0,9}", n) for n in sizes):
        raise InputError(where, "tree_sizes", "missing, or not the sizes of the trees that follow")
    # LightGBM counts bytes from the first "Tree=" line; the text is ASCII when it is its own.
    if len(text) != len(data):
        raise InputError(where, None, "not a LightGBM model (not ASCII text)")
    pos = len(head) + 1
    for i, n in enumerate(map(int, sizes)):
        block = text[pos : pos + n]
        if len(block) < n or not block.startswith(f"Tree={i}\n"):
            raise InputError(
                where, f"Tree={i}", "cut short or damaged (tree_sizes does not match the trees)"
            )
        _check_tree(_key_values(block), len(names), where, f"Tree={i}")
        pos += n
    tail = text[pos:].lstrip("\n")
    if not tail.startswith("end of trees"):
        raise InputError(where, None, "cut short or damaged: no 'end of trees' after the trees")
    if "\nparameters:\n" in tail and "\nend of parameters" not in tail:
        raise InputError(where, None, "cut short or damaged: no 'end of parameters'")


def _key_values(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def _check_tree(tree: dict[str, str], n_features: int, where: str, name: str) -> None:
    def numbers(key: str, count: int, kind: type = float) -> list:
        try:
            values = [kind(v) for v in tree[key].split()]
        except (KeyError, ValueError):
            values = None
        if values is None or len(values) != count:
            what = "integer" if kind is int else "number"
            raise InputError(where, f"{name}.{key}", f"expected {count} {what}{'s' * (count != 1)}")
        return values

    (leaves,) = numbers("num_leaves", 1, int)
    if leaves < 1:
        raise InputError(where, f"{name}.num_leaves", f"must be at least 1, got {leaves}")
    # bfnas fits neither categorical splits nor linear trees: their extra arrays go unchecked.
    if numbers("num_cat", 1, int) != [0]:
        raise InputError(where, f"{name}.num_cat", "must be 0 in a bfnas model")
    if "is_linear" in tree and numbers("is_linear", 1, int) != [0]:
        raise InputError(where, f"{name}.is_linear", "must be 0 in a bfnas model")
    numbers("leaf_value", leaves)
    numbers("shrinkage", 1)
    if leaves == 1:
        return
    for key in ("split_gain", "threshold", "internal_value", "internal_weight", "internal_count"):
        numbers(key, leaves - 1)
    for key in ("leaf_weight", "leaf_count"):
        if key in tree:
            numbers(key, leaves)
    if not all(0 <= f < n_features for f in numbers("split_feature", leaves - 1, int)):
        raise InputError(where, f"{name}.split_feature", f"a feature outside 0-{n_features - 1}")
    if not all(0 <= d < 256 and not d & 1 for d in numbers("decision_type", leaves - 1, int)):
        raise InputError(where, f"{name}.decision_type", "not a numerical split")
    for key in ("left_child", "right_child"):
        # A child >= 0 is an inner node, < 0 is leaf ~child.
        if not all(
            c < leaves - 1 if c >= 0 else ~c < leaves for c in numbers(key, leaves - 1, int)
        ):
            raise InputError(where, f"{name}.{key}", "a child outside the tree")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """LightGBM's C++ core writes its fatal errors to file descriptor 2 itself, then raises
    them: the exception is reported, the raw second line is not."""
    sys.stderr.flush()
    with open(os.devnull, "wb") as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
