"""The accuracy predictor on synthetic accuracies (no fine-tuning here: real fine-tunes are
tested with the fine-tune job): it learns a function of the architecture from a few dozen
noisy rows, ranks no worse than params where accuracy follows params, saves as text and
reads back the same, and refuses damaged or foreign folders in one line."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from scipy.stats import kendalltau

from bfnas.bench.store.accuracy_store import AccuracyStore, FinetuneKey, WeightsSource
from bfnas.errors import InputError
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.accuracy_predictor import (
    FEATURE_SETS,
    MIN_ROWS,
    AccuracyPredictor,
    rows_from_store,
)
from bfnas.search.features import FEATURES, feature_matrix
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.predictor_file import AccuracyScope, AccuracySettings, PredictorScope

SCOPE = AccuracyScope(
    task_sha256="a" * 64,
    protocol_hash="p" * 16,
    protocol="standard",
    space="minilm-l6",
    weights_sha256="w" * 64,
)
SEED_SD = 0.01  # one accuracy point: a seed's noise on an SST-2-like task


def pool(n: int, seed: int = 0) -> list[SubnetConfig]:
    space, rng = load_space("minilm-l6"), random.Random(seed)
    return list({c.key(): c for c in (space.sample(rng) for _ in range(n * 2))}.values())[:n]


def truth(cfgs: list[SubnetConfig], world: str = "shape") -> np.ndarray:
    """A saturating function of encoder params ("size"), plus depth and a bottleneck of
    heads ("shape"): 78-90 %, like a small BERT's SST-2 accuracy."""
    X = feature_matrix(cfgs, 128)
    p = X[:, FEATURES.index("params")] / 1e6
    if world == "size":
        return 0.80 + 0.10 * (1 - np.exp(-p / 2.5))
    layers, heads_min = X[:, FEATURES.index("layers")], X[:, FEATURES.index("heads_min")]
    return (
        0.78
        + 0.07 * (1 - np.exp(-p / 2.5))
        + 0.04 * (1 - np.exp(-(layers - 1) / 1.5))
        - 0.015 * (heads_min < 3)
    )


def measured(true: np.ndarray, seeds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean dev accuracy over each subnet's seeds."""
    return np.clip(true + rng.normal(0, SEED_SD, len(true)) / np.sqrt(seeds), 0, 1)


def params_of(cfgs: list[SubnetConfig]) -> np.ndarray:
    return feature_matrix(cfgs, 128)[:, FEATURES.index("params")]


@pytest.fixture(scope="module")
def data():
    cfgs = pool(340)
    rng = np.random.default_rng(0)
    true = truth(cfgs)
    seeds = rng.integers(1, 4, len(cfgs))
    score = true + rng.normal(0, SEED_SD, len(cfgs))  # a one-shot score: truth plus noise
    return cfgs, true, measured(true, seeds, rng), seeds, score


@pytest.fixture(scope="module")
def fitted(data):
    cfgs, _, acc, seeds, score = data
    return AccuracyPredictor(SCOPE).fit(cfgs[:40], acc[:40], {"oneshot": score[:40]}, seeds[:40])


def test_learns_a_function_of_the_architecture(fitted, data):
    cfgs, true, acc, _, score = data
    predicted = fitted.predict(cfgs[40:], {"oneshot": score[40:]})
    assert np.all((predicted >= 0) & (predicted <= 1))
    # Held out, it ranks the true accuracies far better than chance and than params alone
    # (depth and the bottleneck are not in params), within a point or so on average.
    tau = kendalltau(true[40:], predicted).statistic
    assert tau > 0.75 and tau > kendalltau(true[40:], params_of(cfgs[40:])).statistic
    assert np.mean(np.abs(predicted - true[40:])) < 0.015
    m = fitted.metrics
    assert m["rows"] == 40 and m["seeds"] == int(data[3][:40].sum())
    assert 0.5 < m["oof_kendall_tau"] <= 1 and 0.5 < m["oof_spearman"] <= 1
    assert 0 < m["oof_mae_points"] < 2  # accuracy points, not fractions
    assert m["trees"]["mode"] == "auto" and isinstance(m["trees"]["used"], bool)
    assert fitted.feature_names == [*FEATURE_SETS["sizes"], "oneshot"]


@pytest.mark.parametrize("n", [15, 30])
def test_ranks_no_worse_than_params_where_accuracy_follows_params(n):
    """Accuracy a noisy monotone function of params: ranking by params is right, and the
    predictor must not lose to it (held out, against the true accuracies, over draws)."""
    ours, by_params = [], []
    for draw in range(6):
        cfgs = pool(n + 200, seed=draw)
        rng = np.random.default_rng(draw)
        true = truth(cfgs, "size")
        seeds = rng.integers(1, 4, len(cfgs))
        p = AccuracyPredictor(SCOPE).fit(
            cfgs[:n], measured(true[:n], seeds[:n], rng), None, seeds[:n]
        )
        ours.append(kendalltau(true[n:], p.predict(cfgs[n:])).statistic)
        by_params.append(kendalltau(true[n:], params_of(cfgs[n:])).statistic)
    # Within 0.001: trees kept on a chance out-of-fold win (no margin) fell 0.002 short
    # here, trees always 0.02 at 15 rows.
    assert np.mean(ours) >= np.mean(by_params) - 0.001


def test_the_line_alone_ranks_as_params_do(data):
    """Without trees the prediction is the line in log(params): the ranking by params, as
    long as the fitted slope is positive."""
    cfgs, _, _, _, _ = data
    true = truth(cfgs[:30], "size")
    p = AccuracyPredictor(SCOPE, AccuracySettings(trees="never")).fit(cfgs[:30], true)
    choice = p.metrics["trees"]
    assert (choice["mode"], choice["used"], set(choice)) == (
        "never",
        False,
        {"mode", "used", "oof_kendall_tau_line"},
    )
    # Out of fold each row comes from its own fold's line: nearly, not exactly, params' order.
    assert choice["oof_kendall_tau_line"] > 0.95
    assert kendalltau(p.predict(cfgs), params_of(cfgs)).statistic == pytest.approx(1.0)
    assert p.booster.num_trees() == 1 and p.rounds == 1


def test_trees_are_kept_where_they_rank_better_out_of_fold(data):
    cfgs, true, _, _, _ = data
    # Noise-free "shape": depth and the bottleneck are what the line in params misses.
    p = AccuracyPredictor(SCOPE).fit(cfgs[:60], true[:60])
    choice = p.metrics["trees"]
    assert choice["used"] is True
    assert choice["oof_kendall_tau_trees"] > choice["oof_kendall_tau_line"]
    assert p.metrics["oof_kendall_tau"] == pytest.approx(choice["oof_kendall_tau_trees"])


def test_seeds_weigh_the_rows(data):
    cfgs, _, acc, seeds, _ = data
    s = AccuracySettings(trees="always")
    weighed = AccuracyPredictor(SCOPE, s).fit(cfgs[:40], acc[:40], n_seeds=seeds[:40])
    alike = AccuracyPredictor(SCOPE, s).fit(cfgs[:40], acc[:40])
    assert not np.array_equal(weighed.predict(cfgs), alike.predict(cfgs))
    unweighted = AccuracySettings(trees="always", weight_by_seeds=False)
    ignored = AccuracyPredictor(SCOPE, unweighted).fit(cfgs[:40], acc[:40], n_seeds=seeds[:40])
    assert np.array_equal(ignored.predict(cfgs), alike.predict(cfgs))


def test_interval_and_uncertainty(fitted, data):
    cfgs, _, acc, _, score = data
    extra = {"oneshot": score[40:]}
    lo, hi = fitted.predict_interval(cfgs[40:], extra)
    predicted = fitted.predict(cfgs[40:], extra)
    assert np.all(lo <= predicted) and np.all(predicted <= hi) and np.all(hi - lo > 0)
    # The 10-90 % out-of-fold band: about 80 % of new measured accuracies inside.
    inside = np.mean((acc[40:] >= lo) & (acc[40:] <= hi))
    assert 0.6 < inside < 0.95
    spread = fitted.uncertainty(cfgs[40:], extra)
    assert spread.shape == (300,) and np.all(spread >= 0) and spread.max() > 0


def test_refusals_of_fit_and_predict(fitted, data):
    cfgs, _, acc, _, score = data
    p = AccuracyPredictor(SCOPE)
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS}"):
        p.fit(cfgs[: MIN_ROWS - 1], acc[: MIN_ROWS - 1])
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        p.fit(cfgs[:20], acc[:20] * 100)  # percent, not a fraction
    with pytest.raises(ValueError, match="n_seeds"):
        p.fit(cfgs[:20], acc[:20], n_seeds=[0] * 20)
    with pytest.raises(ValueError, match="reuse a feature's name"):
        p.fit(cfgs[:20], acc[:20], {"params": score[:20]})
    with pytest.raises(ValueError, match="not fitted"):
        p.predict(cfgs[:2])
    with pytest.raises(ValueError, match="extra columns"):
        fitted.predict(cfgs[:2])  # fitted with the one-shot score
    with pytest.raises(ValueError, match="'oneshot'"):
        fitted.predict(cfgs[:2], {"oneshot": [0.5]})


def test_settings_and_scope_refusals_name_the_setting():
    with pytest.raises(InputError) as err:
        AccuracySettings(trees="sometimes")
    assert err.value.setting == "trees" and str(err.value).startswith("trees: ")
    with pytest.raises(InputError) as err:
        AccuracySettings(features="few")
    assert err.value.setting == "features"
    with pytest.raises(InputError) as err:
        AccuracyScope(
            task_sha256="sst2", protocol_hash="p", protocol="s", space="x", weights_sha256="w"
        )
    assert err.value.setting == "task_sha256"


# -- files -------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_predictions(fitted, data, tmp_path):
    cfgs, _, _, _, score = data
    folder = fitted.save(tmp_path / "acc")
    meta = json.loads((folder / "predictor.json").read_text())
    assert meta["kind"] == "accuracy" and meta["extra"] == ["oneshot"]
    assert meta["features"] == [*FEATURE_SETS["sizes"], "oneshot"]
    assert meta["scope"]["task_sha256"] == "a" * 64 and meta["scope"]["seq_len"] == 128
    # Text, never a pickle: LightGBM's own model and JSON.
    assert (folder / "model.txt").read_text(encoding="ascii").startswith("tree\n")
    loaded = AccuracyPredictor.load(folder, task_sha256="a" * 64, space="minilm-l6")
    extra = {"oneshot": score}
    assert np.array_equal(loaded.predict(cfgs, extra), fitted.predict(cfgs, extra))
    for ours, theirs in zip(
        loaded.predict_interval(cfgs, extra), fitted.predict_interval(cfgs, extra), strict=True
    ):
        assert np.array_equal(ours, theirs)
    assert loaded.metrics == fitted.metrics and loaded.settings == fitted.settings
    assert (loaded.scope, loaded.extra, loaded.spread) == (
        fitted.scope,
        fitted.extra,
        fitted.spread,
    )
    with pytest.raises(ValueError, match="not saved"):
        loaded.uncertainty(cfgs[:3], {"oneshot": score[:3]})
    # Saved again, the same files.
    again = loaded.save(tmp_path / "again")
    assert (again / "model.txt").read_bytes() == (folder / "model.txt").read_bytes()
    assert json.loads((again / "predictor.json").read_text()) == meta


def test_the_all_features_set_round_trips(data, tmp_path):
    cfgs, _, acc, _, _ = data
    settings = AccuracySettings(features="all", target="accuracy")
    p = AccuracyPredictor(SCOPE, settings).fit(cfgs[:30], acc[:30])
    loaded = AccuracyPredictor.load(p.save(tmp_path / "all"))
    assert loaded.feature_names == list(FEATURE_SETS["all"]) and loaded.baseline_coef is None
    assert np.array_equal(loaded.predict(cfgs), p.predict(cfgs))


def _edit(folder, **fields):
    path = folder / "predictor.json"
    meta = json.loads(path.read_text())
    for key, value in fields.items():  # "a.b" is a nested field; None deletes it
        *parents, name = key.split(".")
        part = meta
        for parent in parents:
            part = part[parent]
        if value is None:
            del part[name]
        else:
            part[name] = value
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda f: (f / "model.txt").write_text((f / "model.txt").read_text()[:300]), "model.txt"),
        (lambda f: (f / "model.txt").unlink(), "model.txt: cannot read"),
        (lambda f: (f / "predictor.json").write_text("{"), "not valid JSON"),
        (lambda f: _edit(f, scope=None), "scope: missing"),
        (lambda f: _edit(f, **{"scope.seq_len": "128"}), "scope.seq_len"),
        (lambda f: _edit(f, **{"settings.trees": None}), "settings.trees: missing"),
        (lambda f: _edit(f, **{"settings.features": "all"}), "features: fitted on other"),
        (lambda f: _edit(f, extra=["other"]), "features: fitted on other"),
        (lambda f: _edit(f, baseline_coef=[0.5]), "baseline_coef: the residual target needs 3"),
        (lambda f: _edit(f, baseline_columns=["params", "oneshot"]), "baseline_columns"),
        (lambda f: _edit(f, spread=[0.02, -0.02]), "spread: low 0.02 is above high -0.02"),
        (lambda f: _edit(f, rounds=999), "rounds = 999"),
        (lambda f: _edit(f, format=2), "format: 2, this bfnas reads 3"),
    ],
)
def test_a_damaged_folder_is_refused_in_one_line(fitted, tmp_path, damage, says):
    folder = fitted.save(tmp_path / "acc")
    damage(folder)
    with pytest.raises(InputError) as err:
        AccuracyPredictor.load(folder)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_another_scope_is_refused_naming_the_field(fitted, tmp_path):
    folder = fitted.save(tmp_path / "acc")
    for name, value in [
        ("task_sha256", "b" * 64),
        ("protocol_hash", "other"),
        ("space", "bigger-faster"),
        ("weights_sha256", "v" * 64),
    ]:
        with pytest.raises(InputError, match=f"scope.{name}: fitted for"):
            AccuracyPredictor.load(folder, **{name: value})
    with pytest.raises(InputError, match="no such predictor folder"):
        AccuracyPredictor.load(tmp_path / "nothing")


def test_a_latency_folder_is_refused_naming_its_kind(fitted, tmp_path):
    cfgs = pool(40)
    ms = feature_matrix(cfgs, 128)[:, FEATURES.index("macs_total")] / 1e8 + 0.5
    scope = PredictorScope("abc123", "minilm-l6", 128)
    latency = LatencyPredictor(scope).fit(cfgs, ms).save(tmp_path / "lat")
    with pytest.raises(InputError) as err:
        AccuracyPredictor.load(latency)
    assert str(err.value) == (
        f"{latency / 'predictor.json'}: kind: a predictor of kind 'latency', not 'accuracy'"
    )
    # And the other way round.
    accuracy = fitted.save(tmp_path / "acc")
    with pytest.raises(InputError, match="kind: a predictor of kind 'accuracy', not 'latency'"):
        LatencyPredictor.load(accuracy)
    # A latency folder from before predictor.json named its kind is a latency one too.
    shutil.copytree(latency, tmp_path / "old")
    _edit(tmp_path / "old", kind=None)
    with pytest.raises(InputError, match="kind 'latency', not 'accuracy'"):
        AccuracyPredictor.load(tmp_path / "old")


# -- rows from the store ------------------------------------------------------------------
def test_rows_from_store_average_the_current_ok_seeds(tmp_path):
    a, b, c = pool(3)
    source = WeightsSource("s" * 64, "/ckpt")
    with AccuracyStore(tmp_path / "accuracy.db") as store:
        task = store.add_task("t" * 64, tmp_path, ["0", "1"], 10, 5)
        proto = store.add_protocol("standard", {"epochs": 3})
        other = store.add_protocol("long", {"epochs": 9})

        def add(cfg, seed, accuracy, space="minilm-l6", protocol=proto, src=source, **kw):
            key = FinetuneKey(task, protocol, cfg, seed, src)
            status = "ok" if accuracy is not None else "failed"
            reason = None if accuracy is not None else "out of memory"
            store.add_finetune(key, space, status=status, accuracy=accuracy, reason=reason, **kw)

        add(a, 0, 0.80)
        add(a, 1, 0.84)
        add(b, 0, 0.70)
        add(b, 1, None)  # failed: in neither number
        add(b, 2, 0.60)
        add(b, 2, 0.90, supersede=True)  # the retry replaces seed 2's first row
        add(c, 0, 0.99, protocol=other)  # another protocol
        add(c, 1, 0.99, src=WeightsSource("z" * 64))  # other starting weights
        cfgs, mean, seeds = rows_from_store(store, task, proto, source, "minilm-l6")
        assert cfgs == [a, b]
        assert np.allclose(mean, [0.82, 0.80]) and seeds.tolist() == [2, 2]
        assert rows_from_store(store, task, proto, source, "bigger-faster")[0] == []
