"""Starting a latency predictor from another profile's (`--prior`): what a prior may be, how
its predictions are rescaled to the new device, and when the fit keeps it.

A prior is another profile's predictor in the same space and workload. The estimate the new
model's trees correct is then the prior's prediction rescaled, `exp(c0) * prior ** c1`
(fitted on logs), so a new device needs few rows. `LatencyPredictor` uses these; loading a
prior from its folder is `latency_predictor.load_prior`, next to the loader it calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bfnas.errors import InputError
from bfnas.search.predictor_file import PredictorScope

# The band the rescaling's slope is held in: another device's latencies rank subnets alike,
# and a few rows must not turn that ranking over.
PRIOR_SLOPE = (0.5, 2.0)
PRIOR_DIR = "prior"  # inside a model folder: the prior it was fitted on, saved with it


def check_prior(
    prior: PredictorScope, space: str, seq_len: int, batch: int, where: str | None = None
) -> None:
    """A prior (its scope) must predict the same space at the same workload: another
    device's latencies of the same subnets, nothing else."""
    where = where or "prior"
    if prior.space != space:
        raise InputError(where, "scope.space", f"a prior of space {prior.space!r}, not {space!r}")
    if (prior.seq_len, prior.batch) != (seq_len, batch):
        raise InputError(
            where,
            "scope.seq_len",
            f"a prior of workload seq_len {prior.seq_len}, batch {prior.batch}, not "
            f"seq_len {seq_len}, batch {batch}",
        )


def fit_rescaling(prior_ms: np.ndarray, ms: np.ndarray) -> list[float]:
    """[c0, c1] of `exp(c0) * prior_ms ** c1`, fitted on logs for relative error; the slope
    held in `PRIOR_SLOPE`, and 1 where too few rows (or all alike) say nothing of it."""
    x, y = np.log(prior_ms), np.log(ms)
    slope = 1.0
    if len(x) >= 3 and np.ptp(x) > 0:
        slope = float(np.clip(np.polyfit(x, y, 1)[0], *PRIOR_SLOPE))
    return [float(np.mean(y - slope * x)), slope]


def rescale(prior_ms: np.ndarray, coef: Sequence[float]) -> np.ndarray:
    """The prior's predictions on the new device: `exp(c0) * prior_ms ** c1`."""
    return np.exp(coef[0] + coef[1] * np.log(prior_ms))


def check_rescaling(coef: Sequence[float], where: str) -> None:
    """A saved rescaling's slope is one `fit_rescaling` could have fitted."""
    if not PRIOR_SLOPE[0] <= coef[1] <= PRIOR_SLOPE[1]:
        raise InputError(
            where, "estimate_coef[1]", f"the prior's slope {coef[1]} is outside {PRIOR_SLOPE}"
        )


def prior_choice(
    prior_hash: str, ms: np.ndarray, oof_with_prior: np.ndarray, oof_from_scratch: np.ndarray
) -> dict:
    """Whether a fit keeps its prior: only where it predicts the new rows better out of fold
    (mean relative error) than a fit from scratch does. Another device can rank subnets
    differently (measured: this machine's FP32 predictor ranks its INT8 latencies at tau
    0.88, and from 10-50 rows a fit on it was worse than one from scratch,
    benchmarks/results/device_minutes.md). The dict is saved as `prior_choice`."""
    with_prior = float(np.mean(np.abs(oof_with_prior / ms - 1)))
    without = float(np.mean(np.abs(oof_from_scratch / ms - 1)))
    return {
        "profile_hash": prior_hash,
        "used": with_prior <= without,
        "oof_mape_with_prior": with_prior,
        "oof_mape_from_scratch": without,
    }
