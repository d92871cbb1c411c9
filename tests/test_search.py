"""Latency-constrained evolution with a real LightGBM predictor fitted on the seed's table."""

import sys

import numpy as np
import pytest
from conftest import SEED_FILE

from bfnas.bench.store.importer import parse_autotinybert
from bfnas.errors import InputError
from bfnas.models.space.search_space import load_space
from bfnas.search.evolution import (
    Budget,
    EvolutionSettings,
    evolve,
    pareto_front,
    predictor_scorer,
    random_search,
)
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.objectives import load_objective
from bfnas.search.predictor_file import PredictorScope

SMALL = EvolutionSettings(population=40, parents=10, generations=8, seed=3)


@pytest.fixture(scope="module")
def space():
    return load_space("bigger-faster")


@pytest.fixture(scope="module")
def scorer(space):
    rows = parse_autotinybert(SEED_FILE, space)
    pick = np.random.default_rng(1).permutation(len(rows))[:400]
    model = LatencyPredictor(PredictorScope("seed", "bigger-faster", 128)).fit(
        [rows[i].cfg for i in pick], [rows[i].ms for i in pick]
    )
    return predictor_scorer(model)


@pytest.fixture(scope="module")
def params():
    return load_objective("params")


def test_winner_fits_the_budget_with_its_margin(space, scorer, params):
    budget = Budget(max_ms=20.0)
    result = evolve(space, scorer, params, budget, SMALL)
    best = result.best
    assert best is not None and best.feasible and best.high_ms <= 20.0
    assert best.predicted_ms < best.high_ms  # the spread made the constraint tighter
    assert space.contains(best.cfg)
    keys = [c.cfg.key() for c in result.candidates]
    assert len(keys) == len(set(keys)) == result.evaluated
    assert result.predictor_calls <= SMALL.generations + 20  # one batched call per generation
    # It climbs: the last generation's best is at least the first's.
    assert result.history[-1]["best_objective"] >= result.history[0]["best_objective"]


def test_beats_random_search_with_as_many_predictions(space, scorer, params):
    budget = Budget(max_ms=15.0)
    result = evolve(space, scorer, params, budget, SMALL)
    rand = random_search(space, scorer, params, budget, result.evaluated, seed=3)
    assert rand is not None and result.best.objective >= rand.objective


def test_same_seed_same_search(space, scorer, params):
    a = evolve(space, scorer, params, Budget(12.0), SMALL)
    b = evolve(space, scorer, params, Budget(12.0), SMALL)
    assert a.best.cfg == b.best.cfg and a.history == b.history


def test_without_margin_the_point_estimate_is_constrained(space, scorer, params):
    with_margin = evolve(space, scorer, params, Budget(12.0), SMALL)
    without = evolve(
        space,
        scorer,
        params,
        Budget(12.0),
        EvolutionSettings(**{**SMALL.__dict__, "margin": False}),
    )
    assert (
        without.best.predicted_ms <= 12.0 and without.best.objective >= with_margin.best.objective
    )
    assert all(c.high_ms <= 12.0 for c in with_margin.candidates if c.feasible)


def test_latency_floor(space, scorer, params):
    result = evolve(space, scorer, load_objective("neg-macs"), Budget(20.0, min_ms=10.0), SMALL)
    feasible = [c for c in result.candidates if c.feasible]
    assert feasible and all(c.low_ms >= 10.0 and c.high_ms <= 20.0 for c in feasible)


def test_an_impossible_budget_finds_nothing(space, scorer, params):
    result = evolve(space, scorer, params, Budget(0.01), SMALL)
    assert result.best is None and result.front == [] and result.evaluated > 0


def test_pareto_mode_returns_a_non_dominated_front(space, scorer, params):
    result = evolve(
        space,
        scorer,
        params,
        Budget(25.0),
        EvolutionSettings(population=40, parents=20, generations=8, mode="pareto", seed=1),
    )
    front = result.front
    assert len(front) >= 5
    for a in front:
        assert a.feasible
        assert not any(
            b.predicted_ms <= a.predicted_ms and b.objective > a.objective
            for b in front
            if b is not a
        )
    assert [c.predicted_ms for c in front] == sorted(c.predicted_ms for c in front)
    assert [c.objective for c in front] == sorted(c.objective for c in front)
    # The front spans the budget, not one corner of it.
    assert front[-1].predicted_ms > 2 * front[0].predicted_ms


def test_pareto_front_of_known_points():
    from bfnas.models.space.subnet import SubnetConfig
    from bfnas.search.evolution import Candidate

    cfg = SubnetConfig.uniform(1, 128, 1, 128, 128)
    pts = [(1.0, 1.0), (2.0, 3.0), (2.5, 2.0), (3.0, 3.0), (4.0, 5.0)]
    cands = [Candidate(cfg, o, ms, ms, ms, True, 0) for ms, o in pts]
    assert [(c.predicted_ms, c.objective) for c in pareto_front(cands)] == [
        (1.0, 1.0),
        (2.0, 3.0),
        (4.0, 5.0),
    ]


@pytest.mark.parametrize(
    "name, message",
    [
        ("nope", "unknown objective"),
        ("oneshot", "^oneshot: the oneshot objective needs a one-shot scorer"),
        ("no_such_module_x:f", "cannot import"),
        ("math:no_such_function", "has no"),
        ("math:pi", "not callable"),
    ],
)
def test_bad_objectives_are_one_line_errors(name, message):
    with pytest.raises(InputError, match=message):
        load_objective(name)


def test_plugin_objective(tmp_path, monkeypatch, space, scorer):
    (tmp_path / "my_objectives.py").write_text(
        "def wide(cfg):\n    return cfg.hidden * 1.0\n\ndef broken(cfg):\n    return 'large'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_objectives", None)
    result = evolve(space, scorer, load_objective("my_objectives:wide"), Budget(8.0), SMALL)
    assert result.best.objective == result.best.cfg.hidden
    broken = load_objective("my_objectives:broken")
    with pytest.raises(InputError, match="did not return a number"):
        evolve(space, scorer, broken, Budget(8.0), SMALL)


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"population": 0}, "population"),
        ({"parents": 50, "population": 10}, "parents"),
        ({"mode": "nsga3"}, "mode"),
    ],
)
def test_bad_settings(kwargs, setting):
    with pytest.raises(InputError, match=f"^{setting}: ") as err:
        EvolutionSettings(**kwargs)
    assert err.value.setting == setting


def test_bad_budgets():
    with pytest.raises(InputError, match="^max_ms: must be positive"):
        Budget(0)
    with pytest.raises(InputError, match=r"^min_ms: must be in \[0, 5.0\)"):
        Budget(5.0, min_ms=6.0)


def test_objective_is_computed_for_feasible_members_only(space, scorer):
    calls = []

    def counting(cfg):
        calls.append(cfg.key())
        return float(cfg.params(embeddings=False))

    result = evolve(space, scorer, counting, Budget(6.0), SMALL)
    feasible = {c.cfg.key() for c in result.candidates if c.feasible}
    assert set(calls) == feasible and len(calls) == len(feasible) < result.evaluated
