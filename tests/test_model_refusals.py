"""Damaged models are one line naming the file and the field, exit 2, nothing written:
a Hugging Face checkpoint given as `--checkpoint DIR` (cause 7), a predictor folder written by
`predictor fit` (cause 9); and `--arch` read the same way everywhere, `@file.json` included
(cause 10).

Every row starts from a real, working model (a tiny BERT checkpoint made here, a predictor
fitted on the seed table) and damages one thing in it."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SEED_FILE, TINY_SPACE
from refusals import Refusal, check_refusal, run_cli
from safetensors.torch import save as safetensors_bytes

from bfnas.cli import main
from bfnas.search.features import FEATURES
from bfnas.search.latency_predictor import ESTIMATE_COLUMNS
from bfnas.search.predictor_file import FORMAT

# -- a tiny BERT checkpoint, in Hugging Face's layout ------------------------------------------
CONFIG = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "vocab_size": 1200,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
}


def _state() -> dict[str, torch.Tensor]:
    from bfnas.models.nn.bert import Vocab
    from bfnas.models.nn.supernet import SuperBert, SupernetDims

    vocab = Vocab(
        CONFIG["vocab_size"], CONFIG["max_position_embeddings"], CONFIG["type_vocab_size"]
    )
    dims = SupernetDims(CONFIG["num_hidden_layers"], 64, 64, CONFIG["intermediate_size"], vocab)
    return {k: v.contiguous() for k, v in SuperBert.random(dims, seed=0).state_dict().items()}


STATE = _state()
SAFETENSORS = safetensors_bytes(STATE)


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Pwn:
    """What a hostile checkpoint holds: unpickling it runs a shell command."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def config(**change) -> str:
    cfg = {**CONFIG, **change}
    return json.dumps({k: v for k, v in cfg.items() if v is not None})


def checkpoint(**files: bytes | str) -> dict:
    """A checkpoint folder `ckpt/` (config.json + model.safetensors unless replaced; a
    None value leaves the file out) and the tiny space that fits it."""
    layout = {"config.json": config(), "model.safetensors": SAFETENSORS, **files}
    out = {f"ckpt/{name}": body for name, body in layout.items() if body is not None}
    return {**out, "tiny.toml": TINY_SPACE}


EXPORT = [
    "export",
    "--space",
    "{tmp}/tiny.toml",
    "--checkpoint",
    "{tmp}/ckpt",
    "--sample",
    "--out",
    "{tmp}/cache",
]
ARCH = '{"layers": 1, "hidden": 64, "heads": 2, "qkv": 64, "ffn": 128}'
TASK = {
    "task/train.tsv": "sentence\tlabel\nit is good\t1\nit is bad\t0\nfine\t1\nawful\t0\n",
    "task/dev.tsv": "sentence\tlabel\nquite good\t1\nquite bad\t0\n",
}
TASK_EVAL = [
    "task",
    "eval",
    "--supernet",
    "{tmp}/ckpt",
    "--task-dir",
    "{tmp}/task",
    "--arch",
    ARCH,
    "--space",
    "{tmp}/tiny.toml",
    "--epochs",
    "1",
]
BIN = {"model.safetensors": None}
HALF = len(SAFETENSORS) // 2

CHECKPOINT_ROWS = [
    # An unsafe pickle: refused without running it, and without torch's advice to run it.
    Refusal(
        "pickle-code-zip",
        EXPORT,
        "{tmp}/ckpt/pytorch_model.bin: holds code or objects that are not plain tensors",
        checkpoint(**BIN, **{"pytorch_model.bin": _torch_bytes({"w": Pwn()})}),
    ),
    Refusal(
        "pickle-code-raw",
        EXPORT,
        "pytorch_model.bin: holds code or objects",
        checkpoint(**BIN, **{"pytorch_model.bin": pickle.dumps({"w": Pwn()}, protocol=2)}),
    ),
    Refusal(
        "pickle-not-tensors",
        EXPORT,
        "pytorch_model.bin: embeddings.word_embeddings.weight: expected a tensor, got list",
        checkpoint(
            **BIN,
            **{
                "pytorch_model.bin": _torch_bytes(
                    {**STATE, "embeddings.word_embeddings.weight": [1, 2]}
                )
            },
        ),
    ),
    Refusal(
        "pickle-not-named",
        EXPORT,
        "pytorch_model.bin: expected tensor names",
        checkpoint(**BIN, **{"pytorch_model.bin": _torch_bytes({1: torch.zeros(2)})}),
    ),
    Refusal(
        "bin-garbage",
        EXPORT,
        "pytorch_model.bin: damaged or not a PyTorch weights file",
        checkpoint(**BIN, **{"pytorch_model.bin": bytes(range(7, 256)) * 8}),
    ),
    Refusal(
        "bin-truncated",
        EXPORT,
        "pytorch_model.bin: damaged or truncated",
        checkpoint(**BIN, **{"pytorch_model.bin": _torch_bytes(STATE)[:4000]}),
    ),
    Refusal(
        "safetensors-garbage",
        EXPORT,
        "model.safetensors: damaged or not a safetensors file",
        checkpoint(**{"model.safetensors": b"\x00garbage" * 100}),
    ),
    Refusal(
        "safetensors-truncated",
        EXPORT,
        "model.safetensors: damaged or not a safetensors file",
        checkpoint(**{"model.safetensors": SAFETENSORS[:HALF]}),
    ),
    Refusal(
        "safetensors-empty",
        EXPORT,
        "model.safetensors: damaged",
        checkpoint(**{"model.safetensors": b""}),
    ),
    Refusal("no-weights", EXPORT, "{tmp}/ckpt: no weights found", checkpoint(**BIN)),
    Refusal(
        "weights-other-shape",
        EXPORT,
        "model.safetensors: encoder.layer.0.intermediate.dense.weight: shape",
        checkpoint(
            **{
                "model.safetensors": safetensors_bytes(
                    {**STATE, "encoder.layer.0.intermediate.dense.weight": torch.zeros(10, 64)}
                )
            }
        ),
    ),
    Refusal(
        "weights-integers",
        EXPORT,
        "model.safetensors: embeddings.LayerNorm.weight: torch.int64",
        checkpoint(
            **{
                "model.safetensors": safetensors_bytes(
                    {**STATE, "embeddings.LayerNorm.weight": torch.ones(64, dtype=torch.int64)}
                )
            }
        ),
    ),
    # config.json: not JSON, not an object, a field missing or of the wrong type.
    Refusal(
        "config-not-json",
        EXPORT,
        "ckpt/config.json: not valid JSON",
        checkpoint(**{"config.json": "{hidden_size: 64"}),
    ),
    Refusal(
        "config-binary",
        EXPORT,
        "ckpt/config.json: not a text file",
        checkpoint(**{"config.json": b"\xff\xfe\x00\x01"}),
    ),
    Refusal(
        "config-a-list",
        EXPORT,
        "ckpt/config.json: expected a JSON object, got list",
        checkpoint(**{"config.json": "[64, 2]"}),
    ),
    Refusal(
        "config-nested",
        EXPORT,
        "ckpt/config.json: JSON nested too deeply",
        checkpoint(**{"config.json": "[" * 100_000 + "]" * 100_000}),
    ),
    Refusal(
        "config-no-hidden",
        EXPORT,
        "ckpt/config.json: hidden_size: missing",
        checkpoint(**{"config.json": config(hidden_size=None)}),
    ),
    Refusal(
        "config-no-vocab",
        EXPORT,
        "ckpt/config.json: vocab_size: missing",
        checkpoint(**{"config.json": config(vocab_size=None)}),
    ),
    Refusal(
        "config-layers-text",
        EXPORT,
        "ckpt/config.json: num_hidden_layers: must be a positive integer",
        checkpoint(**{"config.json": config(num_hidden_layers="2")}),
    ),
    Refusal(
        "config-eps-bool",
        EXPORT,
        "ckpt/config.json: layer_norm_eps: must be a positive number",
        checkpoint(**{"config.json": config(layer_norm_eps=True)}),
    ),
    Refusal(
        "config-model-type",
        EXPORT,
        "ckpt/config.json: model_type: only 'bert'",
        checkpoint(**{"config.json": config(model_type=["bert"])}),
    ),
    # A config asking for more than the weights hold is refused before anything is built.
    Refusal(
        "config-billion-layers",
        EXPORT,
        "ckpt/config.json: num_hidden_layers: 1000000000, but model.safetensors holds 2 layers",
        checkpoint(**{"config.json": config(num_hidden_layers=10**9)}),
    ),
    Refusal(
        "config-wide",
        EXPORT,
        "model.safetensors: embeddings.word_embeddings.weight: shape",
        checkpoint(**{"config.json": config(hidden_size=1 << 20, intermediate_size=1 << 20)}),
    ),
    Refusal(
        "config-missing",
        EXPORT,
        "ckpt/config.json: cannot read",
        checkpoint(**{"config.json": None}),
    ),
    # The vocabulary beside the weights: missing, or not one.
    Refusal(
        "vocab-missing", TASK_EVAL, "holds no tokenizer.json or vocab.txt", {**checkpoint(), **TASK}
    ),
    Refusal(
        "vocab-binary",
        TASK_EVAL,
        "ckpt/vocab.txt: not a tokenizer",
        {**checkpoint(**{"vocab.txt": bytes(range(128, 256)) * 4}), **TASK},
    ),
    Refusal(
        "tokenizer-not-json",
        TASK_EVAL,
        "ckpt/tokenizer.json: not a tokenizer",
        {**checkpoint(**{"tokenizer.json": '{"model": '}), **TASK},
    ),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", CHECKPOINT_ROWS, ids=lambda c: c.id)
def test_a_damaged_checkpoint_is_one_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the hostile pickle would `touch PWNED`
    line = check_refusal(case, tmp_path, capsys, monkeypatch)
    assert not (tmp_path / "PWNED").exists()
    # torch's own text advises loading with weights_only=False: never passed on.
    assert "weights_only" not in line and "Traceback" not in line


def test_the_undamaged_checkpoint_loads(tmp_path):
    """The rows above damage a checkpoint that works: its weights come back exactly."""
    from refusals import lay_out

    from bfnas.models.nn.checkpoint import load_supernet

    lay_out(tmp_path, checkpoint())
    for name, value in load_supernet(tmp_path / "ckpt").state_dict().items():
        assert torch.equal(value, STATE[name]), name
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    (tmp_path / "ckpt" / "pytorch_model.bin").write_bytes(
        _torch_bytes({f"bert.{k}": v for k, v in STATE.items()})
    )
    assert torch.equal(
        load_supernet(tmp_path / "ckpt").state_dict()["embeddings.LayerNorm.bias"],
        STATE["embeddings.LayerNorm.bias"],
    )


@pytest.mark.parametrize(
    ("vocab_size", "positions", "refused"),
    [
        (300, 128, None),  # a small vocabulary exports: its token ids are drawn within it
        (1200, 16, "--checkpoint: max_position_embeddings: 16 positions"),
    ],
)
def test_a_small_checkpoint_exports_or_names_what_is_too_small(
    vocab_size, positions, refused, tmp_path, capsys, monkeypatch
):
    from refusals import lay_out

    from bfnas.models.nn.bert import Vocab
    from bfnas.models.nn.supernet import SuperBert, SupernetDims

    vocab = Vocab(vocab_size, positions, CONFIG["type_vocab_size"])
    dims = SupernetDims(CONFIG["num_hidden_layers"], 64, 64, CONFIG["intermediate_size"], vocab)
    state = {k: v.contiguous() for k, v in SuperBert.random(dims, seed=0).state_dict().items()}
    files = checkpoint(
        **{
            "config.json": config(vocab_size=vocab_size, max_position_embeddings=positions),
            "model.safetensors": safetensors_bytes(state),
        }
    )
    files["tiny.toml"] = (
        'name = "small"\nlayers = {min = 1, max = 2}\nhidden = 64\n'
        "heads = [1, 2]\nqkv = 64\nffn = {min = 64, max = 128, step = 64}\n"
    )
    if refused:
        check_refusal(Refusal("small", EXPORT, refused, files), tmp_path, capsys, monkeypatch)
        return
    lay_out(tmp_path, files)
    code, _, err = run_cli(capsys, [a.replace("{tmp}", str(tmp_path)) for a in EXPORT])
    assert code == 0, err


# -- a predictor folder, fitted on the seed table ---------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fitted")
    src = folder / "seed.tsv"
    src.write_text("\n".join(SEED_FILE.read_text().splitlines()[:300]) + "\n")
    db = folder / "lat.db"
    assert (
        main(
            [
                "import",
                str(src),
                "--hw",
                "seed-cpu-fp32",
                "--space",
                "bigger-faster",
                "--db",
                str(db),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "seed-cpu-fp32",
                "--db",
                str(db),
                "--out",
                str(folder / "pred"),
                "--target",
                "log",
            ]
        )
        == 0
    )
    return folder / "pred", db


def meta(change: Callable[[dict], object], keep_hash: bool = True) -> Callable[[Path], None]:
    """Edit predictor.json in place (`change` mutates the dict, or returns a replacement)."""

    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        if not keep_hash:
            data.pop("model_sha256")
        out = change(data)
        path.write_text(json.dumps(data if out is None else out))

    return edit


def model(change: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    """Edit model.txt in place, in a folder from before predictor.json held its hash (so
    model.txt itself is checked, not its hash)."""

    def edit(path: Path) -> None:
        out = change(path.read_text())
        path.write_bytes(out if isinstance(out, bytes) else out.encode())
        meta(lambda d: None, keep_hash=False)(path.parent / "predictor.json")

    return edit


def _cut_in_tree(text: str) -> str:
    return text[: text.index("Tree=1\n") + 40]


def _other_features(_: str) -> str:
    import lightgbm as lgb
    import numpy as np

    x = np.random.default_rng(0).random((40, 3))
    return lgb.train({"verbose": -1}, lgb.Dataset(x, x[:, 0]), 2).model_to_string()


PREDICT = [
    "predictor",
    "predict",
    "--model",
    "{tmp}/pred",
    "--arch",
    '{"layers": 3, "hidden": 132, "heads": 12, "qkv": 132, "ffn": 512}',
]
EVAL = ["predictor", "eval", "--model", "{tmp}/pred", "--db", "{tmp}/lat.db"]
PLOT = [
    "predictor",
    "plot",
    "--model",
    "{tmp}/pred",
    "--db",
    "{tmp}/lat.db",
    "--out",
    "{tmp}/p.png",
]
SEARCH = [
    "search",
    "--hw",
    "local-cpu-fp32",
    "--space",
    "bigger-faster",
    "--db",
    "{tmp}/lat.db",
    "--max-latency-ms",
    "5",
    "--model",
    "{tmp}/pred",
    "--verify",
    "0",
    "--out",
    "{tmp}/found",
]
JSON = "{tmp}/pred/predictor.json"
TXT = "{tmp}/pred/model.txt"

PREDICTOR_ROWS = [
    # model.txt: garbage, cut short, or another model than predictor.json describes.
    Refusal(
        "model-garbage",
        PREDICT,
        f"{TXT}: changed or damaged since it was fitted",
        {"pred/model.txt": b"\x00\x01garbage\xff" * 50},
    ),
    Refusal(
        "model-cut-hashed",
        EVAL,
        f"{TXT}: changed or damaged",
        {"pred/model.txt": lambda p: p.write_bytes(p.read_bytes()[:500])},
    ),
    Refusal(
        "model-binary-old",
        PREDICT,
        f"{TXT}: not a LightGBM model (not a text file)",
        {"pred/model.txt": model(lambda t: b"tree\n\xff\xfe")},
    ),
    Refusal(
        "model-text-old",
        EVAL,
        f"{TXT}: not a LightGBM model",
        {"pred/model.txt": model(lambda t: "hello\n")},
    ),
    Refusal(
        "model-cut-in-a-tree",
        PREDICT,
        f"{TXT}: Tree=1: cut short or damaged",
        {"pred/model.txt": model(_cut_in_tree)},
    ),
    Refusal(
        "model-leaves-text",
        PLOT,
        f"{TXT}: Tree=0.num_leaves: expected 1 integer",
        {"pred/model.txt": model(lambda t: t.replace("num_leaves=", "num_leaves=x", 1))},
    ),
    Refusal(
        "model-child-out-of-tree",
        PREDICT,
        f"{TXT}: Tree=0.left_child: a child outside the tree",
        {
            "pred/model.txt": model(
                lambda t: re.sub(r"left_child=-?\d+", "left_child=999", t, count=1)
            )
        },
    ),
    Refusal(
        "model-objective",
        PREDICT,
        f"{TXT}: not a LightGBM model (",
        {
            "pred/model.txt": model(
                lambda t: t.replace("objective=regression", "objective=nonsense")
            )
        },
    ),
    Refusal(
        "model-other-features",
        EVAL,
        f"{TXT}: feature_names: 3 features, not the {len(FEATURES)}",
        {"pred/model.txt": model(_other_features)},
    ),
    Refusal(
        "model-missing", PREDICT, f"{TXT}: cannot read", {"pred/model.txt": lambda p: p.unlink()}
    ),
    # predictor.json: the wrong JSON type, a field missing or of the wrong type.
    Refusal(
        "meta-a-list",
        PREDICT,
        f"{JSON}: not a bfnas predictor: expected a JSON object, got list",
        {"pred/predictor.json": "[2]"},
    ),
    Refusal(
        "meta-a-number",
        SEARCH,
        f"{JSON}: not a bfnas predictor: expected a JSON object, got int",
        {"pred/predictor.json": "2"},
    ),
    Refusal(
        "meta-not-json",
        PREDICT,
        f"{JSON}: not a bfnas predictor: not valid JSON",
        {"pred/predictor.json": "{format: 2"},
    ),
    Refusal(
        "meta-binary", PREDICT, f"{JSON}: not a text file", {"pred/predictor.json": b"\xff\xfe\x00"}
    ),
    Refusal(
        "meta-no-scope",
        PREDICT,
        f"{JSON}: scope: missing",
        {"pred/predictor.json": meta(lambda d: d.pop("scope") and None)},
    ),
    Refusal(
        "meta-no-target",
        EVAL,
        f"{JSON}: settings.target: missing",
        {"pred/predictor.json": meta(lambda d: d["settings"].pop("target") and None)},
    ),
    Refusal(
        "meta-scope-a-list",
        SEARCH,
        f"{JSON}: scope: Input should be an object",
        {"pred/predictor.json": meta(lambda d: d.update(scope=[1]))},
    ),
    Refusal(
        "meta-seq-len-text",
        PREDICT,
        f"{JSON}: scope.seq_len: Input should be a valid integer (got '128')",
        {"pred/predictor.json": meta(lambda d: d["scope"].update(seq_len="128"))},
    ),
    Refusal(
        "meta-coef-strings",
        PREDICT,
        f"{JSON}: estimate_coef[0]: Input should be a valid number",
        {
            "pred/predictor.json": meta(
                lambda d: d.update(
                    settings={**d["settings"], "target": "ratio"},
                    estimate_coef=["1.5"] * (len(ESTIMATE_COLUMNS) + 1),
                )
            )
        },
    ),
    Refusal(
        "meta-coef-negative",
        PREDICT,
        f"{JSON}: estimate_coef[2]: a cost cannot be negative",
        {
            "pred/predictor.json": meta(
                lambda d: d.update(
                    settings={**d["settings"], "target": "ratio"},
                    estimate_coef=[1.0, 0.0, -1e-9] + [0.0] * (len(ESTIMATE_COLUMNS) - 2),
                )
            )
        },
    ),
    Refusal(
        "meta-coef-too-few",
        PREDICT,
        f"{JSON}: estimate_coef: the ratio target needs {len(ESTIMATE_COLUMNS) + 1}",
        {
            "pred/predictor.json": meta(
                lambda d: d.update(
                    settings={**d["settings"], "target": "ratio"}, estimate_coef=[1.0]
                )
            )
        },
    ),
    Refusal(
        "meta-spread-empty",
        PREDICT,
        f"{JSON}: spread: List should have at least 2 items",
        {"pred/predictor.json": meta(lambda d: d.update(spread=[]))},
    ),
    Refusal(
        "meta-spread-text",
        SEARCH,
        f"{JSON}: spread: Input should be a valid array",
        {"pred/predictor.json": meta(lambda d: d.update(spread="wide"))},
    ),
    Refusal(
        "meta-spread-negative",
        PREDICT,
        f"{JSON}: spread[0]: Input should be greater than 0",
        {"pred/predictor.json": meta(lambda d: d.update(spread=[-1.0, 1.1]))},
    ),
    Refusal(
        "meta-unit-a-list",
        PREDICT,
        f"{JSON}: metrics.label: Input should be a valid string",
        {"pred/predictor.json": meta(lambda d: d["metrics"].update(label=["ms"]))},
    ),
    Refusal(
        "meta-unknown-setting",
        EVAL,
        f"{JSON}: settings.depth: unknown field",
        {"pred/predictor.json": meta(lambda d: d["settings"].update(depth=3))},
    ),
    Refusal(
        "meta-rounds-disagree",
        PREDICT,
        f"{TXT}: tree_sizes:",
        {"pred/predictor.json": meta(lambda d: d.update(rounds=d["rounds"] + 5))},
    ),
    Refusal(
        "meta-format",
        PREDICT,
        f"{JSON}: format: 9, this bfnas reads {FORMAT}",
        {"pred/predictor.json": meta(lambda d: d.update(format=9))},
    ),
    Refusal(
        "meta-missing",
        PREDICT,
        f"{JSON}: cannot read",
        {"pred/predictor.json": lambda p: p.unlink()},
    ),
    Refusal(
        "no-such-folder",
        ["predictor", "predict", "--model", "{tmp}/nowhere", "--arch", PREDICT[-1]],
        "{tmp}/nowhere: no such predictor folder (one holding predictor.json",
    ),
]


@pytest.mark.parametrize("case", PREDICTOR_ROWS, ids=lambda c: c.id)
def test_a_damaged_predictor_is_one_line(case, fitted, tmp_path, capsys, monkeypatch):
    folder, db = fitted
    shutil.copytree(folder, tmp_path / "pred")  # each row damages its own copy
    shutil.copy(db, tmp_path / "lat.db")
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_the_undamaged_predictor_loads_old_and_new(fitted, tmp_path, capsys):
    """The rows above damage a folder that works, with its model.txt hash and without."""
    folder, _ = fitted
    shutil.copytree(folder, tmp_path / "pred")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in PREDICT] + ["--json"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    first = json.loads(out)["latency_ms"]
    meta(lambda d: None, keep_hash=False)(tmp_path / "pred" / "predictor.json")
    code, out, err = run_cli(capsys, argv)
    assert code == 0 and json.loads(out)["latency_ms"] == first > 0, err


# -- --arch: JSON text, a path, or @path, read by one parser in every command ----------------
GOOD_ARCH = '{"layers": 3, "hidden": 132, "heads": 12, "qkv": 132, "ffn": 512}'
ARCH_ROWS = [
    Refusal(
        "at-file-missing",
        [*PREDICT[:4], "--arch", "@{tmp}/nope.json"],
        "{tmp}/nope.json: cannot read the --arch file (No such file",
    ),
    Refusal(
        "at-file-binary",
        [*PREDICT[:4], "--arch", "@{tmp}/a.json"],
        "{tmp}/a.json: --arch: not a text file",
        {"a.json": b"\x89PNG\r\n\x1a\n\xff\xfe"},
    ),
    Refusal(
        "at-file-not-json",
        [*PREDICT[:4], "--arch", "@{tmp}/a.json"],
        "{tmp}/a.json: not valid JSON",
        {"a.json": "layers: 3"},
    ),
    Refusal("at-nothing", [*PREDICT[:4], "--arch", "@"], "--arch: names no file"),
    Refusal(
        "at-file-outside-space",
        [*PREDICT[:4], "--arch", "@{tmp}/a.json"],
        "{tmp}/a.json: hidden: 999",
        {"a.json": GOOD_ARCH.replace("132", "999", 1)},
    ),
    Refusal(
        "export-at-file-missing",
        ["export", "--space", "{tmp}/tiny.toml", "--arch", "@{tmp}/x.json", "--out", "{tmp}/cache"],
        "{tmp}/x.json: cannot read the --arch file",
        {"tiny.toml": TINY_SPACE},
    ),
    Refusal(
        "bench-at-file-not-json",
        ["bench", "--space", "bigger-faster", "--arch", "@{tmp}/x.json"],
        "{tmp}/x.json: not valid JSON",
        {"x.json": "{"},
    ),
    Refusal(
        "task-at-file-binary",
        [
            "task",
            "eval",
            "--supernet",
            "{tmp}/ckpt",
            "--task-dir",
            "{tmp}/task",
            "--arch",
            "@{tmp}/x.json",
        ],
        "{tmp}/x.json: --arch: not a text file",
        {"x.json": b"\xff\xfe\xfd"},
    ),
    Refusal(
        "task-train-at-file-missing",
        [
            "task",
            "train",
            "--supernet",
            "{tmp}/ckpt",
            "--task-dir",
            "{tmp}/task",
            "--out",
            "{tmp}/model",
            "--arch",
            "@{tmp}/x.json",
        ],
        "{tmp}/x.json: cannot read the --arch file",
    ),
]


@pytest.mark.parametrize("case", ARCH_ROWS, ids=lambda c: c.id)
def test_a_bad_arch_file_is_one_line(case, fitted, tmp_path, capsys, monkeypatch):
    shutil.copytree(fitted[0], tmp_path / "pred")
    check_refusal(case, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("form", ["json", "path", "at-path"])
def test_arch_as_json_a_path_or_at_path_gives_the_same_prediction(form, fitted, tmp_path, capsys):
    (tmp_path / "arch.json").write_text(GOOD_ARCH)
    arch = {
        "json": GOOD_ARCH,
        "path": str(tmp_path / "arch.json"),
        "at-path": f"@{tmp_path}/arch.json",
    }
    code, out, err = run_cli(
        capsys, ["predictor", "predict", "--model", str(fitted[0]), "--arch", arch[form], "--json"]
    )
    assert code == 0, err
    pred = json.loads(out)
    assert pred["arch"]["hidden"] == 132 and pred["latency_ms"] > 0


def test_every_arch_flag_promises_what_the_parser_reads(capsys):
    """Each command's --arch help says the same thing, and it names all three forms."""
    from bfnas.commands.common import ARCH_HELP

    for cmd in (
        ["predictor", "predict"],
        ["export"],
        ["bench"],
        ["task", "eval"],
        ["task", "train"],
    ):
        code, out, _ = run_cli(capsys, [*cmd, "--help"])
        text = " ".join(out.split())
        assert code == 0 and " ".join(ARCH_HELP.split()) in text, cmd
    assert "JSON text" in ARCH_HELP and "@path" in ARCH_HELP and "path" in ARCH_HELP
