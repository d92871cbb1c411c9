"""Memory and model size beside latency: whether a subnet fits a board or a phone at all.

Every measurement records the worker's peak resident memory while the model is loaded and
run once, above the process's baseline with the runtime imported (`bench.device.memory`),
and the model file's bytes. A search given `max_memory_mb` or `max_size_mb` predicts both
for every candidate, from the same store's trusted rows (`ResourcePredictor`), admits a
candidate only when the top of its predicted band fits, and holds every verified subnet to
the limits as measured.

The predictor is linear in the encoder's parameters, its width and its depth: a file is
its weights (INT8 matrices, float embeddings, per-layer biases and norms), and the memory of
one run its weights and arena plus activations that grow with width. Measured on 79
`minilm-l6` subnets (`benchmarks/resources.py`): out of fold, the size within 0.1 % and the
memory within 5 % for every row, where a LightGBM model of the latency predictor's features
had 72 and 92 % within 5 % (trees cannot extrapolate a straight line past their leaves).

`RESOURCES` is the one place a resource is named: how a store row gives its value, its unit
and the limit that constrains it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.store.latency_row import LatencyRow
from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.estimator import residual_quantiles
from bfnas.search.features import FEATURES, feature_matrix
from bfnas.search.folds import out_of_fold_predictions
from bfnas.search.latency_predictor import accuracy

# A resource predictor is fitted from this many rows that recorded it, at least.
MIN_ROWS = 20


def _memory_mb(result: dict) -> float | None:
    memory = result.get("memory")
    return memory.get("peak_above_baseline_mb") if isinstance(memory, dict) else None


def _size_mb(result: dict) -> float | None:
    size = result.get("model_bytes")
    return size / 1e6 if isinstance(size, int | float) else None


@dataclass(frozen=True)
class Resource:
    """One resource a measurement records: its name, unit, the limit's name and how a
    result's flat object (`MeasurementResult.to_dict`, a stored row's extra statistics)
    gives its value."""

    name: str
    unit: str
    limit: str
    text: str
    value: Callable[[dict], float | None]


RESOURCES: dict[str, Resource] = {
    "memory": Resource(
        "memory",
        "MB",
        "max_memory_mb",
        "peak resident memory above the runtime's baseline",
        _memory_mb,
    ),
    "size": Resource("size", "MB", "max_size_mb", "model file size", _size_mb),
}


@dataclass(frozen=True)
class ResourceLimits:
    """The limits a search holds candidates to beside latency (None: no limit)."""

    max_memory_mb: float | None = None
    max_size_mb: float | None = None

    def __post_init__(self) -> None:
        for name, limit in self.active().items():
            if not limit > 0:
                raise InputError.bad_setting(
                    RESOURCES[name].limit, f"must be positive, got {limit}"
                )

    def active(self) -> dict[str, float]:
        """Resource name -> limit, for the limits that are set."""
        found = {r.name: getattr(self, r.limit) for r in RESOURCES.values()}
        return {name: limit for name, limit in found.items() if limit is not None}

    def active_settings(self) -> dict[str, float]:
        """The limits that are set, by their settings' names (`max_memory_mb`: 200)."""
        return {RESOURCES[name].limit: limit for name, limit in self.active().items()}

    def measured(self, result: MeasurementResult) -> dict[str, float | None]:
        """Every resource's measured value in a result (None: not recorded)."""
        flat = result.to_dict()
        return {name: r.value(flat) for name, r in RESOURCES.items()}

    def fits(self, result: MeasurementResult) -> bool | None:
        """Whether a measured result keeps every active limit; None when one is not recorded."""
        values = self.measured(result)
        checks = [values[name] for name in self.active()]
        if any(v is None for v in checks):
            return None
        return all(v <= limit for v, limit in zip(checks, self.active().values(), strict=True))


# What a resource is linear in (see the module's docstring), and the band's quantiles.
RESOURCE_FEATURES = ("params", "hidden", "layers")
SPREAD_QUANTILES = (0.1, 0.9)


@dataclass
class ResourcePredictor:
    """A least-squares model of one resource, linear in the encoder's parameters, hidden
    width and depth, with its out-of-fold accuracy (5 folds) and the band (split-conformal
    quantiles of measured / predicted) a search's margin uses."""

    resource: Resource
    seq_len: int
    batch: int = 1
    seed: int = 0
    coef: np.ndarray | None = None
    metrics: dict = field(default_factory=dict)
    spread: tuple[float, float] = (1.0, 1.0)

    def _design(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        X = feature_matrix(cfgs, self.seq_len, self.batch)
        columns = [X[:, FEATURES.index(name)] for name in RESOURCE_FEATURES]
        return np.column_stack([np.ones(len(cfgs)), *columns])

    def fit(self, cfgs: Sequence[SubnetConfig], values: np.ndarray) -> ResourcePredictor:
        A, y = self._design(cfgs), np.asarray(values, dtype=np.float64)

        def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            coef, *_ = np.linalg.lstsq(A[train], y[train], rcond=None)
            return A[test] @ coef

        oof, _ = out_of_fold_predictions(len(y), min(5, len(y) // 2), self.seed, fit_predict)
        self.coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        self.metrics = {**accuracy(y, oof), "rows": len(y)}
        self.metrics.pop("rmse_ms")
        self.spread = residual_quantiles(y, oof, SPREAD_QUANTILES)
        return self

    def predict(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        if self.coef is None:
            raise ValueError("not fitted: call fit first")
        return self._design(cfgs) @ self.coef

    def high(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        """The top of each prediction's band: what a candidate is admitted by."""
        return self.predict(cfgs) * max(self.spread[1], 1.0)


def resource_rows(
    rows: Sequence[LatencyRow], resource: Resource
) -> tuple[list[SubnetConfig], np.ndarray]:
    """The store rows (`LatencyStore.measurements`) that recorded `resource`: configs, values."""
    cfgs, values = [], []
    for r in rows:
        value = resource.value(r.extra)
        if value is not None:
            cfgs.append(r.arch)
            values.append(value)
    return cfgs, np.asarray(values, dtype=np.float64)


def fit_resource_predictors(
    rows: Sequence[LatencyRow], limits: ResourceLimits, seq_len: int, batch: int, where: str
) -> dict[str, ResourcePredictor]:
    """A predictor per active limit, from the store's trusted rows; an InputError naming the
    store when too few of them recorded the resource (stored before bfnas measured it)."""
    out = {}
    for name in limits.active():
        resource = RESOURCES[name]
        cfgs, values = resource_rows(rows, resource)
        if len(cfgs) < MIN_ROWS:
            raise InputError(
                where,
                "measurements",
                f"{len(cfgs)} trusted measurements recorded the {resource.text}, a "
                f"{resource.limit} needs at least {MIN_ROWS}: profile more subnets with this "
                "bfnas (measurements stored before it recorded memory and size lack them)",
            )
        out[name] = ResourcePredictor(resource, seq_len, batch).fit(cfgs, values)
    return out


def resource_admission(
    predictors: dict[str, ResourcePredictor], limits: ResourceLimits
) -> Callable[[Sequence[SubnetConfig]], np.ndarray] | None:
    """Which candidates the predicted resources admit (every band's top under its limit), or
    None without limits."""
    active = limits.active()
    if not active:
        return None

    def admit(cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        ok = np.ones(len(cfgs), dtype=bool)
        for name, limit in active.items():
            ok &= predictors[name].high(cfgs) <= limit
        return ok

    return admit
