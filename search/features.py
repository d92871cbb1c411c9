"""Features of a subnet for latency prediction: its dimensions, aggregated over layers, and
the analytic work per op class at the profile's workload, summed over its layers
(`models.space.cost`, the cost model `SubnetConfig` uses too): the matrix products' MACs and
the element-wise ops' elements. The latter decide small subnets of per-layer spaces
(`minilm-l6`: 1-layer subnets of hidden 128 spend much of their time outside the products);
measured in benchmarks/results/predictor_minilm.md.

Built column-wise with numpy, so a search can score 100k candidates at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bfnas.models.space.cost import encoder_elementwise, encoder_macs, encoder_params
from bfnas.models.space.subnet import SubnetConfig

FEATURES = (
    "layers",
    "hidden",
    "heads_mean",
    "heads_min",
    "heads_max",
    "qkv_mean",
    "qkv_min",
    "qkv_max",
    "ffn_mean",
    "ffn_min",
    "ffn_max",
    "macs_qkv",
    "macs_attn",
    "macs_out",
    "macs_ffn",
    "macs_total",
    "elems_attn_probs",
    "elems_hidden_states",
    "elems_ffn_states",
    "elems_qkv_states",
    "params",
    "seq_len",
    "batch",
)

# +1 where latency cannot fall as the feature grows with the rest fixed: more layers, wider
# matrices, more work. Head counts are left free: at a fixed qkv width, more heads mean
# more, smaller matrix products, which can go either way.
MONOTONE = {
    name: (0 if name.startswith("heads") or name in ("seq_len", "batch") else 1)
    for name in FEATURES
}


def _padded(cfgs: Sequence[SubnetConfig], field: str, width: int) -> np.ndarray:
    return np.array([getattr(c, field) + (0,) * (width - c.layers) for c in cfgs], dtype=np.float64)


def feature_matrix(cfgs: Sequence[SubnetConfig], seq_len: int, batch: int = 1) -> np.ndarray:
    """[len(cfgs), len(FEATURES)] float64, columns in FEATURES order."""
    n = len(cfgs)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    layers = np.fromiter((c.layers for c in cfgs), dtype=np.float64, count=n)
    hidden = np.fromiter((c.hidden for c in cfgs), dtype=np.float64, count=n)
    width = int(layers.max())
    mask = np.arange(width)[None, :] < layers[:, None]
    cols: dict[str, np.ndarray] = {"layers": layers, "hidden": hidden}
    per_layer = {f: _padded(cfgs, f, width) for f in ("heads", "qkv", "ffn")}
    for f, v in per_layer.items():
        cols[f"{f}_mean"] = v.sum(1) / layers
        cols[f"{f}_min"] = np.where(mask, v, np.inf).min(1)
        cols[f"{f}_max"] = v.max(1)
    q_sum, f_sum = per_layer["qkv"].sum(1), per_layer["ffn"].sum(1)
    s = float(seq_len)
    macs = encoder_macs(hidden, q_sum, f_sum, s, batch)
    cols["macs_qkv"] = macs["qkv_proj"]
    # x + x doubles exactly in float64: the same bits as the former 2 * s * s * q * batch.
    cols["macs_attn"] = macs["attn_scores"] + macs["attn_context"]
    cols["macs_out"] = macs["attn_out"]
    cols["macs_ffn"] = macs["ffn"]
    cols["macs_total"] = cols["macs_qkv"] + cols["macs_attn"] + cols["macs_out"] + cols["macs_ffn"]
    elems = encoder_elementwise(layers, hidden, per_layer["heads"].sum(1), q_sum, f_sum, s, batch)
    for name, column in elems.items():
        cols[f"elems_{name}"] = column
    # Encoder parameters (embeddings are lookups: they cost memory, not time).
    cols["params"] = encoder_params(layers, hidden, q_sum, f_sum)
    cols["seq_len"] = np.full(n, s)
    cols["batch"] = np.full(n, float(batch))
    return np.column_stack([cols[name] for name in FEATURES])
