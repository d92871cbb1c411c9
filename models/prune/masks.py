"""Masks over a BERT's encoder linear weights: what a lottery ticket is.

A mask is a dict from a parameter's name (Hugging Face's, as `Bert` and `SubnetClassifier`
name them) to a bool tensor of its shape, True where the weight survives. Only the encoder's
six linear weights per layer are pruned (query, key, value, the attention output, the FFN's
two); the embeddings, biases, LayerNorms, pooler and classifier stay dense, as Chen et al.
(2020) leave them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

# The encoder's linear weights, relative to `encoder.layer.N.`.
PRUNABLE = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
)

Masks = dict[str, Tensor]


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The encoder linear weights of `model` (a `Bert`, or a classifier holding one as
    `bert`), by name, in layer order."""
    return {
        name: p
        for name, p in model.named_parameters()
        if ".encoder.layer." in f".{name}"
        and name.split("encoder.layer.")[1].split(".", 1)[1] in PRUNABLE
    }


def full_masks(model: nn.Module) -> Masks:
    """Every prunable weight kept."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable(model).items()}


def sparsity(masks: Mapping[str, Tensor]) -> float:
    """The fraction of the masked weights pruned."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def weight_sparsity(model: nn.Module) -> float:
    """The fraction of `model`'s prunable weights that are exactly zero: the sparsity a
    ticket's file carries, measured rather than taken from its mask."""
    weights = prunable(model).values()
    total = sum(p.numel() for p in weights)
    return sum(int((p == 0).sum()) for p in weights) / total if total else 0.0


def onnx_linear_weights(path: Path) -> tuple[int, int]:
    """(zeros, count) of the encoder linear weights in an ONNX file bfnas wrote
    (initializers `encoder.layer.N.<linear>.weight_t`): what a ticket's exported file
    carries."""
    import onnx
    from onnx import numpy_helper

    zeros = total = 0
    suffixes = tuple(p.removesuffix(".weight") + ".weight_t" for p in PRUNABLE)
    for init in onnx.load(str(path)).graph.initializer:
        if init.name.startswith("encoder.layer.") and init.name.endswith(suffixes):
            w = numpy_helper.to_array(init)
            zeros += int((w == 0).sum())
            total += w.size
    if not total:
        raise ValueError(f"{path}: no encoder linear weights found")
    return zeros, total


def onnx_weight_sparsity(path: Path, dense_count: int | None = None) -> float:
    """The share of the encoder linear weights a ticket's ONNX file does without: its zeros,
    and with `dense_count` (how many the unpruned model's file has, `onnx_linear_weights`)
    the weights it no longer has at all (a structured ticket is a smaller dense model)."""
    zeros, total = onnx_linear_weights(path)
    return 1.0 - (total - zeros) / (dense_count or total)


def magnitude_masks(weights: Mapping[str, Tensor], masks: Masks, target: float) -> Masks:
    """Global magnitude pruning: the surviving weights of smallest |w| over all of `weights`
    pruned until `target` of the masked weights are gone (IMP's step). Ties at the
    threshold are broken by position, so the count is exact."""
    return _prune_by_score({n: weights[n].detach().abs().float() for n in masks}, masks, target)


def random_scores(masks: Mapping[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Uniform random scores shaped as `masks`: what a random control prunes by."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}


def random_masks(masks: Masks, target: float, seed: int) -> Masks:
    """The control: surviving weights pruned at random, globally, to `target`."""
    return _prune_by_score(random_scores(masks, seed), masks, target)


def _prune_by_score(scores: Mapping[str, Tensor], masks: Masks, target: float) -> Masks:
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    names = list(masks)
    total = sum(masks[n].numel() for n in names)
    pruned_now = total - sum(int(masks[n].sum()) for n in names)
    extra = round(target * total) - pruned_now
    if extra <= 0:
        return {n: masks[n].clone() for n in names}
    flat = torch.cat([torch.where(masks[n], scores[n], torch.inf).flatten() for n in names])
    order = torch.argsort(flat, stable=True)[:extra]
    keep = torch.ones(total, dtype=torch.bool)
    keep[order] = False
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = masks[n] & keep[start : start + size].view(masks[n].shape)
        start += size
    return out


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero `model`'s pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m.to(params[name].dtype))


def masks_sha256(masks: Mapping[str, Tensor]) -> str:
    """A digest of the masks (names, shapes and bits): which weights a ticket keeps."""
    h = hashlib.sha256()
    for name in sorted(masks):
        m = masks[name].to(torch.uint8).contiguous()
        h.update(f"{name}:{tuple(m.shape)};".encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()


def save_masks(masks: Mapping[str, Tensor], path: Path) -> None:
    """As safetensors (uint8): a plain tensor file, nothing executable."""
    from safetensors.torch import save_file

    save_file({n: m.to(torch.uint8).contiguous() for n, m in masks.items()}, str(path))


def load_masks(path: Path) -> Masks:
    from safetensors.torch import load_file

    return {n: t.bool() for n, t in load_file(str(path)).items()}


def imp_schedule(targets: list[float], fraction: float) -> list[float]:
    """The sparsity after each IMP round: each round prunes `fraction` of the weights that
    remain, and a round that would pass a requested sparsity stops exactly at it, so every
    target is a round's result."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"prune fraction must be in (0, 1), got {fraction}")
    out, s = [], 0.0
    for target in sorted(set(targets)):
        while s < target - 1e-9:
            s = min(target, 1.0 - (1.0 - s) * (1.0 - fraction))
            out.append(round(s, 6))
    return out
