"""The generic LightGBM estimator on its own: no subnets, no latency, a known function."""

import json

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from bfnas.errors import InputError
from bfnas.search.estimator import (
    Estimator,
    EstimatorSettings,
    FittedModel,
    Identity,
    Log,
    check_model_text,
    fold_disagreement,
    load_booster,
    log_target,
    residual_quantiles,
)

NAMES = ("a", "b", "c")
NOISE = 0.3


def truth(X: np.ndarray) -> np.ndarray:
    return 3.0 * X[:, 0] + 2.0 * np.sin(3.0 * X[:, 1]) + (X[:, 2] > 0.5)


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, len(NAMES)))
    return X, truth(X) + rng.normal(0, NOISE, n)


@pytest.fixture(scope="module")
def fitted() -> Estimator:
    X, y = data(400, 0)
    return Estimator(EstimatorSettings(seed=1), NAMES).fit(X, y)


def test_fits_a_known_function(fitted):
    X, _ = data(1000, 1)
    error = fitted.predict(X) - truth(X)
    # Closer to the function than the noise on its training rows, and far closer than its
    # spread: a fit that learned it, not the mean.
    rmse = np.sqrt(np.mean(error**2))
    assert rmse < NOISE and rmse < 0.2 * truth(X).std()
    assert 1 <= fitted.rounds <= 300 and fitted.model.booster.feature_name() == list(NAMES)


def test_same_data_and_seed_same_model():
    X, y = data(120, 2)
    first = Estimator(EstimatorSettings(seed=4), NAMES).fit(X, y)
    again = Estimator(EstimatorSettings(seed=4), NAMES).fit(X, y)
    assert np.array_equal(first.predict(X), again.predict(X))
    assert np.array_equal(first.oof, again.oof)


def test_out_of_fold_predictions_are_honest_and_their_spread_calibrated(fitted):
    X, y = data(400, 0)
    # Each row predicted by a model that did not see it: worse than the fit on every row.
    assert np.mean(np.abs(y - fitted.oof)) > 1.2 * np.mean(np.abs(y - fitted.predict(X)))
    assert len(fitted.fold_models) == 5
    lo, hi = fitted.oof_spread(y, relative=False)
    assert lo < 0 < hi
    # Additive 10-90 % bounds hold about 80 % of new rows of the same kind.
    X_new, y_new = data(2000, 3)
    p = fitted.predict(X_new)
    inside = np.mean((p + lo <= y_new) & (y_new <= p + hi))
    assert 0.7 < inside < 0.9


def test_residual_quantiles_relative_and_absolute():
    y, p = np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.0, 1.0, 2.0, 4.0])
    assert residual_quantiles(y, p, (0.0, 1.0)) == (1.0, 2.0)
    assert residual_quantiles(y, p, (0.0, 1.0), relative=False) == (0.0, 4.0)


def test_fold_disagreement(fitted):
    X, _ = data(50, 4)
    assert np.array_equal(fold_disagreement([], X), np.zeros(50))
    spread = fitted.fold_disagreement(X)
    assert spread.shape == (50,) and np.all(spread >= 0) and np.any(spread > 0)
    each = np.array([m.predict(X) for m in fitted.fold_models])
    assert np.allclose(spread, each.std(0))


def test_the_transform_is_fitted_on_each_fits_rows():
    X, y = data(60, 5)
    y = np.exp(y / 3)
    seen: list[int] = []

    def target(X_fit, y_fit):
        seen.append(len(X_fit))
        return Log()

    est = Estimator(EstimatorSettings(n_estimators=20), NAMES, target).fit(X, y)
    # CV on all rows, the fit on all rows, then five folds of 48 rows.
    assert seen == [60, 60] + [48] * 5
    assert np.all(est.predict(X) > 0)


def test_weights_weigh_the_rows():
    X, y = data(200, 6)
    y_bad = y.copy()
    y_bad[:40] += 10.0  # rows that are wrong, weighed to nothing
    w = np.ones(200)
    w[:40] = 1e-6
    s = EstimatorSettings(cv_rounds=False, n_estimators=100)
    weighed = Estimator(s, NAMES).fit(X, y_bad, weights=w)
    unweighed = Estimator(s, NAMES).fit(X, y_bad)
    X_new, _ = data(500, 7)
    err_w = np.abs(weighed.predict(X_new) - truth(X_new)).mean()
    err_u = np.abs(unweighed.predict(X_new) - truth(X_new)).mean()
    assert err_w < 0.3 < 1.0 < err_u


def test_too_few_rows_is_refused():
    X, y = data(3, 8)
    with pytest.raises(ValueError, match="at least 4 rows"):
        Estimator().fit(X, y)


def test_save_load_round_trip_gives_identical_predictions(fitted, tmp_path):
    path = tmp_path / "model.txt"
    sha = fitted.model.save(path)
    X, _ = data(300, 9)
    for recorded in (sha, None):
        again = FittedModel.load(path, Identity(), recorded)
        assert np.array_equal(again.predict(X), fitted.predict(X))
    # Through a log transform the round trip is as exact.
    X_pos, y_pos = data(80, 10)
    logged = Estimator(EstimatorSettings(n_estimators=30), NAMES, log_target).fit(
        X_pos, np.exp(y_pos)
    )
    logged.model.save(path)
    assert np.array_equal(FittedModel.load(path, Log()).predict(X), logged.predict(X))


def _one_line(exc: InputError) -> str:
    line = str(exc)
    assert "\n" not in line and line == exc.line()
    return line


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda t: t[: t.index("Tree=1\n") + 40], "Tree=1: cut short or damaged"),
        (lambda t: t.replace("num_leaves=", "num_leaves=x", 1), "Tree=0.num_leaves: expected"),
        (lambda t: t.replace("tree_sizes=", "tree_sizes=x", 1), "tree_sizes: missing, or not"),
        (lambda t: "hello\n", "not a LightGBM model"),
        (lambda t: t.replace("end of trees", "end of tees"), "no 'end of trees'"),
    ],
)
def test_a_damaged_model_text_is_refused_in_one_line(fitted, tmp_path, damage, says):
    path = tmp_path / "model.txt"
    fitted.model.save(path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(InputError) as err:
        load_booster(path)
    line = _one_line(err.value)
    assert line.startswith(f"{path}: ") and says in line


def test_a_changed_model_text_is_refused_by_its_hash(fitted, tmp_path):
    path = tmp_path / "model.txt"
    sha = fitted.model.save(path)
    # A change the text checks cannot see (a digit of one leaf's value) is caught by the hash.
    text = path.read_text()
    at = text.index("leaf_value=") + len("leaf_value=")
    at += 1 if text[at] == "-" else 0
    path.write_text(text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :])
    check_model_text(path.read_bytes(), str(path))
    with pytest.raises(InputError) as err:
        load_booster(path, sha, "meta.json's model_sha256")
    assert "changed or damaged since it was fitted" in _one_line(err.value)
    assert "meta.json's model_sha256" in str(err.value)


# -- the settings: one schema for Python and for a file --------------------------------------
class _File(BaseModel):
    model_config = ConfigDict(strict=True)
    settings: EstimatorSettings


def test_settings_from_python_name_the_setting():
    with pytest.raises(InputError) as err:
        EstimatorSettings(learning_rate=0)
    assert err.value.setting == "learning_rate" and err.value.where is None
    assert str(err.value).startswith("learning_rate: ")
    with pytest.raises(InputError, match="unknown setting"):
        EstimatorSettings(depth=3)


def test_settings_from_a_file_are_validated_by_the_schema_alone():
    """A file's settings do not go through the Python constructor: its JSON array is a tuple,
    and its error is a field of the file, not an InputError of a setting."""
    text = json.dumps({"settings": EstimatorSettings(seed=7).model_dump()})
    assert _File.model_validate_json(text).settings == EstimatorSettings(seed=7)
    bad = json.dumps({"settings": {**EstimatorSettings().model_dump(), "learning_rate": "0.1"}})
    with pytest.raises(ValidationError) as err:
        _File.model_validate_json(bad)
    assert err.value.errors()[0]["loc"] == ("settings", "learning_rate")
