"""Structured tickets: whole attention heads and FFN neurons pruned, as Prasanna et al.
("When BERT Plays the Lottery, All Tickets Are Winning", 2020) prune BERT, and the dense
smaller model such a ticket becomes.

A structured mask is a `masks.Masks` whose pruned weights form whole units: a head's rows of
query, key and value and its columns of the attention output; a neuron's row of the FFN's
first linear and column of its second. With those zero a head or neuron adds nothing to the
layer's output (its biases only reach zeroed weights), so the masked model computes what the
model without those units computes: `shrink` builds that model, dense and smaller, with its
own weights -- a subnet with per-layer heads, Q/K/V and FFN widths that exports, quantizes
and measures like a searched one.

Importance is IMP-style: the mean |w| of a unit's weights in the fine-tuned model. Heads and
neurons are ranked together, each kind's importance divided by its surviving units' mean
(the two kinds' weights differ in scale), and the least important pruned until the requested
share of the encoder linear weights is gone; every layer keeps at least one head and one
neuron.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bfnas.models.nn.bert import Bert
from bfnas.models.prune.masks import Masks
from bfnas.models.space.subnet import SubnetConfig

_ATT = "attention.self"


def _layer_names(prefix: str) -> dict[str, str]:
    return {
        "q": f"{prefix}{_ATT}.query.weight",
        "k": f"{prefix}{_ATT}.key.weight",
        "v": f"{prefix}{_ATT}.value.weight",
        "o": f"{prefix}attention.output.dense.weight",
        "in": f"{prefix}intermediate.dense.weight",
        "out": f"{prefix}output.dense.weight",
    }


@dataclass(frozen=True)
class Units:
    """Which heads and FFN neurons survive, per layer."""

    heads: tuple[tuple[bool, ...], ...]
    neurons: tuple[tuple[bool, ...], ...]

    def kept(self) -> tuple[list[int], list[int]]:
        return [sum(h) for h in self.heads], [sum(n) for n in self.neurons]


def _layers(masks: Mapping[str, Tensor]) -> list[str]:
    """The layer prefixes (`bert.encoder.layer.N.`) in order."""
    prefixes = {n.split("attention.")[0] for n in masks if n.endswith(f"{_ATT}.query.weight")}
    return sorted(prefixes, key=lambda p: int(p.rstrip(".").rsplit(".", 1)[1]))


def units_of(masks: Mapping[str, Tensor], head_size: int) -> Units:
    """The units a structured mask keeps (a unit with any weight kept counts as kept)."""
    heads, neurons = [], []
    for prefix in _layers(masks):
        n = _layer_names(prefix)
        o = masks[n["o"]]  # [hidden, qkv]: a head's columns
        heads.append(tuple(bool(c.any()) for c in o.split(head_size, dim=1)))
        neurons.append(tuple(bool(c) for c in masks[n["out"]].any(dim=0)))
    return Units(tuple(heads), tuple(neurons))


def unit_masks(units: Units, like: Mapping[str, Tensor], head_size: int) -> Masks:
    """The weight masks of `units`, shaped as `like` (a mask of the full model)."""
    out: Masks = {}
    for prefix, heads, neurons in zip(_layers(like), units.heads, units.neurons, strict=True):
        n = _layer_names(prefix)
        rows = torch.tensor(heads).repeat_interleave(head_size)  # [qkv]
        ffn = torch.tensor(neurons)
        for key in ("q", "k", "v"):
            out[n[key]] = rows[:, None].expand_as(like[n[key]]).clone()
        out[n["o"]] = rows[None, :].expand_as(like[n["o"]]).clone()
        out[n["in"]] = ffn[:, None].expand_as(like[n["in"]]).clone()
        out[n["out"]] = ffn[None, :].expand_as(like[n["out"]]).clone()
    return out


def structured_masks(
    weights: Mapping[str, Tensor], masks: Masks, target: float, head_size: int
) -> Masks:
    """Whole heads and neurons pruned, least important first (the module's docstring),
    until about `target` of the masked weights are gone (a unit is the step)."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    units = units_of(masks, head_size)
    heads = [list(h) for h in units.heads]
    neurons = [list(n) for n in units.neurons]
    total = sum(m.numel() for m in masks.values())
    candidates: list[tuple[float, str, int, int, int]] = []  # (score, kind, layer, index, size)
    for li, prefix in enumerate(_layers(masks)):
        n = _layer_names(prefix)
        q, k, v, o = (weights[n[x]].detach().abs() for x in ("q", "k", "v", "o"))
        hidden = o.shape[0]
        for h, alive in enumerate(heads[li]):
            if alive:
                rows = slice(h * head_size, (h + 1) * head_size)
                parts = (q[rows], k[rows], v[rows], o[:, rows])
                score = float(sum(p.sum() for p in parts)) / sum(p.numel() for p in parts)
                candidates.append((score, "head", li, h, 4 * hidden * head_size))
        w_in, w_out = weights[n["in"]].detach().abs(), weights[n["out"]].detach().abs()
        scores = (w_in.sum(dim=1) + w_out.sum(dim=0)) / (w_in.shape[1] + w_out.shape[0])
        for j, alive in enumerate(neurons[li]):
            if alive:
                candidates.append((float(scores[j]), "neuron", li, j, 2 * hidden))
    means = {
        kind: sum(c[0] for c in candidates if c[1] == kind)
        / max(1, sum(c[1] == kind for c in candidates))
        for kind in ("head", "neuron")
    }
    candidates.sort(key=lambda c: (c[0] / (means[c[1]] or 1.0), c[1], c[2], c[3]))
    pruned = total - sum(int(m.sum()) for m in masks.values())
    goal = round(target * total)
    for _, kind, li, idx, size in candidates:
        if pruned >= goal:
            break
        alive = heads[li] if kind == "head" else neurons[li]
        if sum(alive) <= 1:
            continue  # every layer keeps a head and a neuron
        if pruned + size - goal > goal - pruned:
            continue  # this unit would overshoot more than it leaves: a smaller one may fit
        alive[idx] = False
        pruned += size
    new = Units(tuple(map(tuple, heads)), tuple(map(tuple, neurons)))
    return unit_masks(new, masks, head_size)


def shrink(model: nn.Module, masks: Mapping[str, Tensor], head_size: int) -> Bert:
    """The dense `Bert` without the units `masks` prune: the pruned model's encoder, `model`
    being a `Bert` or a classifier holding one as `bert` (its masks named as its own
    parameters). The result computes what the masked model computes."""
    bert = model.bert if hasattr(model, "bert") else model
    prefix = "bert." if hasattr(model, "bert") else ""
    full = {k.removeprefix(prefix): v for k, v in masks.items()}
    units = units_of(full, head_size)
    heads, ffn = units.kept()
    cfg = SubnetConfig(
        bert.cfg.layers,
        bert.cfg.hidden,
        tuple(heads),
        tuple(h * head_size for h in heads),
        tuple(ffn),
    )
    small = Bert(cfg, bert.vocab)
    state = bert.state_dict()
    # Embeddings, LayerNorms and the output biases as they are; the rest gathered below.
    new = {name: state[name] for name in small.state_dict()}
    for li, prefix_l in enumerate(_layers(full)):
        n = _layer_names(prefix_l)
        rows = torch.tensor(units.heads[li]).repeat_interleave(head_size)
        keep_ffn = torch.tensor(units.neurons[li])
        for key in ("q", "k", "v"):
            bias = n[key].removesuffix("weight") + "bias"
            new[n[key]] = state[n[key]][rows]
            new[bias] = state[bias][rows]
        new[n["o"]] = state[n["o"]][:, rows]
        new[n["in"]] = state[n["in"]][keep_ffn]
        b_in = n["in"].removesuffix("weight") + "bias"
        new[b_in] = state[b_in][keep_ffn]
        new[n["out"]] = state[n["out"]][:, keep_ffn]
    small.load_state_dict({k: v.clone() for k, v in new.items()})
    return small.eval()
