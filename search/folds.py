"""Out-of-fold prediction: every row predicted once, by a model fitted without it. The K-fold
cross-validation of `training` and the predictor's own spread (`latency_predictor`) both
run this one loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def out_of_fold_predictions(
    n: int,
    folds: int,
    seed: int,
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    train_in_row_order: bool = False,
    on_fold: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(each row's prediction, each fold's test rows): the rows are shuffled by `seed` and
    cut into `folds` parts; `fit_predict(train, test)` fits on the rows `train` and predicts
    the rows `test`. `on_fold(k)` is called once fold k is done.

    The training rows come in fold order, or ascending with `train_in_row_order`. LightGBM's
    histograms and the estimate's least squares add rows up in the order given, so the order
    moves the last bits of a fit; each caller keeps the order its published figures came
    from."""
    parts = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    predicted = np.empty(n)
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        if train_in_row_order:
            train = np.sort(train)
        predicted[test] = fit_predict(train, test)
        if on_fold:
            on_fold(k)
    return predicted, parts
