"""`bfnas profile --until`: rounds chosen where the predictor is unsure, a stop on a lower
confidence bound, caps; and predictors that start from another profile's (`--prior`)."""

import json
import random

import numpy as np
import pytest
from conftest import SEED_FILE
from refusals import Refusal, check_refusal

from bfnas.bench.store.importer import parse_autotinybert
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.space.search_space import load_space
from bfnas.search.latency_predictor import LatencyPredictor, accuracy, estimate_design, load_prior
from bfnas.search.predictor_file import PredictorScope
from bfnas.search.until_settings import UntilSettings
from bfnas.search.until_trusted import CHOOSERS, Measured, UntilTrusted, share_lower_bound

SCOPE = PredictorScope("seed", "bigger-faster", 128)


@pytest.fixture(scope="module")
def seed_rows():
    rows = parse_autotinybert(SEED_FILE, load_space("bigger-faster"))
    idx = np.random.default_rng(1).permutation(len(rows))
    return [rows[i] for i in idx[:3000]]


class Replay:
    """Answers `measured()` from real stored latencies (the seed table's): a subnet counts as
    measured once a round chose it; each costs device time in proportion to its latency, as
    a timing loop of a fixed number of runs does."""

    def __init__(self, rows) -> None:
        self.by_key = {r.cfg.key(): r for r in rows}
        self.revealed: list = []

    def measured(self) -> Measured:
        return Measured(
            cfgs=[r.cfg for r in self.revealed],
            ms=np.array([r.ms for r in self.revealed]),
            keys={r.cfg.key() for r in self.revealed},
            device_s=float(sum(0.2 + 0.05 * r.ms for r in self.revealed)),
        )

    def run(self, until: UntilTrusted) -> None:
        while chosen := until.next_round():
            keys = [c.key() for c in chosen]
            assert len(set(keys)) == len(keys)
            assert not set(keys) & {r.cfg.key() for r in self.revealed}, "measured twice"
            self.revealed.extend(self.by_key[k] for k in keys)


def test_the_lower_bound_is_clopper_pearsons():
    assert share_lower_bound(60, 60) > 0.95 > share_lower_bound(59, 60)
    assert share_lower_bound(0, 10) == 0.0 == share_lower_bound(0, 0)
    # The same share from more rows is surer.
    assert share_lower_bound(19, 20) < share_lower_bound(95, 100) < share_lower_bound(950, 1000)
    assert share_lower_bound(95, 100, confidence=0.99) < share_lower_bound(95, 100)


def test_it_stops_once_the_bound_reaches_the_target_and_the_bound_holds(seed_rows):
    pool, held_out = seed_rows[:2000], seed_rows[2000:]
    replay = Replay(pool)
    until = UntilTrusted(
        UntilSettings(target=0.9, round_size=10),
        SCOPE,
        [r.cfg for r in pool],
        replay.measured,
    )
    replay.run(until)
    assert until.stop == "trusted"
    last = until.curve[-1]
    assert last.lower_bound >= 0.9 and last.rows == len(replay.revealed)
    assert all(a.rows < b.rows for a, b in zip(until.curve, until.curve[1:], strict=False))
    assert all(a.device_s < b.device_s for a, b in zip(until.curve, until.curve[1:], strict=False))
    assert len(replay.revealed) < 200  # the seed grid is easy: far fewer than the pool
    # What it promised holds on subnets it never saw.
    held = accuracy([r.ms for r in held_out], until.model.predict([r.cfg for r in held_out]))
    assert held["within_5pct"] >= 0.9
    # The summary a run keeps: the settings, why it stopped, the curve.
    summary = until.summary()["until"]
    assert summary["stop"] == "trusted" and summary["target"] == 0.9
    assert summary["curve"][-1] == last.to_dict()


def test_caps_stop_it_before_the_target(seed_rows):
    pool = seed_rows[:500]
    replay = Replay(pool)
    until = UntilTrusted(
        UntilSettings(target=0.999, tolerance=0.001, max_subnets=35),
        SCOPE,
        [r.cfg for r in pool],
        replay.measured,
    )
    replay.run(until)
    assert until.stop == "max-subnets" and len(replay.revealed) == 35
    assert until.curve[-1].rows == 35 and until.curve[-1].lower_bound < 0.999

    replay = Replay(pool)
    until = UntilTrusted(
        UntilSettings(target=0.999, tolerance=0.001, max_device_s=60.0),
        SCOPE,
        [r.cfg for r in pool],
        replay.measured,
    )
    replay.run(until)
    assert until.stop == "max-device-time" and len(until.curve) >= 2
    # It stopped at the first round past the cap, not later.
    assert until.curve[-1].device_s >= 60.0 > until.curve[-2].device_s


def test_disagreement_chooses_where_the_fold_models_disagree(seed_rows):
    train, pool = seed_rows[:60], seed_rows[60:1060]
    model = LatencyPredictor(SCOPE).fit([r.cfg for r in train], [r.ms for r in train])
    cands = [r.cfg for r in pool]
    rng = random.Random(0)
    spread = dict(zip([c.key() for c in cands], model.fold_disagreement(cands), strict=True))
    chosen = CHOOSERS["disagreement"](model, cands, [r.cfg for r in train], 10, rng)
    picked = CHOOSERS["random"](model, cands, [r.cfg for r in train], 10, rng)
    assert len({c.key() for c in chosen}) == 10
    assert np.mean([spread[c.key()] for c in chosen]) > 2 * np.mean(list(spread.values()))
    assert np.mean([spread[c.key()] for c in picked]) < np.mean([spread[c.key()] for c in chosen])
    covered = CHOOSERS["coverage"](model, cands, [r.cfg for r in train], 5, rng)
    assert len({c.key() for c in covered}) == 5


def test_design_chooses_what_pins_the_per_op_costs_down(seed_rows):
    train, pool = seed_rows[:20], seed_rows[20:1020]
    model = LatencyPredictor(SCOPE).fit([r.cfg for r in train], [r.ms for r in train])
    cands, seen = [r.cfg for r in pool], [r.cfg for r in train]

    def weighted(cfgs):  # the estimate's rows, weighted as its fit weights them
        return estimate_design(model.features(cfgs)) / model.predict(cfgs)[:, None]

    scale = np.abs(weighted(cands + seen)).max(0)

    def information(cfgs):  # log det of the (scaled, a little ridged) information matrix;
        rows = weighted(cfgs) / scale  # the uniform grid leaves some columns collinear
        return np.linalg.slogdet(rows.T @ rows + 1e-6 * np.eye(rows.shape[1]))[1]

    chosen = CHOOSERS["design"](model, cands, seen, 10, random.Random(0))
    assert len({c.key() for c in chosen}) == 10
    gain = information(seen + chosen) - information(seen)
    drawn = [CHOOSERS["random"](model, cands, seen, 10, random.Random(s)) for s in range(20)]
    assert all(gain > information(seen + d) - information(seen) for d in drawn)


def test_once_the_estimate_reaches_the_target_every_row_is_random(seed_rows):
    """Learn first, then prove: chosen rows cannot raise the bound, so a job at its target
    spends every row on the audit."""
    pool = seed_rows[:1500]
    replay = Replay(pool)
    until = UntilTrusted(
        UntilSettings(target=0.9, round_size=10, audit=0.5),
        SCOPE,
        [r.cfg for r in pool],
        replay.measured,
    )
    chosen_before, rounds = 0, []
    while chosen := until.next_round():
        now = len(until.summary()["until"]["chosen"])
        if until.curve:
            rounds.append((until.curve[-1].within >= 0.9, now - chosen_before))
        chosen_before = now
        replay.revealed.extend(replay.by_key[c.key()] for c in chosen)
    assert until.stop == "trusted"
    assert any(at for at, _ in rounds) and any(not at for at, _ in rounds)
    assert all(picked == 0 for at, picked in rounds if at)
    assert all(picked == 5 for at, picked in rounds if not at)


def test_settings_refuse_what_cannot_work():
    for bad in (
        {"target": 1.0},
        {"target": 0.0},
        {"target": 0.9, "tolerance": 0},
        {"target": 0.9, "choose": "psychic"},
        {"target": 0.9, "first": 5},
        {"target": 0.9, "max_device_s": -1.0},
    ):
        with pytest.raises(InputError):
            UntilSettings(**bad)


# -- priors ------------------------------------------------------------------------------
def other_device(rows, scale=0.4, power=1.1, seed=0):
    """The same subnets on a device that is faster and scales differently with size (a
    smooth transform of real latencies, with 1 % noise): what a prior has to bridge."""
    rng = np.random.default_rng(seed)
    return [scale * r.ms**power * (1 + 0.01 * rng.standard_normal()) for r in rows]


def test_a_prior_fits_a_new_device_from_few_rows(seed_rows, tmp_path):
    prior = LatencyPredictor(SCOPE).fit(
        [r.cfg for r in seed_rows[:500]], [r.ms for r in seed_rows[:500]]
    )
    prior.save(tmp_path / "prior")
    loaded = load_prior(tmp_path / "prior", "bigger-faster", 128, 1)
    new_scope = PredictorScope("other", "bigger-faster", 128)
    few, held = seed_rows[500:520], seed_rows[1000:3000]
    few_ms, held_ms = other_device(few, seed=1), other_device(held, seed=2)
    with_prior = LatencyPredictor(new_scope, prior=loaded).fit([r.cfg for r in few], few_ms)
    scratch = LatencyPredictor(new_scope).fit([r.cfg for r in few], few_ms)
    a = accuracy(held_ms, with_prior.predict([r.cfg for r in held]))
    b = accuracy(held_ms, scratch.predict([r.cfg for r in held]))
    assert a["within_10pct"] >= 0.95 and a["within_10pct"] > b["within_10pct"]
    assert with_prior.prior is not None and with_prior.prior_choice["used"]
    assert 1.0 < with_prior.estimate_coef[1] < 1.2  # the slope of the transform, recovered
    # Saved with its prior, it predicts the same after loading.
    with_prior.save(tmp_path / "new")
    again = LatencyPredictor.load(tmp_path / "new")
    cfgs = [r.cfg for r in held[:50]]
    assert np.allclose(again.predict(cfgs), with_prior.predict(cfgs))
    assert (tmp_path / "new" / "prior" / "model.txt").is_file()
    # A prior that predicts the new device worse than a fit from scratch is not kept.
    # (Here a device whose latency is a cost per layer: the analytic estimate fits it at once.)
    wrong = [3.0 * r.cfg.layers for r in few]
    declined = LatencyPredictor(new_scope, prior=loaded).fit([r.cfg for r in few], wrong)
    assert declined.prior is None and declined.prior_choice["used"] is False
    # A model fitted on a prior is not a prior itself: one level only.
    with pytest.raises(InputError, match="prior"):
        load_prior(tmp_path / "new", "bigger-faster", 128, 1)
    with pytest.raises(InputError, match="scope.space"):
        load_prior(tmp_path / "prior", "minilm-l6", 128, 1)


# -- the command -------------------------------------------------------------------------
def until_argv(space, hw, *extra):
    return [
        "profile",
        "--hw",
        str(hw),
        "--space",
        str(space),
        "--db",
        "{tmp}/lat.db",
        "--artifacts",
        "{tmp}/art",
        *extra,
    ]


def test_profile_until_measures_in_rounds_and_resumes(
    tmp_path, tiny_space_file, fast_profile_file, capsys
):
    argv = [
        a.replace("{tmp}", str(tmp_path))
        for a in until_argv(
            tiny_space_file,
            fast_profile_file,
            "--until",
            "0.8",  # 10 of 10 within bound it at 74 %: it takes rounds
            "--tolerance",
            "0.5",
            "--max-subnets",
            "30",
            "--round-size",
            "2",
            "--json",
        )
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    until = out["until"]
    assert until["stop"] == "trusted", until
    last = until["curve"][-1]
    assert last["lower_bound"] >= 0.8 and last["device_s"] > 0 and len(until["curve"]) >= 2
    assert last["rows"] == out["ok"]  # the trusted rows, all fitted
    with LatencyStore(tmp_path / "lat.db") as store:
        rows = store.measurements()
        (summary,) = [
            json.loads(r["summary"])
            for r in store.db.execute("SELECT summary FROM runs WHERE kind = 'profile'")
        ]
    assert len(rows) == out["ok"] + out["unstable"] + out["failed"] >= 14
    assert all(r.device_s and r.device_s > 0 for r in rows)
    assert summary["until"]["curve"] == until["curve"]
    # The report draws the job's estimate against device time.
    assert (
        main(["report", "--db", str(tmp_path / "lat.db"), "--out", str(tmp_path / "r"), "--json"])
        == 0
    )
    plots = json.loads(capsys.readouterr().out)["plots"]
    assert any(p.split("/")[-1].startswith("until-") for p in plots)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Measuring until trusted" in page and f"{last['rows']} trusted subnets" in page
    # Again: what is stored is enough already; nothing more is measured.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["until"]["stop"] == "trusted" and again["ok"] == 0
    with LatencyStore(tmp_path / "lat.db") as store:
        assert len(store.measurements()) == len(rows)


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    """A predictor folder of the bigger-faster space (another space than the tiny one)."""
    rows = parse_autotinybert(SEED_FILE, load_space("bigger-faster"))[:200]
    folder = tmp_path_factory.mktemp("prior") / "pred"
    LatencyPredictor(SCOPE).fit([r.cfg for r in rows], [r.ms for r in rows]).save(folder)
    return folder


def _copy_model(src):
    def make(path):
        path.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            (path / f.name).write_bytes(f.read_bytes())

    return make


def _damaged(src):
    def make(path):
        _copy_model(src)(path)
        meta = json.loads((path / "predictor.json").read_text())
        meta["scope"]["seq_len"] = "long"
        (path / "predictor.json").write_text(json.dumps(meta))

    return make


def refusals(space, hw, model):
    return [
        Refusal("until-one", until_argv(space, hw, "--until", "1"), "--until"),
        Refusal("until-zero", until_argv(space, hw, "--until", "0"), "--until"),
        Refusal("until-negative", until_argv(space, hw, "--until", "-0.5"), "--until"),
        Refusal(
            "tolerance", until_argv(space, hw, "--until", "0.9", "--tolerance", "2"), "--tolerance"
        ),
        Refusal(
            "round-size",
            until_argv(space, hw, "--until", "0.9", "--round-size", "0"),
            "--round-size",
        ),
        Refusal(
            "choose", until_argv(space, hw, "--until", "0.9", "--choose", "psychic"), "--choose"
        ),
        Refusal(
            "device-minutes",
            until_argv(space, hw, "--until", "0.9", "--max-device-minutes", "0"),
            "--max-device-minutes",
        ),
        Refusal(
            "prior-missing",
            until_argv(space, hw, "--until", "0.9", "--prior", "{tmp}/nothing"),
            "{tmp}/nothing",
        ),
        Refusal(
            "prior-other-space",
            until_argv(space, hw, "--until", "0.9", "--prior", "{tmp}/pred"),
            "{tmp}/pred/predictor.json: scope.space",
            {"pred": _copy_model(model)},
        ),
        Refusal(
            "prior-damaged",
            until_argv(space, hw, "--until", "0.9", "--prior", "{tmp}/pred"),
            "{tmp}/pred/predictor.json: scope.seq_len",
            {"pred": _damaged(model)},
        ),
    ]


@pytest.mark.parametrize("case_id", [r.id for r in refusals("s", "h", None)])
def test_bad_until_and_prior_input_is_one_line(
    case_id, tmp_path, tiny_space_file, fast_profile_file, seed_model, capsys, monkeypatch
):
    (case,) = [
        r for r in refusals(tiny_space_file, fast_profile_file, seed_model) if r.id == case_id
    ]
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_predictor_fit_refuses_a_prior_of_another_space(tmp_path, capsys, monkeypatch):
    seed = parse_autotinybert(SEED_FILE, load_space("bigger-faster"))[:100]
    other = PredictorScope("x", "minilm-l6", 128)
    LatencyPredictor(other).fit([r.cfg for r in seed], [r.ms for r in seed]).save(tmp_path / "pred")
    head = tmp_path / "seed.tsv"
    head.write_text("".join(SEED_FILE.read_text().splitlines(keepends=True)[1:80]))
    assert (
        main(
            [
                "import",
                "--format",
                "autotinybert",
                str(head),
                "--hw",
                "seed-cpu-fp32",
                "--space",
                "bigger-faster",
                "--db",
                str(tmp_path / "lat.db"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    case = Refusal(
        "fit-prior-other-space",
        [
            "predictor",
            "fit",
            "--hw",
            "seed-cpu-fp32",
            "--db",
            "{tmp}/lat.db",
            "--out",
            "{tmp}/new",
            "--prior",
            "{tmp}/pred",
        ],
        "{tmp}/pred/predictor.json: scope.space: a prior of space 'minilm-l6'",
    )
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_profile_until_with_a_prior_of_another_profile(
    tmp_path, tiny_space_file, fast_profile_file, capsys
):
    """INT8 measured first, its predictor the prior of FP32 on the same subnets' space."""
    db = str(tmp_path / "lat.db")

    def profile(hw, *how):
        return [a.replace("{tmp}", str(tmp_path)) for a in until_argv(tiny_space_file, hw, *how)]

    first = profile(fast_profile_file, "--samples", "20", "--json")
    assert main(first) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "test-cpu-int8",
                "--db",
                db,
                "--out",
                str(tmp_path / "pred"),
                "--folds",
                "2",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    fp32 = tmp_path / "fp32.toml"
    fp32.write_text(
        fast_profile_file.read_text()
        .replace('name = "test-cpu-int8"', 'name = "test-cpu-fp32"')
        .replace('precision = "int8"', 'precision = "fp32"')
    )
    how = ("--until", "0.5", "--tolerance", "0.5", "--max-subnets", "20", "--round-size", "2")
    argv = profile(fp32, *how, "--prior", str(tmp_path / "pred"), "--json")
    assert main(argv) == 0
    until = json.loads(capsys.readouterr().out)["until"]
    assert until["first"] == 10  # the default, with a prior as without
    assert until["curve"][0]["rows"] >= 10 and until["stop"] in ("trusted", "max-subnets")
    # The new profile's predictor, fitted from its few rows on the prior, saves the prior too.
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "test-cpu-fp32",
                "--db",
                db,
                "--out",
                str(tmp_path / "new"),
                "--folds",
                "2",
                "--prior",
                str(tmp_path / "pred"),
                "--json",
            ]
        )
        == 0
    )
    fitted = json.loads(capsys.readouterr().out)
    choice = fitted["prior_choice"]
    # Kept only where it beat a fit from scratch out of fold; either way the choice is saved.
    assert choice["used"] == (choice["oof_mape_with_prior"] <= choice["oof_mape_from_scratch"])
    new = LatencyPredictor.load(tmp_path / "new")
    assert new.prior_choice == choice and (new.prior is not None) == choice["used"]
