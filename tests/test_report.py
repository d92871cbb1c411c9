"""`bfnas report` reads like the terminal: architectures in the compact notation, statuses in
words, every axis and accuracy with its unit (and protocol), and with `--accuracy-db` the
model to ship from the latest accuracy search. The stores are made by hand here (no device,
no fine-tune): a latency store with a few measurements and a search run, an accuracy store
with an accuracy-search run holding the result dict `AccuracySearch.run` returns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import bfnas.search.report as report_module
import bfnas.search.ship_report as ship_module
from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.report import objective_axis

PROFILE = "test-cpu-int8"
BUDGET = 2.0
WINNER = SubnetConfig.uniform(2, 256, 4, 256, 512)
BIGGEST = SubnetConfig.uniform(2, 320, 5, 320, 640)
NARROWER = SubnetConfig.uniform(3, 192, 3, 192, 384)
FEWER = SubnetConfig.uniform(1, 384, 6, 384, 768)
OTHER = SubnetConfig.uniform(1, 128, 2, 128, 256)
SEEDS = [0, 1, 2]


def ok(ms: float, **fields) -> MeasurementResult:
    return MeasurementResult.from_dict(
        {"status": "ok", "median_ms": ms, "mean_ms": ms, "runs": 10, "samples_ms": [ms] * 10}
        | fields
    )


def verified(cfg: SubnetConfig, objective: float, predicted: float, measured: float) -> dict:
    return {
        "arch": cfg.to_dict(),
        "objective": objective,
        "predicted_ms": predicted,
        "measured_ms": measured,
        "median_ms": measured,
        "error": measured / predicted - 1,
        "within_budget": measured <= BUDGET,
    }


def search_result() -> dict:
    """What `SearchJob.run` keeps with a search run (the fields the report reads)."""
    ver = [
        verified(BIGGEST, float(BIGGEST.params(embeddings=False)), 1.9, 2.2),
        verified(WINNER, float(WINNER.params(embeddings=False)), 1.6, 1.7),
    ]
    return {
        "best": ver[1],
        "rounds": [
            {
                "round": 1,
                "front": [
                    {"arch": c.to_dict(), "objective": float(c.params(embeddings=False)), **p}
                    for c, p in ((OTHER, {"predicted_ms": 0.8}), (WINNER, {"predicted_ms": 1.6}))
                ],
                "verified": ver,
                "history": [
                    {"generation": g, "best_objective": 1e6 + g, "mean_objective": 5e5 + g}
                    for g in range(4)
                ],
            }
        ],
        "profile": PROFILE,
        "space": "tiny",
        "budget": {"max_ms": BUDGET, "min_ms": None},
        "mode": "best",
        "objective_name": "params",
        "objective_unit": "encoder parameters",
        "unit": "median_ms",
        "unit_text": "raw median ms on the device",
        "evaluated": 120,
        "seconds": 0.5,
    }


@pytest.fixture
def latency_db(tmp_path: Path) -> Path:
    db = tmp_path / "lat.db"
    with LatencyStore(db) as store:
        store.add_profile(PROFILE, {"name": PROFILE}, "h1")
        for i in range(8):
            store.add_measurement(
                "h1", SubnetConfig.uniform(1, 64 * (i + 1), 2, 64, 128), "tiny", ok(0.5 + i / 4)
            )
        for i, reason in enumerate(("median CI too wide: ±3.1% > ±2.0%", "median CI too wide")):
            store.add_measurement(
                "h1",
                SubnetConfig.uniform(2, 64 * (i + 1), 2, 64, 128),
                "tiny",
                ok(1.0, status="unstable", reason=reason),
            )
        store.add_measurement(
            "h1",
            SubnetConfig.uniform(3, 64, 2, 64, 128),
            "tiny",
            MeasurementResult.from_dict(
                {"status": "failed", "reason": "build failed: out of memory"}
            ),
        )
        run = store.start_run("h1", "search", {"space": "tiny"})
        store.finish_run(run, "finished", {"result": search_result()})
    return db


def proven(
    role: str, cfg: SubnetConfig, ms: float, accuracies: list[float], within: bool = True
) -> dict:
    """One model dict as `Proven.to_dict` writes it."""
    mean = sum(accuracies) / len(accuracies)
    std = (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
    return {
        "role": role,
        "arch": cfg.to_dict(),
        "arch_text": str(cfg),
        "encoder_params": cfg.params(),
        "latency_ms": ms,
        "median_ms": ms,
        "budget_used": ms / BUDGET,
        "within_budget": within,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "accuracy_per_seed": accuracies,
        "seeds": SEEDS,
        "predicted_accuracy": None,
    }


def accuracy_result() -> dict:
    winner = proven("candidate", WINNER, 1.7, [0.852, 0.848, 0.856])
    over = proven("candidate", BIGGEST, 2.2, [0.86, 0.861, 0.859], within=False)
    narrower = proven("narrower", NARROWER, 1.8, [0.830, 0.836, 0.833])
    fewer = proven("fewer layers", FEWER, 1.5, [0.811, 0.815, 0.809])
    params = proven("params", SubnetConfig.uniform(2, 288, 4, 288, 576), 1.95, [0.84, 0.85, 0.86])
    return {
        "budget_ms": BUDGET,
        "unit": "median_ms",
        "unit_text": "raw median ms on the device",
        "protocol": "standard",
        "protocol_hash": "abc123",
        "protocol_text": "3 epoch(s) over all of train, lr 0.0001, batch 32, max_len 64",
        "seeds": SEEDS,
        "winner": winner,
        "candidates": [winner, over],
        "params_winner": params,
        "baseline": narrower,
        "hand_scaled": {"fewer layers": fewer, "narrower": narrower},
        "margins": {
            "baseline": {"points": 1.9, "spread_points": 0.35, "separated": True},
            "params": {"points": 0.4, "spread_points": 0.6, "separated": False},
        },
        "model": {"path": "bfnas-demo/model", "accuracy_fp32": 0.851, "accuracy_int8": 0.845},
    }


@pytest.fixture
def accuracy_db(tmp_path: Path) -> Path:
    db = tmp_path / "acc.db"
    with AccuracyStore(db) as store:
        run = store.start_run("accuracy-search", {"budget_ms": BUDGET, "protocol": "standard"})
        store.finish_run(run, "finished", {"result": accuracy_result()})
        # A later run that was interrupted: the report shows the finished one.
        late = store.start_run("accuracy-search", {"budget_ms": BUDGET})
        store.finish_run(late, "interrupted", {"result": None})
    return db


@pytest.fixture
def axes(monkeypatch) -> dict[str, tuple[str, str]]:
    """Every plot the report saves, by file name: its first axes' (x label, y label)."""
    seen: dict[str, tuple[str, str]] = {}
    save = report_module.save_figure

    def record(fig, folder, name):
        ax = fig.axes[0]
        seen[name] = (ax.get_xlabel(), ax.get_ylabel())
        return save(fig, folder, name)

    monkeypatch.setattr(report_module, "save_figure", record)
    monkeypatch.setattr(ship_module, "save_figure", record)
    return seen


def report(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["report", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def test_the_report_reads_like_the_terminal(capsys, tmp_path, latency_db, axes):
    code, facts, _ = report(capsys, "--db", str(latency_db), "--out", str(tmp_path / "r"))
    assert code == 0
    page = Path(facts["report"]).read_text()
    # Architectures in the compact notation, never as JSON.
    assert f"best {WINNER}: objective" in page and str(BIGGEST) in page
    assert '"layers"' not in page and "&quot;layers&quot;" not in page
    # Statuses in words, the unstable ones with why.
    assert "8 trusted, 2 unstable (median CI too wide), 1 failed" in page
    assert "&quot;ok&quot;" not in page and '{"ok"' not in page
    # The objective names its unit in the table and on both search plots' axes.
    assert "<th>params: encoder parameters</th>" in page
    front = axes["search-1-front.png"]
    assert front == ("latency (raw median ms on the device)", "params: encoder parameters")
    assert axes["search-1-progress.png"][1] == "params: encoder parameters"
    assert "The model to ship" not in page  # no --accuracy-db


def test_the_model_to_ship(capsys, tmp_path, latency_db, accuracy_db, axes):
    out = tmp_path / "r"
    code, facts, _ = report(
        capsys, "--db", str(latency_db), "--accuracy-db", str(accuracy_db), "--out", str(out)
    )
    assert code == 0
    page = Path(facts["report"]).read_text()
    ship = page[page.index("<h2>The model to ship</h2>") : page.index("<h2>Measurements</h2>")]
    # From the finished run, not the later interrupted one; budget and unit named.
    assert "run 1 in" in ship and "1 later run(s) were interrupted" in ship
    assert "budget of 2.000 ms (raw median ms on the device)" in ship
    # The protocol and the seeds behind every accuracy.
    assert "protocol <b>standard</b> (3 epoch(s) over all of train" in ship
    assert "seeds 0, 1, 2" in ship and "dev accuracy, % (protocol standard)" in ship
    # Winner, baseline (its family) and params winner side by side.
    assert "baseline (hand-scaled: narrower)" in ship and "params winner" in ship
    for cfg in (WINNER, NARROWER, FEWER):
        assert str(cfg) in ship
    assert "85.20 ± 0.40 % (seeds 0, 1, 2)" in ship
    assert "1.700 ms" in ship and "85% (within budget)" in ship
    # The margins, with their spread and whether the ranges are apart.
    assert "+1.90 ± 0.35 points" in ship and "ranges are apart" in ship
    assert "+0.40 ± 0.60 points" in ship and "ranges overlap" in ship
    # The shipped folder's own accuracies.
    assert "bfnas-demo/model" in ship and "in %: FP32 85.10, INT8 84.50 (INT8 -0.60" in ship
    assert '"layers"' not in page and "&quot;" not in ship
    # The plot: accuracy against measured latency, both axes named, embedded.
    x, y = axes["ship-1.png"]
    assert x == "measured latency on the device (raw median ms on the device)"
    assert y.startswith('dev accuracy (%), protocol "standard"') and "3 seed(s)" in y
    assert str(out / "ship-1.png") in facts["plots"]
    assert page.count("data:image/png;base64,") == len(facts["plots"])


def test_an_accuracy_store_without_an_accuracy_search_says_so(capsys, tmp_path, latency_db):
    acc = tmp_path / "acc.db"
    AccuracyStore(acc).close()
    code, facts, _ = report(
        capsys, "--db", str(latency_db), "--accuracy-db", str(acc), "--out", str(tmp_path / "r")
    )
    assert code == 0
    page = Path(facts["report"]).read_text()
    assert f"<p>{acc} holds no accuracy search yet: no model to ship from it.</p>" in page
    assert not any("ship-" in p for p in facts["plots"])


def truncated(path: Path) -> None:
    with AccuracyStore(path) as store:
        store.start_run("accuracy-search", {"pad": "x" * 20000})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 // 4096 * 4096])


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.write_text("sentence\tlabel\n" * 50), "not an SQLite file"),
        (truncated, "damaged (truncated: "),
        (lambda p: LatencyStore(p).close(), "a bfnas latency store, not an accuracy store"),
        (None, "no such store"),
    ],
    ids=["not-sqlite", "truncated", "a-latency-store", "missing"],
)
def test_a_bad_accuracy_db_is_refused_in_one_line(capsys, tmp_path, latency_db, make, needle):
    acc = tmp_path / "acc" / "accuracy.db"
    acc.parent.mkdir()
    if make is not None:
        make(acc)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in acc.parent.iterdir()}
    out = tmp_path / "r"
    code, _, err = report(
        capsys, "--db", str(latency_db), "--accuracy-db", str(acc), "--out", str(out)
    )
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"bfnas: error: --accuracy-db: {acc}: ") and needle in err, err
    assert not out.exists()  # nothing written
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in acc.parent.iterdir()}
    assert after == before  # the store as it was


def test_an_objective_axis_names_its_unit():
    assert objective_axis({"objective_name": "params", "objective_unit": "encoder parameters"}) == (
        "params: encoder parameters",
        1.0,
    )
    # An accuracy is shown in %, saying how it was obtained.
    label, scale = objective_axis({"objective_name": "task"})
    assert (
        scale == 100 and label.startswith("task: dev accuracy (one-shot") and label.endswith(", %")
    )
    # A run stored without its objective says so (the demo's search, say).
    assert objective_axis({}) == ("objective (not recorded)", 1.0)
    assert objective_axis({"objective_name": "mypkg:score"})[0] == "mypkg:score (unit not recorded)"
