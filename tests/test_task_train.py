"""`bfnas task train` and `bfnas task predict`: a tiny real supernet fine-tuned on a small
offline task (`build_task`: which stdlib module does a docstring sentence document?), written
as a model folder, read back by Hugging Face, ONNX Runtime and `task predict`, and every
input a user can get wrong refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import FAST_PROFILE, TINY_SPACE
from refusals import Refusal, check_refusal, run_cli
from safetensors.torch import load_file, save_file

from bfnas.errors import InputError, OperationFailed
from bfnas.models.deploy.classifier_package import card_markdown
from bfnas.models.deploy.encoder_io import pack_example
from bfnas.models.deploy.text_classifier import load_classifier
from bfnas.models.digest import file_sha256
from bfnas.models.nn.bert import Bert
from bfnas.models.nn.checkpoint import TaskHead, minilm_dir, read_task_head
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.pretraining_data import load_tokenizer
from bfnas.models.train.task_classifier import SubnetClassifier, build_classifier
from bfnas.models.train.task_data import TaskDataSettings, build_task

ARCH = SubnetConfig.uniform(2, 128, 4, 128, 256)  # uniform, Q/K/V = hidden: HF can load it
ARCH_JSON = json.dumps(ARCH.to_dict())
# A layer of its own shape: what stock transformers cannot build.
RAGGED = SubnetConfig(2, 96, (2, 1), (64, 32), (128, 64))
LABELS = ("asyncio", "email", "tkinter")  # the offline task's three largest modules
# The shared brief profile, told not to wait for a free core: these tests check what is
# written and measured, and other work on a 2-core host must not turn them into a refusal.
PROFILE = FAST_PROFILE + "min_cpu_share = 0.0\n"
TRAIN_ARGS = ["--epochs", "2", "--lr", "1e-3", "--batch", "16", "--max-len", "32"]


def write_task(folder: Path, rows: list[tuple[str, str]], train: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", rows[:train]), ("dev.tsv", rows[train:])):
        body = "".join(f"{text}\t{label}\n" for text, label in part)
        (folder / name).write_text("sentence\tlabel\n" + body, encoding="utf-8")
    return folder


HEAD_TASK = {"folder": "elsewhere", "train_sha256": "0" * 64, "dev_sha256": "0" * 64}


def write_supernet(folder: Path, supernet, head: TaskHead | None = None) -> Path:
    """The tiny supernet as a Hugging Face BERT folder with MiniLM's tokenizer; with `head`,
    a task supernet (format17: the head at full width beside it, task.json)."""
    d = supernet.dims
    folder.mkdir(parents=True)
    config = {
        "model_type": "bert",
        "hidden_size": d.hidden,
        "num_hidden_layers": d.layers,
        "num_attention_heads": 4,
        "intermediate_size": d.ffn,
        "vocab_size": d.vocab.vocab_size,
        "max_position_embeddings": d.vocab.max_positions,
        "type_vocab_size": d.vocab.type_vocab,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {k: v.contiguous() for k, v in supernet.state_dict().items()}
    if head is not None:
        tensors.update(head.pooler)
        tensors.update({f"classifier.{k}": v for k, v in head.classifier.items()})
        (folder / "task.json").write_text(
            json.dumps({"labels": list(head.labels), "task": HEAD_TASK, "max_len": 32})
        )
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copyfile(minilm_dir() / "tokenizer.json", folder / "tokenizer.json")
    return folder


def random_head(hidden: int, labels: tuple[str, ...], seed: int) -> TaskHead:
    g = torch.Generator().manual_seed(seed)
    return TaskHead(
        labels=labels,
        pooler={
            "pooler.dense.weight": 0.05 * torch.randn(hidden, hidden, generator=g),
            "pooler.dense.bias": 0.05 * torch.randn(hidden, generator=g),
        },
        classifier={
            "weight": 0.05 * torch.randn(len(labels), hidden, generator=g),
            "bias": 0.05 * torch.randn(len(labels), generator=g),
        },
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_supernet):
    root = tmp_path_factory.mktemp("task-train")
    # 140 train and 39 dev sentences.
    manifest = build_task(root / "task", TaskDataSettings(classes=3, max_per_class=60))
    assert tuple(manifest["labels"]) == LABELS
    head = random_head(tiny_supernet.dims.hidden, LABELS, seed=1)
    (root / "tiny.toml").write_text(TINY_SPACE)
    (root / "fast.toml").write_text(PROFILE)
    return {
        "root": root,
        "task": root / "task",
        "sn": write_supernet(root / "sn", tiny_supernet),
        "tsn": write_supernet(root / "tsn", tiny_supernet, head),
        "head": head,
        "space": root / "tiny.toml",
        "profile": root / "fast.toml",
    }


def train_argv(f: dict, supernet: str, out: Path, *extra: str) -> list[str]:
    return [
        "task",
        "train",
        "--supernet",
        str(f[supernet]),
        "--task-dir",
        str(f["task"]),
        "--arch",
        ARCH_JSON,
        "--hw",
        str(f["profile"]),
        "--out",
        str(out),
        "--space",
        str(f["space"]),
        "--artifacts",
        str(f["root"] / "artifacts"),
        *TRAIN_ARGS,
        *extra,
    ]


TRAINED: dict = {}


@pytest.fixture(scope="module")
def trained(folders, capsys_module):
    """One `task train` from the task supernet (its head inherited), its card as printed."""
    out = folders["root"] / "model"
    code, stdout, err = capsys_module(train_argv(folders, "tsn", out, "--json"))
    assert code == 0, err
    card = json.loads(stdout)
    TRAINED.update(folder=out, card=card)
    return out, card


@pytest.fixture(scope="module")
def capsys_module():
    """`bfnas ...` run with its stdout and stderr captured (capsys is per test)."""
    import contextlib
    import io

    from bfnas.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    return run


def dev_feeds(folder: Path, task: Path, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """The dev texts tokenized independently of bfnas's encode: one unpadded row each."""
    tok, sp, _ = load_tokenizer(folder)
    texts = read_task(task).dev.a[:limit]
    feeds = []
    for text in texts:
        ids, types, _ = pack_example(
            tok.encode(text, add_special_tokens=False).ids, None, sp.cls, sp.sep, 32
        )
        row = np.asarray([ids], np.int64)
        feeds.append(
            {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": 0 * row}
        )
    return feeds


def ort_logits(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], f)[0] for f in feeds])


def torch_classifier(folder: Path, cfg: SubnetConfig, labels: int) -> SubnetClassifier:
    """The package's weights put back into bfnas's classifier, by their HF names."""
    tensors = load_file(str(folder / "model.safetensors"))
    model = SubnetClassifier(Bert(cfg), labels)
    state = {k.replace("bert.pooler.", "pooler."): v for k, v in tensors.items()}
    model.load_state_dict(state)
    return model.eval()


# -- the package ------------------------------------------------------------------------------
def test_the_folder_holds_every_file_and_the_card_records_their_hashes(trained):
    out, card = trained
    names = {p.name for p in out.iterdir()}
    assert names == {
        "model.safetensors",
        "config.json",
        "labels.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.onnx",
        "model.int8.onnx",
        "model.json",
        "README.md",
    }
    for name, record in card["files"].items():
        assert record["sha256"] == file_sha256(out / name) and record["bytes"] > 0, name
    assert json.loads((out / "model.json").read_text()) == card
    assert json.loads((out / "labels.json").read_text()) == list(LABELS)
    # No staging folder is left beside it.
    assert not [p for p in out.parent.iterdir() if ".building-" in p.name]


def test_safetensors_carry_hugging_face_names_and_shapes(trained):
    out, card = trained
    tensors = load_file(str(out / "model.safetensors"))
    h, v = ARCH.hidden, 30522
    assert tensors["bert.embeddings.word_embeddings.weight"].shape == (v, h)
    assert tensors["bert.embeddings.position_embeddings.weight"].shape == (512, h)
    assert tensors["bert.embeddings.token_type_embeddings.weight"].shape == (2, h)
    assert tensors["bert.pooler.dense.weight"].shape == (h, h)
    assert tensors["classifier.weight"].shape == (3, h) and tensors["classifier.bias"].shape == (3,)
    for i in range(ARCH.layers):
        p = f"bert.encoder.layer.{i}"
        assert tensors[f"{p}.attention.self.query.weight"].shape == (ARCH.qkv[i], h)
        assert tensors[f"{p}.attention.output.dense.weight"].shape == (h, ARCH.qkv[i])
        assert tensors[f"{p}.intermediate.dense.weight"].shape == (ARCH.ffn[i], h)
        assert tensors[f"{p}.output.LayerNorm.bias"].shape == (h,)
    assert not [
        k
        for k in tensors
        if not k.startswith(("bert.embeddings.", "bert.encoder.", "bert.pooler.", "classifier."))
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "asyncio", "1": "email", "2": "tkinter"}
    assert config["label2id"] == {"asyncio": 0, "email": 1, "tkinter": 2}
    assert config["bfnas"]["arch"] == ARCH.to_dict() and config["bfnas"]["max_len"] == 32
    assert config["num_attention_heads"] == 4 and config["intermediate_size"] == 256
    assert card["hf_transformers"]["loadable"] is True


def test_stock_transformers_loads_a_uniform_package_and_agrees_with_onnx(trained, folders):
    transformers = pytest.importorskip("transformers")
    out, _ = trained
    model = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    feeds = dev_feeds(out, folders["task"], limit=6)
    with torch.no_grad():
        hf = np.concatenate(
            [model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy() for f in feeds]
        )
    assert np.abs(hf - ort_logits(out / "model.onnx", feeds)).max() < 1e-4
    assert model.config.id2label == {0: "asyncio", 1: "email", 2: "tkinter"}


def test_a_layer_of_another_shape_is_written_as_not_loadable_by_transformers():
    from bfnas.models.deploy.classifier_package import hf_config, hf_loadable
    from bfnas.models.nn.bert import Vocab

    assert hf_loadable(ARCH)[0]
    loadable, why = hf_loadable(RAGGED)
    assert not loadable and "head counts" in why
    narrow = SubnetConfig.uniform(2, 128, 2, 64, 256)  # same in every layer, Q/K/V < hidden
    assert not hf_loadable(narrow)[0] and "Q/K/V" in hf_loadable(narrow)[1]
    config = hf_config(RAGGED, Vocab(), LABELS, 32, ("sentence",), 0.1)
    # Fields that would describe the layers wrongly are left out, the truth is under bfnas.
    assert "num_attention_heads" not in config and "intermediate_size" not in config
    assert config["bfnas"]["arch"]["qkv"] == [64, 32]
    assert "num_attention_heads" not in hf_config(narrow, Vocab(), LABELS, 32, ("s",), 0.1)


def test_a_static_recipe_calibrates_on_task_examples_and_a_ragged_arch_exports(
    tiny_supernet, folders, tmp_path
):
    """The profile's recipe makes model.int8.onnx whatever it is: static QDQ here, on a
    subnet whose layers differ (no training: the package of a fresh classifier)."""
    from bfnas.models.deploy.classifier_package import (
        PackageSpec,
        calibration_feeds,
        onnx_logits,
        write_model_files,
    )
    from bfnas.models.deploy.recipes import get_recipe
    from bfnas.models.train.glue_task import encode

    torch.manual_seed(0)
    model = build_classifier(tiny_supernet, RAGGED, 3).eval()
    tok, sp, tok_file = load_tokenizer(minilm_dir())
    dev = encode(read_task(folders["task"]).dev, tok, sp.cls, sp.sep, 32)
    recipe = get_recipe("qdq", calibration_samples=8)
    spec = PackageSpec(
        model, LABELS, ("sentence",), 32, tok_file, recipe, calibration=calibration_feeds(dev, 8)
    )
    made = write_model_files(tmp_path, spec)
    assert made["graph"]["quantization"]["QuantizeLinear"] > 0
    assert len(spec.calibration) == 8 and spec.calibration[0]["input_ids"][0, 0] == sp.cls
    fp32 = onnx_logits(tmp_path / "model.onnx", dev, sp.pad)
    int8 = onnx_logits(tmp_path / "model.int8.onnx", dev, sp.pad)
    with torch.no_grad():
        from bfnas.models.train.task_classifier import predict_logits

        want = predict_logits(model, dev, 16, sp.pad).numpy()
    assert np.abs(fp32 - want).max() < 1e-4
    # An untrained head's logits are small (about 0.05) and alike across examples, so 8-bit
    # steps show: 0.9989 with onnxruntime 1.32 (the FP32 file itself matches to 1e-4 above).
    assert float((fp32 * int8).sum() / np.linalg.norm(fp32) / np.linalg.norm(int8)) > 0.995
    config = json.loads((tmp_path / "config.json").read_text())
    assert "num_attention_heads" not in config and not config["bfnas"]["hf_transformers_loadable"]
    # What the card says of it is true: stock transformers refuses the layers' shapes.
    transformers = pytest.importorskip("transformers")
    with pytest.raises((RuntimeError, ValueError)):
        transformers.BertForSequenceClassification.from_pretrained(str(tmp_path))


def test_onnx_fp32_logits_match_torch_over_dynamic_batch_and_sequence(trained, folders):
    out, _ = trained
    model = torch_classifier(out, ARCH, 3)
    feeds = dev_feeds(out, folders["task"], limit=5)
    # One padded batch of all five as well: the batch and sequence axes are dynamic.
    longest = max(f["input_ids"].shape[1] for f in feeds)
    ids = np.zeros((5, longest), np.int64)
    mask = np.zeros_like(ids)
    for i, f in enumerate(feeds):
        n = f["input_ids"].shape[1]
        ids[i, :n], mask[i, :n] = f["input_ids"][0], 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    got = session.run(["logits"], batch)[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(batch[k]) for k in batch)).numpy()
    assert got.shape == (5, 3) and np.abs(got - want).max() < 1e-4
    single = ort_logits(out / "model.onnx", feeds)
    assert np.abs(single - want).max() < 1e-4  # padding changed nothing


def test_int8_logits_are_close_and_the_argmax_mostly_agrees(trained, folders):
    out, card = trained
    feeds = dev_feeds(out, folders["task"])
    fp32 = ort_logits(out / "model.onnx", feeds)
    int8 = ort_logits(out / "model.int8.onnx", feeds)
    cosine = float((fp32 * int8).sum() / np.linalg.norm(fp32) / np.linalg.norm(int8))
    agree = float((fp32.argmax(-1) == int8.argmax(-1)).mean())
    assert cosine > 0.99 and agree >= 0.9, (cosine, agree)
    gold = np.array(read_task(folders["task"]).dev.labels)
    a = card["accuracy"]
    # The card's numbers are these files' numbers, recomputed here independently.
    assert a["int8_onnx"] == pytest.approx(float((int8.argmax(-1) == gold).mean()))
    assert a["fp32_onnx"] == pytest.approx(float((fp32.argmax(-1) == gold).mean()))
    assert a["int8_fp32_agreement"] == pytest.approx(agree)
    assert a["int8_minus_fp32_points"] == pytest.approx(100 * (a["int8_onnx"] - a["fp32_onnx"]))
    assert a["fp32_torch"] == pytest.approx(a["fp32_onnx"], abs=1.5 / len(gold))
    assert card["graph"]["quantization"]["MatMulInteger"] == 6 * ARCH.layers + 2  # head too


def test_the_task_supernets_head_was_inherited(trained, folders):
    _, card = trained
    t = card["training"]
    assert t["pooler"] == "checkpoint" and t["classifier"] == "checkpoint"
    assert t["task_supernet"]["task"] == HEAD_TASK
    assert t["task_supernet"]["same_train_file"] is False
    head = read_task_head(folders["tsn"])
    assert head is not None and head.labels == LABELS
    assert torch.equal(head.classifier["weight"], folders["head"].classifier["weight"])


def test_task_eval_inherits_the_head_too(folders, capsys):
    argv = train_argv(folders, "tsn", folders["root"] / "unused", "--json")
    argv[1] = "eval"
    for flag in ("--hw", "--out", "--artifacts"):
        del argv[argv.index(flag) : argv.index(flag) + 2]
    argv[argv.index("--epochs") + 1] = "1"
    argv[argv.index("--batch") + 1] = "64"  # three steps: the head is what is checked
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    r = json.loads(out)
    assert r["pooler"] == "checkpoint" and r["classifier"] == "checkpoint"
    assert not (folders["root"] / "unused").exists()


def test_build_classifier_slices_a_task_head_to_the_subnet(tiny_supernet, folders):
    head = folders["head"]
    cfg = SubnetConfig.uniform(1, 64, 2, 64, 128)
    model = build_classifier(tiny_supernet, cfg, 3, pooler=head.pooler, classifier=head.classifier)
    assert torch.equal(model.classifier.weight, head.classifier["weight"][:, :64])
    assert torch.equal(model.classifier.bias, head.classifier["bias"])
    assert torch.equal(model.pooler.dense.weight, head.pooler["pooler.dense.weight"][:64, :64])


def test_the_card_says_what_model_json_says(trained):
    out, card = trained
    text = (out / "README.md").read_text()
    assert text == card_markdown(card)
    a, lat = card["accuracy"], card["latency"]
    for key in ("fp32_torch", "fp32_onnx", "int8_onnx", "majority", "int8_fp32_agreement"):
        assert f"{100 * a[key]:.2f} %" in text, key
    assert f"{a['int8_minus_fp32_points']:+.2f} points" in text
    for precision in ("int8", "fp32"):
        m = lat[precision]
        row = f"{m['median_ms']:.3f} ms | {m['p90_ms']:.3f} ms | {m['ratio']:.4f} | {m['runs']}"
        # What it takes on the device: the file's size and the measured memory.
        assert m["file_mb"] > 0 and m["memory_mb"] > 0 and m["peak_rss_mb"] > m["memory_mb"]
        row += f" | {m['file_mb']:.1f} MB | {m['memory_mb']:.1f} MB"
        assert f"{row} | {m['status']}" in text
    assert f"{card['params']['total']:,}" in text and lat["profile"]["hash"] in text
    assert card["task"]["train_sha256"] in text and card["task"]["dev_sha256"] in text


def test_the_latency_was_measured_on_the_profile(trained, folders):
    from bfnas.bench.hardware_profile import load_profile

    out, card = trained
    lat = card["latency"]
    profile = load_profile(str(folders["profile"]))
    assert lat["profile"] == {
        "name": "test-cpu-int8",
        "hash": profile.hash(),
        "source": str(folders["profile"]),
    }
    assert lat["recipe"]["name"] == "dynamic" and lat["threads"] == 1
    assert lat["versions"]["onnxruntime"] == ort.__version__
    for precision, file in (("int8", "model.int8.onnx"), ("fp32", "model.onnx")):
        m = lat[precision]
        assert m["file"] == file and m["sha256"] == file_sha256(out / file)
        assert m["status"] in ("ok", "unstable") and m["median_ms"] > 0
        assert m["runs"] >= profile.measure.min_runs and m["anchor_key"] == lat["anchor"]
        assert m["min_ms"] <= m["median_ms"] <= m["p90_ms"]
    assert card["params"]["total"] == (ARCH.params() + 128 * 128 + 128 + 3 * 128 + 3)


# -- predicting -------------------------------------------------------------------------------
def test_predict_gives_the_argmax_of_a_direct_onnx_runtime_run(trained, folders, tmp_path, capsys):
    out, _ = trained
    texts = list(read_task(folders["task"]).dev.a[:4])
    (tmp_path / "texts.txt").write_text(f"{texts[2]}\n\n{texts[3]}\n")
    code, stdout, err = run_cli(
        capsys,
        [
            "task",
            "predict",
            "--model",
            str(out),
            "--text",
            texts[0],
            "--text",
            texts[1],
            "--file",
            str(tmp_path / "texts.txt"),
            "--json",
        ],
    )
    assert code == 0, err
    got = json.loads(stdout)
    assert got["file"] == "model.int8.onnx"
    logits = ort_logits(out / "model.int8.onnx", dev_feeds(out, folders["task"], limit=4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rows = got["predictions"]
    assert [r["text"] for r in rows] == texts  # the blank line was skipped
    assert [r["label"] for r in rows] == [LABELS[i] for i in logits.argmax(-1)]
    for r, p in zip(rows, probs, strict=True):
        assert r["score"] == pytest.approx(p.max(), rel=1e-5)
        assert sum(r["scores"].values()) == pytest.approx(1.0)
        assert list(r["scores"]) == list(LABELS)
    # The plain form: label, score and text per line; --fp32 runs model.onnx.
    code, stdout, _ = run_cli(capsys, ["task", "predict", "--model", str(out), "--text", texts[0]])
    label, score, text = stdout.rstrip("\n").split("\t")
    assert code == 0 and label == rows[0]["label"] and text == texts[0]
    assert float(score) == pytest.approx(rows[0]["score"], abs=1e-4)
    fp32 = load_classifier(out, "fp32").predict(texts)
    direct = ort_logits(out / "model.onnx", dev_feeds(out, folders["task"], limit=4))
    assert [p.label for p in fp32] == [LABELS[i] for i in direct.argmax(-1)]


def test_the_python_classifier_is_the_public_one(trained):
    import bfnas

    out, _ = trained
    model = bfnas.load_classifier(out)
    [p] = model.predict(["Return the adjusted exponent of the number."])
    assert p.label in LABELS and 0 < p.score <= 1 and model.precision == "int8"
    with pytest.raises(TypeError):
        model.predict("one string, not a list")


def test_predicting_imports_neither_torch_nor_onnx(trained, tmp_path):
    """What the docs promise an application: numpy, tokenizers and onnxruntime only."""
    import subprocess
    import sys

    out, _ = trained
    code = (
        "import sys\n"
        "from bfnas import load_classifier\n"
        f"print(load_classifier({str(out)!r}).predict(['a widget in a window'])[0].label)\n"
        "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    label, loaded = done.stdout.splitlines()[-2:]
    assert label in LABELS and loaded == "[]"


def test_a_pair_models_text_is_two_parts_separated_by_a_tab(trained, tmp_path, capsys):
    out, _ = trained
    for f in PREDICT_FILES:
        shutil.copyfile(out / f, tmp_path / f)
    config = json.loads((tmp_path / "config.json").read_text())
    config["bfnas"]["text_columns"] = ["premise", "hypothesis"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_classifier(tmp_path)
    feed = model.feed("the loop runs\tit stops")
    tok, sp, _ = load_tokenizer(tmp_path)
    a = tok.encode("the loop runs", add_special_tokens=False).ids
    b = tok.encode("it stops", add_special_tokens=False).ids
    assert feed["input_ids"][0].tolist() == [sp.cls, *a, sp.sep, *b, sp.sep]
    assert feed["token_type_ids"][0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    code, _, err = run_cli(capsys, ["task", "predict", "--model", str(tmp_path), "--text", "x"])
    assert code == 2 and "--text: this model reads two parts separated by a tab" in err


# -- int8-aware, from a plain supernet, and a failure on the way ------------------------------
def test_int8_aware_training_from_a_plain_supernet(folders, capsys_module):
    """The plain supernet has no pooler (fresh head); int8-aware fine-tuning runs the model as
    the INT8 file does, so torch's fake-quantized logits are the INT8 file's."""
    out = folders["root"] / "model-int8-aware"
    argv = train_argv(folders, "sn", out, "--int8-aware", "--json")
    argv[argv.index("--epochs") + 1] = "1"
    argv[argv.index("--batch") + 1] = "32"
    code, stdout, err = capsys_module(argv)
    assert code == 0, err
    card = json.loads(stdout)
    t = card["training"]
    assert t["int8_aware"] and t["settings"]["int8_aware"]
    assert t["pooler"] == "fresh" and t["classifier"] == "fresh" and t["task_supernet"] is None
    model = torch_classifier(out, ARCH, 3)
    model.int8_aware = True
    feeds = dev_feeds(out, folders["task"], limit=8)
    with torch.no_grad():
        fake = np.concatenate([model(*(torch.from_numpy(f[k]) for k in f)).numpy() for f in feeds])
    int8 = ort_logits(out / "model.int8.onnx", feeds)
    assert np.abs(fake - int8).max() < 1e-3
    assert "Fine-tuned int8-aware" in (out / "README.md").read_text()


def test_a_failure_after_training_leaves_the_output_untouched(folders, tmp_path):
    from bfnas.bench.runners.base import Runner
    from bfnas.task_model import train_task_model

    class Broken(Runner):
        def run(self, *args):
            raise OperationFailed("the device went away")

    out = tmp_path / "model"
    task = write_task(
        tmp_path / "task",
        [(f"{w} sentence number {i}", w) for i in range(12) for w in ("alpha", "beta")],
        train=16,
    )
    with pytest.raises(OperationFailed, match="went away"):
        train_task_model(
            folders["sn"],
            ARCH,
            task,
            str(folders["profile"]),
            out,
            settings=FinetuneSettings(epochs=1, batch=16, max_len=16),
            space=str(folders["space"]),
            artifacts=folders["root"] / "artifacts",
            make_runner=lambda profile: Broken(),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]


# -- bad input --------------------------------------------------------------------------------
def _copy(source_key: str, names: tuple[str, ...] | None = None):
    """A maker copying (some files of) a folder made by a fixture."""

    def make(path: Path) -> None:
        source = Path(TRAINED["folder"]) if source_key == "model" else FOLDERS[source_key]
        path.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():
            if names is None or f.name in names:
                shutil.copyfile(f, path / f.name)

    return make


FOLDERS: dict = {}
TSV_OK = "sentence\tlabel\nthe window widget\ttkinter\nthe decimal context\tdecimal\n"
PREDICT_FILES = ("config.json", "labels.json", "tokenizer.json", "model.int8.onnx")


def task_row(id: str, names: str, files: dict) -> Refusal:
    argv = [
        "task",
        "train",
        "--supernet",
        "{tmp}/tsn",
        "--task-dir",
        "{tmp}/task",
        "--arch",
        ARCH_JSON,
        "--hw",
        "{tmp}/fast.toml",
        "--out",
        "{tmp}/model",
        "--space",
        "{tmp}/tiny.toml",
        "--epochs",
        "1",
        "--artifacts",
        "{tmp}/artifacts",
    ]
    return Refusal(id, argv, names, files)


def predict_row(id: str, names: str, files: dict, extra: tuple[str, ...] = ()) -> Refusal:
    argv = ["task", "predict", "--model", "{tmp}/model", "--text", "a widget", *extra]
    return Refusal(id, argv, names, files)


def _damage(name: str, text: str):
    def make(path: Path) -> None:
        _copy("model", PREDICT_FILES)(path)
        (path / name).write_text(text)

    return make


def _without(name: str):
    def make(path: Path) -> None:
        _copy("model", PREDICT_FILES)(path)
        (path / name).unlink()

    return make


def _config_without_id2label(path: Path) -> None:
    _copy("model", PREDICT_FILES)(path)
    config = json.loads((path / "config.json").read_text())
    del config["id2label"]
    (path / "config.json").write_text(json.dumps(config))


REFUSALS = [
    task_row("missing-split", "{tmp}/task/dev.tsv: missing", {"task/train.tsv": TSV_OK}),
    task_row(
        "unknown-columns",
        "{tmp}/task/train.tsv: header: no text column",
        {"task/train.tsv": "words\tlabel\nx\ta\ny\tb\n", "task/dev.tsv": TSV_OK},
    ),
    task_row(
        "dev-label-train-never-had",
        "{tmp}/task/dev.tsv: line 3: label 'email' does not occur in",
        {
            "task/train.tsv": TSV_OK,
            "task/dev.tsv": "sentence\tlabel\nsome widget\ttkinter\na message\temail\n",
        },
    ),
    task_row(
        "empty-file",
        "{tmp}/task/train.tsv: header: empty file",
        {"task/train.tsv": "", "task/dev.tsv": TSV_OK},
    ),
    task_row(
        "header-only",
        "{tmp}/task/dev.tsv: no examples",
        {"task/train.tsv": TSV_OK, "task/dev.tsv": "sentence\tlabel\n"},
    ),
    task_row(
        "head-of-another-task",
        "{tmp}/tsn/task.json: labels: asyncio, email, tkinter, but {tmp}/task/train.tsv has",
        {"task/train.tsv": TSV_OK, "task/dev.tsv": TSV_OK, "tsn": _copy("tsn")},
    ),
    task_row(
        "damaged-task-json",
        "{tmp}/tsn/task.json: labels: must list two or more distinct label names",
        {
            "task/train.tsv": TSV_OK,
            "task/dev.tsv": TSV_OK,
            "tsn": _copy("tsn"),
            "tsn/task.json": '{"labels": ["only"]}',
        },
    ),
    task_row(
        "out-is-someone-elses-folder",
        "--out: {tmp}/model: holds files and is not a model folder bfnas wrote",
        {"task/train.tsv": TSV_OK, "task/dev.tsv": TSV_OK, "model/README.md": "my project"},
    ),
    predict_row(
        "missing-int8-file",
        "{tmp}/model/model.int8.onnx: missing",
        {"model": _without("model.int8.onnx")},
    ),
    predict_row(
        "config-without-id2label",
        "{tmp}/model/config.json: id2label: missing",
        {"model": _config_without_id2label},
    ),
    predict_row(
        "damaged-labels-json",
        "{tmp}/model/labels.json: not valid JSON",
        {"model": _damage("labels.json", '["decimal", "email"')},
    ),
    predict_row(
        "labels-json-disagrees",
        "{tmp}/model/labels.json: ['a', 'b', 'c'] differs from config.json's id2label",
        {"model": _damage("labels.json", '["a", "b", "c"]')},
    ),
    predict_row(
        "tokenizer-missing",
        "{tmp}/model/tokenizer.json: no tokenizer.json or vocab.txt here",
        {"model": _without("tokenizer.json")},
    ),
    predict_row(
        "damaged-onnx",
        "{tmp}/model/model.int8.onnx: damaged or not an ONNX model",
        {"model": _damage("model.int8.onnx", "not a model")},
    ),
    predict_row(
        "empty-text-file",
        "{tmp}/empty.txt: no texts in it",
        {"model": _copy("model", PREDICT_FILES), "empty.txt": "\n\n"},
        ("--file", "{tmp}/empty.txt"),
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[r.id for r in REFUSALS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case, trained, folders, tmp_path, capsys, monkeypatch
):
    FOLDERS.update(tsn=folders["tsn"], sn=folders["sn"])
    (tmp_path / "tiny.toml").write_text(folders["space"].read_text())
    (tmp_path / "fast.toml").write_text(PROFILE)
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_read_task_head_is_none_for_a_plain_supernet_and_names_a_missing_tensor(folders, tmp_path):
    assert read_task_head(folders["sn"]) is None
    assert read_task_head("minilm") is None
    broken = tmp_path / "tsn"
    shutil.copytree(folders["tsn"], broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["classifier.bias"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(InputError, match=r"model.safetensors: classifier.bias: missing"):
        read_task_head(broken)
    tensors["classifier.bias"] = torch.zeros(5)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(InputError, match=r"classifier.bias: shape \(5,\), expected \(3,\)"):
        read_task_head(broken)
