"""Fine-tuning until the accuracy predictor ranks well enough, on synthetic accuracies: it
stops by its bound on an easy function and by a cap on pure noise, audits with random rows,
fine-tunes only candidates near a budget, never one twice; every setting refused in one line."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bfnas.errors import InputError
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.accuracy_until import (
    STOPS,
    AccuracyUntil,
    AccuracyUntilSettings,
    Finetuned,
    near_budgets,
    tau_lower_bound,
)
from bfnas.search.features import FEATURES, feature_matrix
from bfnas.search.predictor_file import AccuracyScope

SCOPE = AccuracyScope(
    task_sha256="a" * 64,
    protocol_hash="p" * 16,
    protocol="standard",
    space="minilm-l6",
    weights_sha256="w" * 64,
)


@pytest.fixture(scope="module")
def candidates() -> list[SubnetConfig]:
    space, rng = load_space("minilm-l6"), random.Random(0)
    return list({c.key(): c for c in (space.sample(rng) for _ in range(800))}.values())[:400]


def size_accuracy(cfgs) -> np.ndarray:
    p = feature_matrix(cfgs, 128)[:, FEATURES.index("params")] / 1e6
    return 0.80 + 0.10 * (1 - np.exp(-p / 2.5))


class Lab:
    """Answers `finetune(cfgs)` with synthetic accuracies: a function of the subnets plus a
    seed's noise, each fine-tune costing `minutes`; records what was asked."""

    def __init__(self, accuracy, noise: float = 0.002, minutes: float = 10.0, fail=()):
        self.accuracy, self.noise, self.minutes, self.fail = accuracy, noise, minutes, set(fail)
        self.rng = np.random.default_rng(1)
        self.asked: list[list[str]] = []

    def __call__(self, cfgs: list[SubnetConfig]) -> Finetuned:
        self.asked.append([c.key() for c in cfgs])
        acc = np.clip(self.accuracy(cfgs) + self.rng.normal(0, self.noise, len(cfgs)), 0, 1)
        got = [None if c.key() in self.fail else float(a) for c, a in zip(cfgs, acc, strict=True)]
        return Finetuned(got, [1] * len(cfgs), self.minutes * len(cfgs))

    @property
    def keys(self) -> list[str]:
        return [k for batch in self.asked for k in batch]


def test_the_bound_is_fishers_z_for_kendalls_tau():
    # tanh(atanh(0.6) - 1.2816 * sqrt(0.437 / 26)) = 0.4831...
    assert tau_lower_bound(0.6, 30, 0.9) == pytest.approx(0.48309, abs=1e-4)
    assert tau_lower_bound(0.6, 30, 0.9) < 0.6
    # Surer with more rows, less sure at a higher confidence, -1 under five rows.
    assert (
        tau_lower_bound(0.6, 15, 0.9)
        < tau_lower_bound(0.6, 30, 0.9)
        < tau_lower_bound(0.6, 100, 0.9)
    )
    assert tau_lower_bound(0.6, 30, 0.99) < tau_lower_bound(0.6, 30, 0.9)
    assert tau_lower_bound(1.0, 4, 0.9) == -1.0 and tau_lower_bound(float("nan"), 30, 0.9) == -1.0
    # A perfect order is not certainty: one pair short of it, so a few rows show little.
    assert tau_lower_bound(1.0, 5, 0.9) < 0.3 < tau_lower_bound(1.0, 12, 0.9) < 0.96


def test_stops_by_its_bound_on_an_easy_function(candidates):
    lab = Lab(size_accuracy, noise=0.01)  # a seed's noise: a point of accuracy
    points = []
    settings = AccuracyUntilSettings(target_tau=0.74, max_finetunes=60)
    result = AccuracyUntil(settings, SCOPE, candidates, lab, on_round=points.append).run()
    assert result.stop == "trusted"
    last = result.curve[-1]
    assert last.lower_bound >= 0.74 and last == points[-1] and len(points) == len(result.curve)
    # Every earlier point was below the target, or it would have stopped there.
    assert all(p.lower_bound < 0.74 for p in result.curve[:-1])
    assert last.finetunes == len(lab.keys) < 60 and last.minutes == 10.0 * len(lab.keys)
    assert len(set(lab.keys)) == len(lab.keys), "a subnet fine-tuned twice"
    # The first round is `first` random subnets; the estimate is made of random rows only.
    assert len(lab.asked[0]) == settings.first and result.audited[: settings.first].all()
    assert last.audited == int(result.audited.sum()) and last.rows == len(result.cfgs)
    assert result.predictor is not None and result.predictor.metrics["rows"] == last.rows
    assert result.minutes == last.minutes
    # Learn first, then prove: after a round whose tau reached the target, all random.
    ends = np.cumsum([len(batch) for batch in lab.asked])
    kinds = []
    for point, start, end in zip(result.curve[:-1], ends[:-1], ends[1:], strict=True):
        kinds.append(bool(point.tau >= 0.74))
        assert result.audited[start:end].all() == (point.tau >= 0.74)
    assert kinds == [False, True]  # one round learning, one proving


def test_stops_at_its_cap_on_pure_noise(candidates):
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05)
    settings = AccuracyUntilSettings(target_tau=0.3, max_finetunes=40, round_size=7)
    result = AccuracyUntil(settings, SCOPE, candidates, lab).run()
    assert result.stop == "max-finetunes" and len(lab.keys) == 40 == len(result.cfgs)
    assert all(p.lower_bound < 0.3 for p in result.curve)
    # Rounds of 7 after the first 12, the last one cut to the cap.
    assert [len(b) for b in lab.asked] == [12, 7, 7, 7, 7]
    # While tau is below the target half a round (rounded up) is random, half chosen.
    assert int(result.audited.sum()) == 12 + 4 * 4 and result.audited.sum() < len(result.cfgs)


def test_stops_at_its_minutes(candidates):
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05, minutes=30.0)
    settings = AccuracyUntilSettings(target_tau=0.3, max_minutes=500.0)
    result = AccuracyUntil(settings, SCOPE, candidates, lab).run()
    # 12 first (360 minutes), one round of 6 (540): over the cap, so no third round.
    assert result.stop == "max-minutes" and result.minutes == 540.0 and len(lab.asked) == 2


def test_minutes_are_the_calls_wall_time_when_not_given(candidates):
    ticks = iter(range(0, 10_000, 60))  # every clock reading a minute later
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05)

    def finetune(cfgs):
        return lab(cfgs).accuracy  # accuracies only

    settings = AccuracyUntilSettings(target_tau=0.3, max_minutes=3.0)
    until = AccuracyUntil(settings, SCOPE, candidates, finetune, clock=lambda: next(ticks))
    result = until.run()
    assert result.stop == "max-minutes" and result.minutes == 3.0 and len(lab.asked) == 3


def test_stops_when_the_pool_is_spent(candidates):
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05)
    settings = AccuracyUntilSettings(target_tau=0.9, first=10)
    result = AccuracyUntil(settings, SCOPE, candidates[:15] + candidates[:5], lab).run()
    assert result.stop == "pool-exhausted" and sorted(lab.keys) == sorted(
        c.key() for c in candidates[:15]
    )


def test_only_candidates_near_a_budget_are_fine_tuned(candidates):
    lab = Lab(size_accuracy)
    macs = feature_matrix(candidates, 128)[:, FEATURES.index("macs_total")]
    budget = float(np.median(macs))

    def near_budget(cfgs):
        m = feature_matrix(cfgs, 128)[:, FEATURES.index("macs_total")]
        return np.clip(1 - np.abs(m / budget - 1) / 0.3, 0, None)  # 0 beyond +-30 %

    settings = AccuracyUntilSettings(target_tau=0.9, max_finetunes=30)
    AccuracyUntil(settings, SCOPE, candidates, lab, near_budget).run()
    far = {c.key() for c, w in zip(candidates, near_budget(candidates), strict=True) if w == 0}
    assert far and len(lab.keys) == 30 and not set(lab.keys) & far


def test_near_budgets_weighs_by_distance_and_never_empties_the_pool(candidates):
    latency = {c.key(): float(c.params()) / 1e6 for c in candidates}  # a stand-in, in "ms"

    def predict(cfgs):
        return np.array([latency[c.key()] for c in cfgs])

    ms = predict(candidates)
    on = candidates[int(np.argsort(ms)[len(ms) // 2])]
    w = np.array(near_budgets(predict, [latency[on.key()]])(candidates))
    assert w[candidates.index(on)] == pytest.approx(1.0)
    # Farther from the budget (in log ratio), lighter.
    off = np.abs(np.log(ms / latency[on.key()]))
    assert np.all(np.diff(w[np.argsort(off)]) <= 1e-12)
    # A budget far above the whole space: its largest subnets count as on it, not all zero.
    far = np.array(near_budgets(predict, [1000 * ms.max()])(candidates))
    assert far[int(np.argmax(ms))] == pytest.approx(1.0) and far[int(np.argmin(ms))] < 1e-6


def test_chosen_subnets_are_where_the_fold_models_disagree(candidates):
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05)
    settings = AccuracyUntilSettings(target_tau=0.9, first=12, round_size=6, max_finetunes=18)
    result = AccuracyUntil(settings, SCOPE, candidates, lab).run()
    assert [len(b) for b in lab.asked] == [12, 6]
    chosen = [c for c, a in zip(result.cfgs, result.audited, strict=True) if not a]
    assert len(chosen) == 3
    # Refit on the first round alone, as the chooser saw it: its picks rank among the most
    # uncertain of what was left (from the top 3k, spread out).
    first = AccuracyUntil(
        AccuracyUntilSettings(target_tau=0.9, first=12, max_finetunes=12),
        SCOPE,
        candidates,
        Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05),
    ).run()
    left = [c for c in candidates if c.key() not in set(lab.asked[0])]
    spread = first.predictor.uncertainty(left)
    rank = {c.key(): r for r, c in enumerate(np.array(left, dtype=object)[np.argsort(-spread)])}
    assert all(rank[c.key()] < 12 for c in chosen)


def test_failed_finetunes_count_but_teach_nothing(candidates):
    fail = {c.key() for c in candidates[::3]}
    lab = Lab(lambda cfgs: np.full(len(cfgs), 0.5), noise=0.05, fail=fail)
    settings = AccuracyUntilSettings(target_tau=0.9, max_finetunes=24)
    result = AccuracyUntil(settings, SCOPE, candidates, lab).run()
    assert result.stop == "max-finetunes" and len(lab.keys) == 24
    assert {c.key() for c in result.failed} == set(lab.keys) & fail
    assert len(result.cfgs) + len(result.failed) == 24
    assert not {c.key() for c in result.cfgs} & fail
    summary = result.summary(settings)["until"]
    assert summary["stop"] == "max-finetunes" and summary["target_tau"] == 0.9
    assert summary["failed"] == sorted(c.key() for c in result.failed)
    assert len(summary["curve"]) == len(result.curve)


def test_extra_columns_reach_the_predictor(candidates):
    def score(cfgs):
        return {"oneshot": size_accuracy(cfgs) + 0.001 * np.arange(len(cfgs))}

    settings = AccuracyUntilSettings(target_tau=0.9, max_finetunes=18)
    result = AccuracyUntil(settings, SCOPE, candidates, Lab(size_accuracy), extra=score).run()
    assert result.predictor.extra == ("oneshot",)
    assert result.predictor.feature_names[-1] == "oneshot"
    with pytest.raises(ValueError, match="extra column 'oneshot'"):
        AccuracyUntil(
            settings, SCOPE, candidates, Lab(size_accuracy), extra=lambda c: {"oneshot": [1.0]}
        ).run()


def test_same_seed_same_rounds(candidates):
    runs = []
    for _ in range(2):
        lab = Lab(size_accuracy)
        AccuracyUntil(AccuracyUntilSettings(0.9, max_finetunes=24), SCOPE, candidates, lab).run()
        runs.append(lab.asked)
    assert runs[0] == runs[1]
    other = Lab(size_accuracy)
    AccuracyUntil(
        AccuracyUntilSettings(0.9, max_finetunes=24, seed=1), SCOPE, candidates, other
    ).run()
    assert other.asked != runs[0]


def test_a_bad_finetune_or_weight_is_refused(candidates):
    settings = AccuracyUntilSettings(target_tau=0.5)
    with pytest.raises(ValueError, match="results for 12 subnets"):
        AccuracyUntil(settings, SCOPE, candidates, lambda cfgs: [0.5]).run()
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        AccuracyUntil(settings, SCOPE, candidates, lambda cfgs: [85.0] * len(cfgs)).run()
    with pytest.raises(ValueError, match="near_budget"):
        AccuracyUntil(
            settings, SCOPE, candidates, Lab(size_accuracy), lambda c: [-1.0] * len(c)
        ).run()


@pytest.mark.parametrize(
    "change, setting, says",
    [
        ({"target_tau": 0.0}, "target_tau", "must be between 0 and 1, got 0.0"),
        ({"target_tau": 1.0}, "target_tau", "must be between 0 and 1, got 1.0"),
        ({"confidence": 1.0}, "confidence", "must be between 0 and 1, got 1.0"),
        ({"confidence": 0.0}, "confidence", "must be between 0 and 1, got 0.0"),
        ({"first": 7}, "first", "a fit needs at least 8 subnets, got 7"),
        ({"round_size": 0}, "round_size", "must be at least 1, got 0"),
        ({"max_finetunes": 11}, "max_finetunes", "must be at least first (12), got 11"),
        ({"max_minutes": 0.0}, "max_minutes", "must be positive and finite, got 0.0"),
        ({"max_minutes": math.inf}, "max_minutes", "must be positive and finite, got inf"),
        ({"max_minutes": math.nan}, "max_minutes", "must be positive and finite, got nan"),
        ({"audit": 0.0}, "audit", "must be in (0, 1], got 0.0"),
        ({"audit": 1.5}, "audit", "must be in (0, 1], got 1.5"),
    ],
)
def test_every_setting_is_refused_in_one_line(change, setting, says):
    with pytest.raises(InputError) as err:
        AccuracyUntilSettings(**{"target_tau": 0.5, **change})
    assert err.value.setting == setting and str(err.value) == f"{setting}: {says}"


def test_the_stops_are_named():
    assert STOPS == ("trusted", "max-finetunes", "max-minutes", "pool-exhausted")
