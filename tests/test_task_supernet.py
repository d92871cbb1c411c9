"""The task supernet (`bfnas supernet finetune`) and the two task objectives, on a tiny random
supernet saved as a Hugging Face folder and a small task made here from the standard
library's docstrings (real prose, offline): real training steps, real fine-tunes."""

import json
import random
import shutil
import sqlite3
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bfnas.bench.device.contract import MeasurementResult
from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.digest import file_sha256
from bfnas.models.nn.checkpoint import load_supernet, minilm_dir, read_task_head
from bfnas.models.nn.task_head import ElasticClassifier
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings, finetune_subnet, prepare_task
from bfnas.models.train.finetune_fitness import FinetuneFitness, FitnessSettings, FitnessSource
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.oneshot import TASK_REFIT, HeadRefit
from bfnas.models.train.task_classifier import build_classifier, predict
from bfnas.models.train.task_data import TaskDataSettings, build_task
from bfnas.models.train.task_supernet import (
    ChildTargets,
    TaskSupernetTrainer,
    TaskTrainSettings,
    inplace_distillation,
    load_task_supernet,
    task_scorer,
)
from bfnas.search import objectives

SMALL = SubnetConfig(2, 96, (2, 1), (64, 32), (128, 64))


def write_task(folder: Path, rows: list[list[str]], dev_from: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", rows[:dev_from]), ("dev.tsv", rows[dev_from:])):
        lines = ["sentence\tlabel"] + [f"{s.replace(chr(9), ' ')}\t{label}" for s, label in part]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The offline task, small: which of three stdlib modules does a docstring sentence
    document? (`bfnas data task` at 3 classes of at most 200 sentences: 448 train, 127 dev.)"""
    out = tmp_path_factory.mktemp("task") / "docs"
    build_task(out, TaskDataSettings(classes=3, max_per_class=200))
    return out


@pytest.fixture(scope="module")
def tiny_folder(tiny_supernet, minilm_supernet, tmp_path_factory) -> Path:
    """A supernet of the tiny space as a Hugging Face folder, with MiniLM's tokenizer: the
    leading slices of MiniLM's weights (2 layers, hidden 128), so that it learns a real task
    in a few steps, as a pretrained supernet does."""
    folder = tmp_path_factory.mktemp("tiny") / "sn"
    folder.mkdir()
    d = tiny_supernet.dims
    whole = SubnetConfig.uniform(d.layers, d.hidden, 4, d.qkv, d.ffn)
    weights = {k: v.clone() for k, v in minilm_supernet.sliced_state(whole).items()}
    assert weights.keys() == tiny_supernet.state_dict().keys()
    save_file(weights, str(folder / "model.safetensors"))
    config = {
        "model_type": "bert",
        "hidden_size": d.hidden,
        "num_attention_heads": 4,
        "num_hidden_layers": d.layers,
        "intermediate_size": d.ffn,
        "vocab_size": d.vocab.vocab_size,
        "max_position_embeddings": d.vocab.max_positions,
        "type_vocab_size": d.vocab.type_vocab,
    }
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(minilm_dir() / "tokenizer.json", folder / "tokenizer.json")
    return folder


def finetune_args(tiny_folder, task_dir, tiny_space_file, out, *extra) -> list[str]:
    return [
        *("supernet", "finetune", "--supernet", str(tiny_folder), "--task-dir", str(task_dir)),
        *("--space", str(tiny_space_file), "--out", str(out), "--batch", "16", "--lr", "1e-3"),
        *("--warmup-steps", "2", "--max-len", "48", *extra),
    ]


@pytest.fixture(scope="module")
def tsn(tiny_folder, task_dir, tiny_space_file, tmp_path_factory) -> Path:
    """A task supernet made by the command line: 30 steps (about 6 s)."""
    out = tmp_path_factory.mktemp("tsn") / "tsn"
    args = finetune_args(tiny_folder, task_dir, tiny_space_file, out, "--steps", "30", "--json")
    assert main(args) == 0
    return out


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the head ---------------------------------------------------------------------------------
def test_the_head_slices_as_specified_and_equals_the_dense_classifier(tiny_supernet):
    head = ElasticClassifier.fresh(128, 3, seed=1)
    with torch.no_grad():  # a bias that is not zero, so a wrong slice of it shows
        head.pooler.dense.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        head.classifier.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    h = SMALL.hidden
    x = torch.randn(4, 7, h, generator=torch.Generator().manual_seed(4))
    pw, pb = head.pooler.dense.weight, head.pooler.dense.bias
    cw, cb = head.classifier.weight, head.classifier.bias
    by_hand = torch.tanh(x[:, 0] @ pw[:h, :h].T + pb[:h]) @ cw[:, :h].T + cb
    with torch.no_grad():
        assert torch.allclose(head(x), by_hand, atol=1e-6)
    # The dense classifier built from the same full-width tensors gives the same logits.
    state = head.state_dict()
    dense = build_classifier(
        tiny_supernet,
        SMALL,
        3,
        pooler={k: v for k, v in state.items() if k.startswith("pooler.")},
        classifier={"weight": state["classifier.weight"], "bias": state["classifier.bias"]},
    ).eval()
    ids = torch.randint(1000, 30000, (3, 9), generator=torch.Generator().manual_seed(5))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        elastic = head(tiny_supernet(ids, SMALL, mask, types))
        assert torch.allclose(dense(ids, mask, types), elastic, atol=1e-5)


def test_inplace_distillation_mixes_labels_and_the_largest_members_predictions():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 1, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    only_labels = inplace_distillation(ChildTargets(logits, labels, teacher, 0.0, 2.0))
    assert torch.allclose(only_labels, ce)
    itself = inplace_distillation(ChildTargets(teacher, labels, teacher, 1.0, 2.0))
    assert float(itself) == pytest.approx(0.0, abs=1e-6)
    assert float(inplace_distillation(ChildTargets(logits, labels, teacher, 1.0, 2.0))) > 0.01


def test_the_cli_defaults_are_the_settings_defaults():
    from bfnas.commands.supernet import FinetuneDefaults

    ours = asdict(TaskTrainSettings())
    assert all(
        ours[f.name] == getattr(FinetuneDefaults(), f.name) for f in fields(FinetuneDefaults)
    )


# -- fine-tuning the supernet ---------------------------------------------------------------
def test_finetune_writes_a_task_supernet_that_learned_the_task(tsn, task_dir, tiny_space):
    assert {p.name for p in tsn.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "optimizer.pt",
        "trainer.json",
        "tokenizer.json",
        "task.json",
    }
    manifest = json.loads((tsn / "task.json").read_text())
    labels = read_task(task_dir).label_names
    assert len(labels) == 3 and manifest["labels"] == list(labels) == sorted(labels)
    assert manifest["max_len"] == 48
    assert manifest["task"]["train_sha256"] == file_sha256(task_dir / "train.tsv")
    assert manifest["task"]["dev_sha256"] == file_sha256(task_dir / "dev.tsv")
    head = read_task_head(tsn)
    assert head.labels == labels
    assert head.pooler["pooler.dense.weight"].shape == (128, 128)
    assert head.classifier["weight"].shape == (3, 128) and head.classifier["bias"].shape == (3,)
    loaded = load_task_supernet(tsn)
    assert loaded.supernet.dims.hidden == 128  # the encoder loads as any supernet does
    assert read_task_head(loaded.supernet.source["path"]) is not None
    scorer = task_scorer(loaded)
    # Chance is 1/3 (dev: 127 sentences, the largest class 0.33); measured here 0.76 for the
    # largest member after 30 steps of 16 (the smallest, 1 layer of width 64, still at chance).
    assert scorer(tiny_space.largest()) > 0.6
    # The largest member learns from the labels alone (the others also from it).
    losses = [r["largest"] for r in json.loads((tsn / "trainer.json").read_text())["history"]]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])  # measured: 1.10 -> 0.67


def _trainer(tiny_folder, task_dir, tiny_space, out, steps, kd="inplace", int8_aware=False):
    supernet = load_supernet(tiny_folder)
    settings = TaskTrainSettings(
        steps=steps,
        batch=16,
        lr=2e-3,
        max_len=48,
        warmup_steps=2,
        checkpoint_every=3,
        kd=kd,
        int8_aware=int8_aware,
    )
    data = prepare_task(
        supernet,
        tiny_space.largest(),
        read_task(task_dir),
        tiny_folder,
        FinetuneSettings(max_len=48),
    )
    head = ElasticClassifier.fresh(128, 3, settings.seed)
    return TaskSupernetTrainer(supernet, head, tiny_space, data, out, settings, {})


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_folder, task_dir, tiny_space, tmp_path
):
    straight = _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "a", 6)
    straight.train()
    _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "b", 3).train()
    resumed = _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "b", 6)
    assert resumed.step == 3
    resumed.train()
    assert resumed.history == straight.history
    a, b = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert set(a) == set(b) and "classifier.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Another run's folder is not continued.
    with pytest.raises(InputError, match="^out: .*: holds another training run") as err:
        _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "b", 8, kd="none")
    assert err.value.setting == "out"  # the CLI prints it as --out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--kd", "teacher"], "--kd"),
        (["--kd-weight", "2"], "--kd-weight"),
        (["--batch", "1000"], "fewer than one batch"),
        (["--max-len", "2"], "--max-len"),
    ],
)
def test_bad_finetune_input_is_one_line_and_writes_nothing(
    capsys, tiny_folder, task_dir, tiny_space_file, tmp_path, extra, message
):
    out = tmp_path / "x"
    code, _, err = _run(
        capsys, *finetune_args(tiny_folder, task_dir, tiny_space_file, out, "--steps", "2", *extra)
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_task_folder_missing_its_dev_split_is_refused(
    capsys, tiny_folder, task_dir, tiny_space_file, tmp_path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(task_dir / "train.tsv", broken / "train.tsv")
    out = tmp_path / "x"
    code, _, err = _run(capsys, *finetune_args(tiny_folder, broken, tiny_space_file, out))
    assert code == 2 and "dev.tsv" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# -- the one-shot scorer ------------------------------------------------------------------------
def test_the_scorer_equals_a_direct_computation_and_caches(tsn, tiny_space, monkeypatch):
    loaded = load_task_supernet(tsn)
    # The inherited head as it is (refit=None): what the dense classifier computes.
    scorer = task_scorer(loaded, batch_tokens=500, refit=None)  # several batches of sorted rows
    assert len(scorer.batches) > 2
    head = read_task_head(tsn)
    task = read_task(loaded.manifest["task"]["folder"])
    rng = random.Random(3)
    cfgs = [tiny_space.sample(rng) for _ in range(3)]
    for cfg in cfgs:
        model = build_classifier(loaded.supernet, cfg, 3, 0.1, head.pooler, head.classifier)
        data = prepare_task(loaded.supernet, cfg, task, tsn, FinetuneSettings(max_len=48))
        direct = predict(model.eval(), data.dev, 32, data.pad)
        assert torch.equal(scorer.predictions(cfg), direct)
        assert scorer(cfg) == pytest.approx(float((direct == data.dev.labels).float().mean()))
    assert scorer.evaluated == 3

    def no_forward(*args, **kwargs):
        raise AssertionError("a cached subnet ran again")

    monkeypatch.setattr(loaded.supernet, "forward", no_forward)
    assert scorer.many(cfgs) == [scorer.cache[c.key()] for c in cfgs]
    assert scorer.evaluated == 3


def test_the_refit_rows_are_a_fixed_draw_in_file_order():
    rows = HeadRefit(examples=40, seed=1).rows(100)
    assert rows == sorted(set(rows)) and len(rows) == 40 and rows[-1] < 100
    assert rows == HeadRefit(examples=40, seed=1).rows(100)
    assert rows != HeadRefit(examples=40, seed=2).rows(100)
    assert HeadRefit(examples=40).rows(25) == list(range(25))  # fewer rows than asked: all


def test_the_refit_recovers_a_broken_classifier_and_a_strong_pull_keeps_the_inherited(tsn):
    """A subnet's classifier slice refitted on its own features: with the classifier
    zeroed (every dev row then gets class 0) the refit learns one; pulled hard towards the
    inherited slice it changes nothing."""
    loaded = load_task_supernet(tsn)
    cfg = SubnetConfig.uniform(2, 128, 4, 128, 256)
    inherited = task_scorer(loaded, refit=None)
    pulled = task_scorer(loaded, refit=HeadRefit(examples=256, l2=1e6))
    assert torch.equal(pulled.predictions(cfg), inherited.predictions(cfg))
    refitted = task_scorer(loaded, refit=HeadRefit(examples=256))
    assert refitted.refit is not None and len(refitted.fit_labels) == 256
    assert refitted(cfg) == task_scorer(loaded, refit=HeadRefit(examples=256))(cfg)  # determinism
    with torch.no_grad():
        loaded.head.classifier.weight.zero_()
        loaded.head.classifier.bias.zero_()
    broken = task_scorer(loaded, refit=None)
    assert (broken.predictions(cfg) == 0).all()
    # Chance is 1/3; the refit on 256 train rows reaches what the inherited head had (0.76
    # for the largest member), measured 0.6 here for this 2-layer subnet.
    repaired = task_scorer(loaded, refit=HeadRefit(examples=256))(cfg)
    assert repaired > 0.5 and repaired > broken(cfg) + 0.1


def test_the_task_objective_refits_by_default(tsn):
    assert task_scorer(load_task_supernet(tsn)).refit == TASK_REFIT


# -- the objectives through the search command ------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory, fast_profile_file, tiny_space_file):
    """Trusted rows of the tiny space whose latency follows MACs: what a search fits from."""
    from bfnas.bench.hardware_profile import load_profile
    from bfnas.bench.store.latency_store import LatencyStore

    profile = load_profile(fast_profile_file)
    space = SearchSpace.from_toml(tiny_space_file)
    path = tmp_path_factory.mktemp("store") / "lat.db"
    rng = random.Random(0)
    with LatencyStore(path) as db:
        phash = db.add_profile(profile.name, profile.resolved(), profile.hash())
        seen: set[str] = set()
        while len(seen) < 40:
            cfg = space.sample(rng)
            if cfg.key() not in seen:
                seen.add(cfg.key())
                ms = 0.5 + cfg.total_macs(32, 1) / 1e7
                row = {"status": "ok", "median_ms": ms, "mean_ms": ms, "runs": 10}
                db.add_measurement(
                    phash,
                    cfg,
                    space.name,
                    MeasurementResult.from_dict(row | {"median_rel_ci": 0.01}),
                )
    return path


def search_args(store, fast_profile_file, tiny_space_file, out, *extra):
    return [
        *("search", "--hw", str(fast_profile_file), "--space", str(tiny_space_file)),
        *("--db", str(store), "--max-latency-ms", "1000", "--verify", "0"),
        *("--population", "6", "--parents", "3", "--generations", "2", "--out", str(out)),
        *extra,
    ]


def test_the_task_objectives_are_registered_in_accuracy():
    assert {"task", "task-finetune"} <= set(objectives.OBJECTIVES)
    assert "accuracy" in objectives.objective_unit("task")
    assert "accuracy" in objectives.objective_unit("task-finetune")


def test_search_by_one_shot_task_accuracy(
    capsys, tsn, store, fast_profile_file, tiny_space_file, tmp_path
):
    code, out, err = _run(
        capsys,
        *search_args(store, fast_profile_file, tiny_space_file, tmp_path / "s"),
        *("--objective", "task", "--task-supernet", str(tsn), "--json"),
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["objective_name"] == "task" and "accuracy" in result["objective_unit"]
    best = json.loads((tmp_path / "s" / "best.json").read_text())
    scorer = task_scorer(load_task_supernet(tsn))
    assert best["objective"] == pytest.approx(scorer(SubnetConfig.from_dict(best["arch"])))


def _damaged(tsn: Path, folder: Path, task_json: str | None) -> Path:
    shutil.copytree(tsn, folder)
    if task_json is None:
        (folder / "task.json").unlink()
    else:
        (folder / "task.json").write_text(task_json)
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("no task supernet", "error: --task-supernet: the task objective needs a task supernet"),
        ("task folder gone", "error: --task-dir: not given, and the task folder "),
        ("plain supernet", "task.json: missing"),
        ("damaged", "task.json: damaged"),
        ("labels", "labels"),
        ("other task", "the head was trained on another task"),
    ],
)
def test_bad_task_objective_input_is_one_line_and_writes_nothing(
    capsys, tsn, store, task_dir, fast_profile_file, tiny_space_file, tmp_path, case, message
):
    extra: list[str] = []
    if case == "plain supernet":
        extra = ["--task-supernet", str(_damaged(tsn, tmp_path / "c", None))]
    elif case == "damaged":
        extra = ["--task-supernet", str(_damaged(tsn, tmp_path / "c", '{"labels": ['))]
    elif case == "labels":
        manifest = json.loads((tsn / "task.json").read_text())
        manifest["labels"] = ["a", "b", "c"]
        extra = ["--task-supernet", str(_damaged(tsn, tmp_path / "c", json.dumps(manifest)))]
    elif case == "task folder gone":
        manifest = json.loads((tsn / "task.json").read_text())
        manifest["task"]["folder"] = str(tmp_path / "moved")
        extra = ["--task-supernet", str(_damaged(tsn, tmp_path / "c", json.dumps(manifest)))]
    elif case == "other task":
        rows = [line.split("\t") for line in (task_dir / "train.tsv").read_text().splitlines()[1:]]
        other = write_task(tmp_path / "other", [[s, label + "x"] for s, label in rows], 200)
        extra = ["--task-supernet", str(tsn), "--task-dir", str(other)]
    out = tmp_path / "s"
    code, _, err = _run(
        capsys,
        *search_args(store, fast_profile_file, tiny_space_file, out),
        *("--objective", "task", *extra),
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


# -- task-finetune --------------------------------------------------------------------------------
FITNESS = FitnessSettings(
    finetune=FinetuneSettings(epochs=1, lr=1e-3, batch=16, max_len=48), train_examples=96
)


def test_finetune_fitness_is_the_fine_tuned_accuracy_and_is_cached_on_disk(
    tsn, task_dir, tiny_space, tmp_path
):
    source = FitnessSource(str(tsn), str(tsn / "tokenizer.json"), str(task_dir))
    settings = replace(FITNESS, cache_file=str(tmp_path / "cache.json"))
    rng = random.Random(5)
    cfgs = [tiny_space.sample(rng) for _ in range(2)]
    with FinetuneFitness(source, settings) as fitness:
        values = fitness.many(cfgs + cfgs[:1])
        assert fitness.computed == 2
        head = read_task_head(tsn)
        direct = finetune_subnet(
            fitness.loaded.supernet,
            cfgs[1],
            fitness.loaded.data,
            FITNESS.finetune,
            head.pooler,
            classifier=head.classifier,
        )
        assert values[1] == direct["accuracy"] and values[2] == values[0]
        assert fitness.loaded.data.train.labels.shape == (96,)  # the subset
    with FinetuneFitness(source, settings) as again:  # a rerun reads the file
        assert again.many(cfgs) == values[:2] and again.computed == 0
    cache = json.loads((tmp_path / "cache.json").read_text())
    (run,) = cache["runs"].values()
    assert set(run["results"]) == {c.key() for c in cfgs}


def test_parallel_fine_tunes_give_what_one_process_gives(tsn, task_dir, tiny_space):
    source = FitnessSource(str(tsn), str(tsn / "tokenizer.json"), str(task_dir))
    rng = random.Random(6)
    cfgs = [tiny_space.sample(rng) for _ in range(3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of two workers gets on this machine's two cores
    try:
        alone = FinetuneFitness(source, FITNESS).many(cfgs)
    finally:
        torch.set_num_threads(threads)
    parallel = FitnessSettings(finetune=FITNESS.finetune, train_examples=96, workers=2)
    with FinetuneFitness(source, parallel, threads=2) as fitness:
        assert fitness.many(cfgs) == alone and fitness.computed == 3


def test_search_by_task_finetune_reuses_its_cache(
    capsys, tsn, store, fast_profile_file, tiny_space_file, tmp_path
):
    cache = tmp_path / "cache.json"
    argv = [
        *("--objective", "task-finetune", "--task-supernet", str(tsn)),
        *("--finetune-examples", "64", "--finetune-batch", "16", "--finetune-max-len", "48"),
        *("--finetune-workers", "1", "--task-cache", str(cache), "--json"),
        *("--population", "3", "--parents", "2", "--generations", "1"),
    ]
    code, out, err = _run(
        capsys, *search_args(store, fast_profile_file, tiny_space_file, tmp_path / "a"), *argv
    )
    assert code == 0, err
    first = json.loads(out)
    assert "accuracy" in first["objective_unit"]
    (run,) = json.loads(cache.read_text())["runs"].values()
    done = set(run["results"])
    assert first["evaluated"] >= len(done) > 0
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert run["results"][best["key"]]["accuracy"] == best["objective"]
    stamp = cache.stat().st_mtime_ns
    code, out, err = _run(
        capsys, *search_args(store, fast_profile_file, tiny_space_file, tmp_path / "b"), *argv
    )
    assert code == 0, err
    assert cache.stat().st_mtime_ns == stamp  # the same seed: nothing new to fine-tune
    assert json.loads(out)["best"] == first["best"]


def test_task_finetune_needs_a_supernet(
    capsys, store, fast_profile_file, tiny_space_file, tmp_path
):
    runs = sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    code, _, err = _run(
        capsys,
        *search_args(store, fast_profile_file, tiny_space_file, tmp_path / "s"),
        "--objective",
        "task-finetune",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "error: --task-supernet: task-finetune fine-tunes candidates from" in err
    assert not (tmp_path / "s").exists()
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == runs


def test_two_processes_under_torchrun_continue_what_one_process_computes(
    capsys, tiny_folder, task_dir, tiny_space_file, tmp_path
):
    import os
    import subprocess
    import sys

    straight, split = tmp_path / "straight", tmp_path / "split"

    def args(out, steps):
        return finetune_args(
            tiny_folder, task_dir, tiny_space_file, out, "--steps", str(steps), "--json"
        )

    assert main(args(straight, 4)) == 0
    assert main(args(split, 2)) == 0  # steps 1-2 in one process, 3-4 in two
    capsys.readouterr()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node=2", "-m", "bfnas.cli", *args(split, 4)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # rank 0 alone prints
    assert result["world_size"] == 2 and result["replicas_identical"] is True
    assert result["new_steps"] == 2
    one = json.loads((straight / "trainer.json").read_text())["history"]
    two = json.loads((split / "trainer.json").read_text())["history"]
    for name in ("largest", "smallest"):
        assert [r[name] for r in two] == pytest.approx([r[name] for r in one], rel=1e-4)
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    start = load_file(tiny_folder / "model.safetensors")
    moved = max(float((a[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < moved / 100


@pytest.mark.ray
def test_fine_tunes_on_a_ray_cluster_give_what_one_process_gives(tsn, task_dir, tiny_space):
    """A local Ray (two CPUs): the workers are actors, through Ray's multiprocessing Pool."""
    import ray

    source = FitnessSource(str(tsn), str(tsn / "tokenizer.json"), str(task_dir))
    rng = random.Random(7)
    cfgs = [tiny_space.sample(rng) for _ in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = FinetuneFitness(source, FITNESS).many(cfgs)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    try:
        on_ray = replace(FITNESS, workers=2, pool="ray")
        with FinetuneFitness(source, on_ray, threads=2) as fitness:
            assert fitness.many(cfgs) == alone and fitness.computed == 2
    finally:
        ray.shutdown()


def test_the_search_hands_a_batch_objective_each_generation_at_once(tiny_space):
    import numpy as np

    from bfnas.search.evolution import Budget, EvolutionSettings, evolve

    class Batched:
        def __init__(self):
            self.batches: list[int] = []

        def __call__(self, cfg):
            raise AssertionError("scored one by one")

        def many(self, cfgs):
            self.batches.append(len(cfgs))
            return [float(c.hidden) for c in cfgs]

    def latency(cfgs):
        ms = np.array([c.total_macs(32, 1) / 1e6 for c in cfgs])
        return ms, ms, ms

    objective = Batched()
    settings = EvolutionSettings(population=8, parents=3, generations=3, seed=1)
    result = evolve(tiny_space, latency, objective, Budget(1e9), settings)
    assert len(objective.batches) <= 1 + settings.generations  # one call a generation at most
    assert max(objective.batches) > 1 and sum(objective.batches) == result.evaluated
    assert result.best.objective == result.best.cfg.hidden


def test_int8_aware_fine_tuning_trains_the_fake_quantized_members(
    tiny_folder, task_dir, tiny_space, tmp_path
):
    quantized = _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "q", 2, int8_aware=True)
    plain = _trainer(tiny_folder, task_dir, tiny_space, tmp_path / "f", 2)
    b = plain._batch(0)
    with torch.no_grad():
        q, f = quantized._logits(b, SMALL), plain._logits(b, SMALL)
    assert not torch.allclose(q, f) and torch.allclose(q, f, atol=0.1)  # rounding, not noise
    quantized.train()
    assert quantized.step == 2
    assert json.loads((tmp_path / "q" / "task.json").read_text())["settings"]["int8_aware"]
