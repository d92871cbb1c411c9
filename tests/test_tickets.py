"""Lottery tickets (`bfnas tickets find`): the masks' arithmetic, a mask held through
training, and IMP with rewinding run for real on a tiny BERT checkpoint and a small offline
task, each ticket written as a model folder, measured and stored; a rerun resumes; bad input
is refused in one line with nothing written."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from conftest import FAST_PROFILE
from refusals import Refusal, check_refusal
from test_task_train import write_supernet

from bfnas.models.prune.masks import (
    full_masks,
    imp_schedule,
    load_masks,
    magnitude_masks,
    masks_sha256,
    prunable,
    random_masks,
    save_masks,
    sparsity,
)
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings, finetune_classifier, prepare_task
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.task_classifier import build_classifier
from bfnas.models.train.task_data import TaskDataSettings, build_task

PROFILE = FAST_PROFILE + "min_cpu_share = 0.0\n"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in this process (a module fixture has no capsys)."""
    from bfnas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_magnitude_pruning_removes_the_smallest_surviving_weights_exactly():
    torch.manual_seed(0)
    weights = {"a": torch.randn(8, 8), "b": torch.randn(4, 16)}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    half = magnitude_masks(weights, masks, 0.5)
    assert sparsity(half) == pytest.approx(0.5)
    kept = torch.cat([weights[n][half[n]].abs() for n in weights])
    gone = torch.cat([weights[n][~half[n]].abs() for n in weights])
    assert gone.max() <= kept.min()  # global: one threshold over both tensors
    # A later round prunes only among the survivors, whatever the weights say now.
    flipped = {n: -w * 10 + 1 for n, w in weights.items()}
    more = magnitude_masks(flipped, half, 0.75)
    assert sparsity(more) == pytest.approx(0.75)
    assert all(bool((more[n] <= half[n]).all()) for n in weights)


def test_a_random_mask_has_the_sparsity_and_differs_from_magnitudes():
    masks = {"a": torch.ones(32, 32, dtype=torch.bool)}
    r = random_masks(masks, 0.7, seed=0)
    assert sparsity(r) == pytest.approx(0.7, abs=1e-3)
    assert masks_sha256(r) == masks_sha256(random_masks(masks, 0.7, seed=0))
    assert masks_sha256(r) != masks_sha256(random_masks(masks, 0.7, seed=1))


def test_the_schedule_stops_at_every_requested_sparsity():
    levels = imp_schedule([0.5, 0.3], 0.2)
    assert levels == sorted(levels) and levels[-1] == 0.5 and 0.3 in levels
    remaining = [1.0] + [1 - s for s in levels]
    # No round prunes more than the fraction of what survives.
    assert all(b / a >= 0.8 - 1e-9 for a, b in zip(remaining, remaining[1:], strict=False))


def test_masks_round_trip_and_their_digest_sees_one_bit(tmp_path):
    masks = random_masks({"x": torch.ones(10, 10, dtype=torch.bool)}, 0.5, seed=3)
    save_masks(masks, tmp_path / "m.safetensors")
    back = load_masks(tmp_path / "m.safetensors")
    assert masks_sha256(back) == masks_sha256(masks)
    back["x"][0, 0] = ~back["x"][0, 0]
    assert masks_sha256(back) != masks_sha256(masks)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_supernet):
    root = tmp_path_factory.mktemp("tickets")
    build_task(root / "task", TaskDataSettings(classes=3, max_per_class=40))
    (root / "fast.toml").write_text(PROFILE)
    return {
        "root": root,
        "task": root / "task",
        "ckpt": write_supernet(root / "ckpt", tiny_supernet),
        "profile": root / "fast.toml",
    }


def test_a_mask_is_held_through_training(tiny, tiny_supernet):
    cfg = SubnetConfig.uniform(2, 128, 4, 128, 256)
    settings = FinetuneSettings(epochs=1, lr=1e-3, batch=16, max_len=32)
    data = prepare_task(tiny_supernet, cfg, read_task(tiny["task"]), tiny["ckpt"], settings)
    template = full_masks(build_classifier(tiny_supernet, cfg, 3))
    masks = random_masks(template, 0.6, seed=0)
    model, _ = finetune_classifier(tiny_supernet, cfg, data, settings, masks=masks)
    start = build_classifier(tiny_supernet, cfg, 3)
    for name, p in prunable(model).items():
        assert bool((p[~masks[name]] == 0).all()), name
        moved = p[masks[name]] != dict(start.named_parameters())[name][masks[name]]
        assert bool(moved.any()), f"{name}: the survivors did not train"


def find_argv(t: dict, out: Path, *extra: str) -> list[str]:
    return [
        "tickets",
        "find",
        "--checkpoint",
        str(t["ckpt"]),
        "--task-dir",
        str(t["task"]),
        "--sparsity",
        "0.3,0.5",
        "--prune-fraction",
        "0.3",
        "--protocol",
        "demo",
        "--epochs",
        "1",
        "--max-len",
        "32",
        "--hw",
        str(t["profile"]),
        "--out",
        str(out),
        "--artifacts",
        str(t["root"] / "artifacts"),
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def found(tiny):
    out = tiny["root"] / "run"
    code, stdout, stderr = run_cli(find_argv(tiny, out, "--control", "random"))
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_imp_finds_tickets_at_each_sparsity_written_and_measured(found):
    out, r = found
    imp = {t["name"]: t for t in r["tickets"] if t["kind"] == "imp"}
    assert set(imp) == {"imp-30", "imp-50"}
    for name, want in (("imp-30", 0.3), ("imp-50", 0.5)):
        t = imp[name]
        # Measured from the exported model.onnx, not taken from the mask.
        assert t["sparsity"] == pytest.approx(want, abs=2e-3)
        assert 0 <= t["accuracy_fp32"] <= 1 and 0 <= t["accuracy_int8"] <= 1
        assert t["latency_ms"] > 0 and t["structured"] is False
        folder = Path(t["path"])
        for f in ("model.onnx", "model.int8.onnx", "model.json", "README.md"):
            assert (folder / f).is_file(), f
        card = json.loads((folder / "model.json").read_text())
        assert card["ticket"]["mask_sha256"] == t["mask_sha256"]
        # The card says what the measurement showed against the dense model, not a belief.
        speed = card["ticket"]["speed"]
        assert speed["vs_dense"] > 0 and f"{speed['vs_dense']:.2f}x" in speed["text"]
        readme = (folder / "README.md").read_text()
        assert "## Lottery ticket" in readme and speed["text"] in readme
    # The rounds: dense, then each round pruning 30 % of the survivors until 0.3 and 0.5.
    levels = [round(x["sparsity"], 6) for x in r["rounds"]]
    assert levels == [0.0, *imp_schedule([0.3, 0.5], 0.3)]
    assert r["dense"]["sparsity"] < 0.01 and r["dense"]["latency_ms"] > 0
    # IMP's masks nest: the 50 % ticket keeps only weights the 30 % one kept.
    rounds = out / "rounds"
    by_level = {round(x["sparsity"], 6): x["round"] for x in r["rounds"]}
    m30 = load_masks(rounds / f"masks-{by_level[0.3]:02d}.safetensors")
    m50 = load_masks(rounds / f"masks-{by_level[0.5]:02d}.safetensors")
    assert all(bool((m50[n] <= m30[n]).all()) for n in m30)
    assert "no faster" in r["speed"] or "faster" in r["speed"] or "slower" in r["speed"]


def test_the_random_control_and_the_store_keep_each_tickets_provenance(found):
    out, r = found
    rand = {t["name"]: t for t in r["tickets"] if t["kind"] == "random"}
    imp = {t["name"]: t for t in r["tickets"] if t["kind"] == "imp"}
    assert set(rand) == {"random-30", "random-50"}
    assert rand["random-50"]["sparsity"] == pytest.approx(0.5, abs=2e-3)
    assert rand["random-50"]["mask_sha256"] != imp["imp-50"]["mask_sha256"]
    db = sqlite3.connect(out / "latency.db")
    rows = db.execute("SELECT role, status, median_ms, samples, artifact FROM measurements")
    stored = {json.loads(a)["ticket"]["mask_sha256"]: (role, ms, s) for role, _, ms, s, a in rows}
    # Every written model's INT8 file, as role "ticket" (out of the predictor's samples).
    assert len(stored) == 1 + len(r["tickets"])  # the dense model has no mask: one None
    for t in r["tickets"]:
        role, ms, samples = stored[t["mask_sha256"]]
        assert role == "ticket" and ms == pytest.approx(t["latency_ms"])
        assert len(json.loads(samples)) >= 10  # the raw samples kept


def test_a_rerun_resumes_without_fine_tuning_again(tiny, found, monkeypatch):
    out, first = found
    # Interrupted after round 2 finished: its record and the last ticket's folder gone.
    last = first["rounds"][-1]
    (out / "rounds" / f"round-{last['round']:02d}.json").unlink()
    shutil.rmtree(out / "models" / last["ticket"])
    import bfnas.models.train.finetune as finetune

    calls = []
    real = finetune.finetune_classifier
    monkeypatch.setattr(
        finetune, "finetune_classifier", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    code, stdout, stderr = run_cli(find_argv(tiny, out, "--control", "random"))
    assert code == 0, stderr
    again = json.loads(stdout)
    assert len(calls) == 1  # only the interrupted round
    assert [t["mask_sha256"] for t in again["tickets"]] == [
        t["mask_sha256"] for t in first["tickets"]
    ]


def not_bert(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "tokenizer.json").write_text("{}")


def test_bad_input_is_refused_in_one_line_with_nothing_written(
    tiny, found, tmp_path, capsys, monkeypatch
):
    out, _ = found
    base = find_argv(tiny, Path("{tmp}/new"))
    rows = [
        Refusal("sparsity-one", [*base, "--sparsity", "0.5,1"], "--sparsity"),
        Refusal("sparsity-text", [*base, "--sparsity", "half"], "--sparsity"),
        Refusal("fraction", [*base, "--prune-fraction", "1.5"], "--prune-fraction"),
        Refusal(
            "not-bert",
            [*base, "--checkpoint", "{tmp}/ck"],
            "model_type",
            files={"ck": not_bert},
        ),
        Refusal("no-task", [*base, "--task-dir", "{tmp}/none"], "none"),
        Refusal(
            "other-folder",
            [*base, "--out", "{tmp}/full"],
            "--out",
            files={"full/notes.txt": "someone's files"},
        ),
    ]
    for row in rows:
        check_refusal(row, tmp_path / row.id, capsys, monkeypatch)
    # An output folder of another run (another prune fraction): refused, nothing changed.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    argv = find_argv(tiny, out, "--prune-fraction", "0.4")
    code, _, stderr = run_cli(argv)
    assert code == 2 and "prune_fraction" in stderr and stderr.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_structured_ticket_shrinks_to_a_dense_model_that_computes_the_same(tiny_supernet):
    from bfnas.models.prune.masks import apply_masks
    from bfnas.models.prune.structured import shrink, structured_masks, units_of

    d = tiny_supernet.dims
    cfg = SubnetConfig.uniform(d.layers, d.hidden, 4, d.qkv, d.ffn)
    head_size = d.qkv // 4
    bert = tiny_supernet.extract(cfg)
    full = full_masks(bert)
    masks = structured_masks(dict(bert.named_parameters()), full, 0.5, head_size)
    assert sparsity(masks) == pytest.approx(0.5, abs=0.03)
    units = units_of(masks, head_size)
    assert all(sum(h) >= 1 for h in units.heads) and all(sum(n) >= 1 for n in units.neurons)
    assert any(not all(h) for h in units.heads), "no head pruned"
    # A later round prunes only among the surviving units.
    more = structured_masks(dict(bert.named_parameters()), masks, 0.7, head_size)
    assert all(bool((more[n] <= masks[n]).all()) for n in masks)
    small = shrink(bert, masks, head_size)
    apply_masks(bert, masks)
    ids = torch.randint(0, 1000, (2, 12))
    att = torch.ones_like(ids)
    att[1, 8:] = 0
    types = torch.zeros_like(ids)
    with torch.no_grad():
        want, got = bert(ids, att, types), small(ids, att, types)
    assert torch.allclose(want, got, atol=1e-5)
    kept = sum(p.numel() for p in prunable(small).values())
    total = sum(m.numel() for m in masks.values())
    assert kept == total - sum(int((~m).sum()) for m in masks.values())
    assert small.cfg.heads == tuple(sum(h) for h in units.heads)


def test_structured_tickets_are_smaller_dense_models_measured_like_subnets(tiny):
    out = tiny["root"] / "structured"
    code, stdout, stderr = run_cli(find_argv(tiny, out, "--structured", "--control", "random"))
    assert code == 0, stderr
    r = json.loads(stdout)
    dense = SubnetConfig.from_dict(
        json.loads((out / "models" / "dense" / "model.json").read_text())["arch"]
    )
    names = ["structured-30", "structured-50", "random-structured-30", "random-structured-50"]
    assert [t["name"] for t in r["tickets"]] == names
    for t, want in zip(r["tickets"], (0.3, 0.5, 0.3, 0.5), strict=True):
        arch = SubnetConfig.from_dict(t["arch"])
        assert t["structured"] and arch.params() < dense.params()
        # Its sparsity: the encoder linear weights the smaller file no longer has.
        assert t["sparsity"] == pytest.approx(want, abs=0.05)
        card = json.loads((Path(t["path"]) / "model.json").read_text())
        assert card["arch"] == t["arch"] and card["ticket"]["structured"]
        # The smaller model's ONNX scores what the masked model scored in training.
        a = card["accuracy"]
        assert a["fp32_onnx"] == pytest.approx(a["fp32_torch"], abs=1.5 / 39)
        assert a["fp32_onnx_max_abs_logit_diff"] < 1e-3
        assert t["latency_ms"] > 0


def test_a_ticket_fine_tuned_under_more_seeds_is_kept_and_read_back(tiny, found, monkeypatch):
    from bfnas.tickets import TicketRun, TicketSettings

    out, r = found
    settings = TicketSettings(
        task_dir=str(tiny["task"]),
        out=str(out),
        checkpoint=str(tiny["ckpt"]),
        sparsity=(0.3, 0.5),
        prune_fraction=0.3,
        protocol="demo",
        epochs=1,
        max_len=32,
        hw=str(tiny["profile"]),
        artifacts=str(tiny["root"] / "artifacts"),
    )
    rounds = {x["ticket"]: x for x in r["rounds"]}
    with TicketRun(settings) as run:
        acc = run.seed_accuracies("imp-50", (0, 1))
    assert acc[0] == rounds["imp-50"]["accuracy"] and 0 <= acc[1] <= 1
    assert (out / "seeds" / "imp-50-seed1.json").is_file()
    import bfnas.models.train.finetune as finetune

    monkeypatch.setattr(finetune, "finetune_classifier", None)  # read back, not trained
    with TicketRun(settings) as run:
        assert run.seed_accuracies("imp-50", (0, 1)) == acc
        with pytest.raises(ValueError, match="imp-99"):
            run.seed_accuracies("imp-99", (0,))


def test_a_rerun_asking_for_a_higher_sparsity_goes_on_from_the_last_round(tiny, found, tmp_path):
    out, first = found
    # A copy: the other tests read the first run's folder as it was.
    more = tmp_path / "more"
    shutil.copytree(out, more)
    code, stdout, stderr = run_cli(find_argv(tiny, more, "--sparsity", "0.3,0.5,0.6"))
    assert code == 0, stderr
    again = json.loads(stdout)
    imp = {t["name"]: t for t in again["tickets"] if t["kind"] == "imp"}
    assert set(imp) == {"imp-30", "imp-50", "imp-60"}
    before = {t["name"]: t["mask_sha256"] for t in first["tickets"] if t["kind"] == "imp"}
    assert {name: imp[name]["mask_sha256"] for name in before} == before
    assert imp["imp-60"]["sparsity"] == pytest.approx(0.6, abs=0.02)
