"""Pictures of a latency predictor's errors: predicted vs measured with a +-10 % band, and
the relative residual against each feature (where a pattern shows what the model misses);
and the two helpers every report plot is made and saved with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bfnas.models.outputs import atomic_path
from bfnas.search.features import FEATURES
from bfnas.search.latency_predictor import LatencyPredictor, accuracy
from bfnas.search.training import LatencyRows

RESIDUAL_FEATURES = (
    "layers",
    "hidden",
    "heads_mean",
    "qkv_mean",
    "ffn_mean",
    "macs_total",
    "params",
)


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display on devices or CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, folder: Path, name: str) -> Path:
    """`fig` as the PNG `folder/name` (written whole or not at all), then closed."""
    path = folder / name
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    pyplot().close(fig)
    return path


def predicted_vs_measured(
    ax, measured: np.ndarray, predicted: np.ndarray, xlabel: str, ylabel: str, title: str
) -> None:
    """Predicted against measured on equal axes, with the +-10 % band around the diagonal."""
    lim = (
        float(min(measured.min(), predicted.min())) * 0.9,
        float(max(measured.max(), predicted.max())) * 1.1,
    )
    line = np.linspace(*lim, 50)
    ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.2, label="+-10 %")
    ax.plot(line, line, color="tab:green", lw=1)
    ax.scatter(measured, predicted, s=4, alpha=0.6)
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=lim, ylim=lim, title=title)
    ax.legend(loc="upper left", fontsize=8)


def plot_predictor(model: LatencyPredictor, rows: LatencyRows, out: Path) -> Path:
    plt = pyplot()
    X = model.features(rows.cfgs)
    pred = model.predict(X)
    rel = (pred - rows.ms) / rows.ms
    m = accuracy(rows.ms, pred)
    cols = 4
    panels = 1 + len(RESIDUAL_FEATURES)
    fig, axes = plt.subplots(
        (panels + cols - 1) // cols, cols, figsize=(4 * cols, 3.6 * ((panels + cols - 1) // cols))
    )
    axes = axes.ravel()
    predicted_vs_measured(
        axes[0],
        rows.ms,
        pred,
        f"measured ({rows.label})",
        "predicted ms",
        f"{m['within_10pct']:.1%} within 10 %, tau {m['kendall_tau']:.3f}",
    )
    for ax, name in zip(axes[1:], RESIDUAL_FEATURES, strict=False):
        ax.scatter(X[:, FEATURES.index(name)], rel * 100, s=4, alpha=0.6)
        ax.axhline(0, color="black", lw=0.8)
        for y in (-10, 10):
            ax.axhline(y, color="tab:green", lw=0.8, ls="--")
        ax.set(xlabel=name, ylabel="error %")
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"{rows.profile} / {rows.space}: {len(rows.ms)} subnets")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
