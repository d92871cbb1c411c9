"""The one out-of-fold loop behind cross-validation and the predictor's spread."""

import numpy as np
import pytest

from bfnas.search.folds import out_of_fold_predictions


@pytest.mark.parametrize(("n", "folds"), [(10, 2), (23, 5), (50, 7)])
@pytest.mark.parametrize("row_order", [False, True])
def test_every_row_is_predicted_once_by_a_fit_without_it(n, folds, row_order):
    calls, done = [], []

    def fit_predict(train, test):
        calls.append((train.copy(), test.copy()))
        return test * 10.0  # a prediction that says which row it was made for

    predicted, parts = out_of_fold_predictions(
        n, folds, 3, fit_predict, train_in_row_order=row_order, on_fold=done.append
    )
    assert done == list(range(folds)) and len(calls) == len(parts) == folds
    assert np.array_equal(predicted, np.arange(n) * 10.0)
    tested = np.concatenate(parts)
    assert sorted(tested) == list(range(n))  # each row in exactly one test fold
    for (train, test), part in zip(calls, parts, strict=True):
        assert np.array_equal(test, part)
        assert not set(train) & set(test) and len(train) + len(test) == n
        if row_order:
            assert np.array_equal(train, np.sort(train))
        else:  # the other folds, one after another, each in its shuffled order
            others = [p for p in parts if p is not part]
            assert np.array_equal(train, np.concatenate(others))


def test_the_seed_fixes_the_folds():
    def split(seed):
        return out_of_fold_predictions(40, 4, seed, lambda train, test: np.zeros(len(test)))[1]

    same, other = split(1), split(2)
    assert all(np.array_equal(a, b) for a, b in zip(split(1), same, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(same, other, strict=True))
