"""`AccuracySearch`: the winner re-ranked on its verified numbers, the params winner and the
hand-scaled baseline fine-tuned with the same seeds, the margins with their spread.

The latency side is a real store (the seed table imported), a real latency predictor and
real searches. The seed table was measured on another machine, so the device is a stand-in
that answers with the predictor's estimate scaled by a fixed factor; fine-tunes are a
stand-in too (an accuracy that is a known function of the architecture plus seed noise:
real fine-tunes are tested in test_finetune_job.py)."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import FAST_PROFILE, SEED_FILE

from bfnas.bench.device.contract import MeasurementResult, Status
from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings
from bfnas.models.train.protocols import FinetuneProtocol
from bfnas.search.accuracy_search import AccuracySearch, Proven, margin, ship_role
from bfnas.search.evolution import Budget, EvolutionSettings
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.loop import SearchJob, Verification
from bfnas.search.objectives import load_objective
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.training import LatencyRows, load_rows

SEEDS = (0, 1, 2)


def true_accuracy(cfg: SubnetConfig, seed: int) -> float:
    """What the stand-in fine-tune reaches: grows with width and depth, saturating, plus a
    seed's noise of about half a point."""
    size = cfg.params() / 30e6
    return 0.5 + 0.3 * size / (1 + size) + 0.01 * cfg.layers + 0.005 * ((seed * 7) % 3 - 1)


@dataclass
class Record:
    status: str
    accuracy: float
    seed: int


class StandInFinetunes:
    protocol = FinetuneProtocol("standin", FinetuneSettings(epochs=1))
    space = "bigger-faster"

    def __init__(self, store: AccuracyStore) -> None:
        self.store = store
        self.asked: list[tuple[str, int]] = []

    def run(self, work):
        self.asked += [(c.key(), s) for c, s in work]
        return [Record("ok", true_accuracy(c, s), s) for c, s in work]


class MisguidedModel:
    """An accuracy predictor that loves depth and, at one depth, prefers the smaller model:
    among its favourites, the one it rates best is the least accurate once fine-tuned."""

    def predict(self, cfgs):
        return [0.05 * c.layers - 0.5 * true_accuracy(c, 0) + 1 for c in cfgs]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("acc-search")
    hw = folder / "hw.toml"
    hw.write_text(FAST_PROFILE)
    with redirect_stdout(io.StringIO()):
        argv = ["import", str(SEED_FILE), "--hw", str(hw), "--space", "bigger-faster"]
        assert main([*argv, "--db", str(folder / "lat.db")]) == 0
    profile, space = load_profile(hw), load_space("bigger-faster")
    store = LatencyStore(folder / "lat.db")
    rows = load_rows(store, profile.hash(), space.name)
    predictor = LatencyPredictor(rows.scope, PredictorSettings(seed=0)).fit(rows.cfgs, rows.ms)
    budget = float(sorted(rows.ms)[len(rows.ms) // 3])
    device = []

    def on_device(cfg):  # the stand-in device: 3 % slower than predicted
        device.append(cfg.key())
        ms = 1.03 * float(predictor.predict([cfg])[0])
        return Verification(MeasurementResult(Status.OK, median_ms=ms))

    def verifier(cfg, run_id):
        return on_device(cfg)

    def search(name, objective):
        return SearchJob(
            store=store,
            profile=profile,
            space=space,
            objective=objective or load_objective(name),
            budget=Budget(budget),
            settings=EvolutionSettings(population=24, parents=6, generations=4, seed=0),
            verify=3,
            verifier=verifier,
            predictor=predictor,
            objective_name=name,
        )

    accuracy_store = AccuracyStore(folder / "acc.db")
    finetunes = StandInFinetunes(accuracy_store)
    result = AccuracySearch(
        search=search,
        space=space,
        accuracy=MisguidedModel(),
        finetunes=finetunes,
        budget_ms=budget,
        unit=rows.label,
        verify=on_device,
        seeds=SEEDS,
    ).run()
    yield result, finetunes, device, budget
    store.close()
    accuracy_store.close()


def test_the_winner_is_the_best_verified_candidate_by_measured_accuracy(searched):
    result, _, _, budget = searched
    winner, candidates = result["winner"], result["candidates"]
    assert winner is not None and winner["within_budget"] and winner["latency_ms"] <= budget
    fitting = [c for c in candidates if c["within_budget"]]
    assert winner["accuracy_mean"] == max(c["accuracy_mean"] for c in fitting)
    assert winner["seeds"] == list(SEEDS) and winner["accuracy_std"] > 0
    # Re-ranked on the fine-tunes, not on the predictor's opinion, where the two disagree.
    by_prediction = max(fitting, key=lambda c: c["predicted_accuracy"])
    assert by_prediction["arch_text"] != winner["arch_text"]
    assert by_prediction["accuracy_mean"] < winner["accuracy_mean"]
    assert 0 < winner["budget_used"] <= 1


def test_the_baseline_is_the_larger_fitting_hand_scaled_model_measured(searched):
    result, _, device, budget = searched
    hand = result["hand_scaled"]
    assert hand, "no hand-scaled model fits the budget"
    for row in hand.values():
        assert row["within_budget"] and row["latency_ms"] <= budget
        assert SubnetConfig.from_dict(row["arch"]).key() in device  # measured, not predicted
    assert result["baseline"]["accuracy_mean"] == max(r["accuracy_mean"] for r in hand.values())
    params = result["params_winner"]
    assert params is not None and params["within_budget"] and params["seeds"] == list(SEEDS)


def test_margins_are_in_points_with_their_spread(searched):
    result, _, _, _ = searched
    w, b = result["winner"], result["baseline"]
    m = result["margins"]["baseline"]
    assert m["points"] == pytest.approx(100 * (w["accuracy_mean"] - b["accuracy_mean"]))
    assert m["spread_points"] > 0
    assert result["margins"]["params"] is not None
    # The model to ship is the most accurate of the three as measured.
    best = max(("winner", "baseline", "params_winner"), key=lambda k: result[k]["accuracy_mean"])
    assert result["ship"] == best


def test_every_subnet_is_fine_tuned_once_per_seed_and_the_result_is_kept(searched):
    result, finetunes, _, _ = searched
    (run,) = finetunes.store.runs("accuracy-search")
    assert run["status"] == "finished"
    kept = json.loads(run["summary"])["result"]
    assert kept["winner"] == result["winner"] and kept["baseline"] == result["baseline"]
    assert len(finetunes.asked) == len(set(finetunes.asked))
    per_subnet = {}
    for key, seed in finetunes.asked:
        per_subnet.setdefault(key, []).append(seed)
    assert all(sorted(s) == list(SEEDS) for s in per_subnet.values())


def test_a_margin_says_when_the_ranges_overlap():
    cfg = SubnetConfig.uniform(1, 128, 2, 64, 256)
    a = Proven("winner", cfg, 1.0, 1.0, 2.0, (0.80, 0.81, 0.82), SEEDS)
    b = Proven("baseline", cfg, 1.0, 1.0, 2.0, (0.70, 0.71, 0.72), SEEDS)
    c = Proven("baseline", cfg, 1.0, 1.0, 2.0, (0.79, 0.80, 0.81), SEEDS)
    assert margin(a, b)["separated"] and margin(a, b)["points"] == pytest.approx(10.0)
    assert not margin(a, c)["separated"]
    assert margin(a, Proven("x", cfg, None, None, 2.0, (), ())) is None


def test_the_model_to_ship_is_a_baseline_that_measured_more_accurate():
    cfg = SubnetConfig.uniform(1, 128, 2, 64, 256)
    won = Proven("candidate", cfg, 1.0, 1.0, 2.0, (0.50, 0.52), SEEDS[:2])
    hand = Proven("fewer layers", cfg, 1.5, 1.5, 2.0, (0.60, 0.61), SEEDS[:2])
    over = Proven("params", cfg, 2.5, 2.5, 2.0, (0.90, 0.91), SEEDS[:2])  # over the budget
    assert ship_role({"winner": won, "baseline": hand, "params_winner": over}) == "baseline"
    # A tie keeps the search's winner; nothing within the budget ships nothing.
    assert ship_role({"winner": hand, "baseline": hand, "params_winner": None}) == "winner"
    assert ship_role({"winner": over, "baseline": None, "params_winner": None}) is None


def test_the_accuracy_objective_is_the_saved_predictor_batched(tmp_path):
    import random

    from bfnas.errors import InputError
    from bfnas.search.accuracy_predictor import AccuracyPredictor
    from bfnas.search.predictor_file import AccuracyScope

    space, rng = load_space("minilm-l6"), random.Random(0)
    cfgs = [space.sample(rng) for _ in range(20)]
    acc = [0.5 + 0.4 * c.params(embeddings=False) / 12e6 for c in cfgs]
    scope = AccuracyScope(
        task_sha256="a" * 64,
        protocol_hash="p" * 16,
        protocol="standard",
        space="minilm-l6",
        weights_sha256="w" * 64,
        seq_len=64,
    )
    AccuracyPredictor(scope).fit(cfgs, acc).save(tmp_path / "m")
    fn = load_objective("accuracy", 64, space=space, accuracy_model=str(tmp_path / "m"))
    model = AccuracyPredictor.load(tmp_path / "m")
    assert fn.many(cfgs) == [float(v) for v in model.predict(cfgs)]
    assert fn(cfgs[0]) == fn.many(cfgs)[0]
    # Budgets at another sequence length than the fine-tunes': refused, naming the field.
    with pytest.raises(InputError, match="seq_len"):
        load_objective("accuracy", 128, space=space, accuracy_model=str(tmp_path / "m"))
    with pytest.raises(InputError, match="accuracy-model|accuracy_model"):
        load_objective("accuracy", 64, space=space)


def synthetic_rows(profile, space) -> LatencyRows:
    """Anchor-normalized rows of a known function (encoder params): a predictor's rows
    without a device."""
    rng = random.Random(0)
    cfgs = list({c.key(): c for c in (space.sample(rng) for _ in range(40))}.values())
    return LatencyRows(
        profile=profile.name,
        profile_hash=profile.hash(),
        space=space.name,
        seq_len=128,
        batch=1,
        label="normalized_ms",
        cfgs=cfgs,
        ms=np.array([c.params() / 1e6 for c in cfgs]),
    )


def params_search(store, profile, space, predictor, budget, verifier, rounds=1):
    return SearchJob(
        store=store,
        profile=profile,
        space=space,
        objective=load_objective("params"),
        budget=Budget(budget),
        settings=EvolutionSettings(population=16, parents=4, generations=3, seed=0),
        verify=2,
        rounds=rounds,
        verifier=verifier,
        predictor=predictor,
    )


def test_a_predictor_fitted_on_rows_verifies_in_their_unit(tmp_path):
    # Raw medians swing with the machine's speed; the anchor-normalized ones do not. A
    # search handed a predictor fitted on normalized rows must hold the device's normalized
    # latency to the budget, not the raw median beside it.
    hw = tmp_path / "hw.toml"
    hw.write_text(FAST_PROFILE)
    profile, space = load_profile(hw), load_space("bigger-faster")
    rows = synthetic_rows(profile, space)
    predictor = rows.fit(PredictorSettings(seed=0))
    assert predictor.metrics["label"] == "normalized_ms"
    budget = float(np.median(rows.ms))

    def verifier(cfg, run_id):  # the device at a slow moment: raw 3x the normalized
        ms = float(predictor.predict([cfg])[0])
        return Verification(MeasurementResult(Status.OK, median_ms=3 * ms), normalized_ms=ms)

    with LatencyStore(tmp_path / "lat.db") as store:
        found = params_search(store, profile, space, predictor, budget, verifier).run()
    assert found["unit"] == "normalized_ms"
    verified = [v for r in found["rounds"] for v in r["verified"]]
    assert verified and all(v["measured_ms"] <= budget and v["within_budget"] for v in verified)


def test_a_round_whose_picks_all_measured_over_searches_the_next_lower(tmp_path):
    # At the budget's edge the predictor underestimates (here: the device is 20 % slower
    # than every prediction, beyond the predictor's spread): round 1's picks all measure
    # over; round 2 searches under the budget lowered by that ratio and fits.
    hw = tmp_path / "hw.toml"
    hw.write_text(FAST_PROFILE)
    with redirect_stdout(io.StringIO()):
        argv = ["import", str(SEED_FILE), "--hw", str(hw), "--space", "bigger-faster"]
        assert main([*argv, "--db", str(tmp_path / "lat.db")]) == 0
    profile, space = load_profile(hw), load_space("bigger-faster")
    with LatencyStore(tmp_path / "lat.db") as store:
        rows = load_rows(store, profile.hash(), space.name)
        predictor = rows.fit(PredictorSettings(seed=0))
        budget = float(np.median(rows.ms))

        def verifier(cfg, run_id):
            ms = 1.2 * float(predictor.predict([cfg])[0])
            return Verification(MeasurementResult(Status.OK, median_ms=ms))

        found = params_search(store, profile, space, predictor, budget, verifier, rounds=2).run()
    first, second = found["rounds"]
    assert not any(v["within_budget"] for v in first["verified"])
    assert first["searched_under_ms"] == budget
    assert second["searched_under_ms"] == pytest.approx(budget / 1.2, rel=0.05)
    assert any(v["within_budget"] for v in second["verified"])
    assert found["best"]["within_budget"] and found["best"]["measured_ms"] <= budget
