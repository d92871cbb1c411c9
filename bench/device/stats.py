"""Statistics of one measurement's raw samples."""

from __future__ import annotations

import numpy as np


def summarize(samples_ms: list[float] | np.ndarray) -> dict[str, float | int]:
    """Median (the latency a predictor learns), spread and tail of timing samples in ms.

    `outliers` counts samples outside 1.5 IQR of the quartiles; `median_rel_ci` is
    the relative half-width of a 95 % confidence interval of the median, which tells
    whether more samples would move it.
    """
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    iqr = q3 - q1
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    return {
        "runs": n,
        "median_ms": float(median),
        "mean_ms": mean,
        "std_ms": std,
        "cov": std / mean if mean > 0 else 0.0,
        "min_ms": float(x[0]),
        "p90_ms": float(np.percentile(x, 90)),
        "p95_ms": float(np.percentile(x, 95)),
        "p99_ms": float(np.percentile(x, 99)),
        "outliers": int(np.sum((x < q1 - 1.5 * iqr) | (x > q3 + 1.5 * iqr))),
        "median_rel_ci": median_rel_ci(x, presorted=True),
    }


def median_rel_ci(samples, presorted: bool = False) -> float:
    """Half-width of a distribution-free 95 % confidence interval of the median, relative
    to the median: the order statistics n/2 -+ 0.98 sqrt(n) bound it."""
    x = (
        np.asarray(samples, dtype=np.float64)
        if presorted
        else np.sort(np.asarray(samples, dtype=np.float64))
    )
    n = len(x)
    if n < 3:
        return float("inf")
    half = 1.96 * np.sqrt(n) / 2
    lo = x[max(int(np.floor(n / 2 - half)), 0)]
    hi = x[min(int(np.ceil(n / 2 + half)), n - 1)]
    median = float(np.median(x))
    return float((hi - lo) / 2 / median) if median > 0 else float("inf")
