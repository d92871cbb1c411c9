"""The one cost model (`models.space.cost`) gives exactly the numbers of the two formulas it
replaced: `SubnetConfig`'s per-layer sums and the features' float64 columns. The references
below are those formulas as they were written before the cost model existed."""

import random

import numpy as np
import pytest

from bfnas.models.space.cost import MAC_CLASSES, encoder_macs, encoder_params
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.features import FEATURES, feature_matrix

CONFIGS = [
    SubnetConfig.uniform(12, 768, 12, 768, 3072),
    SubnetConfig.uniform(6, 384, 12, 384, 1536),
    SubnetConfig(3, 96, (2, 3, 1), (64, 96, 32), (128, 64, 192)),
    SubnetConfig(1, 64, (1,), (32,), (64,)),
    SubnetConfig(4, 512, (8, 4, 2, 1), (512, 256, 128, 64), (2048, 1024, 512, 4096)),
]
WORKLOADS = [(128, 1), (64, 2), (512, 8), (7, 3)]


def per_layer_params(cfg, embeddings=True, vocab_size=30522, max_positions=512, type_vocab=2):
    h = cfg.hidden
    total = (vocab_size + max_positions + type_vocab) * h + 2 * h if embeddings else 0
    for q, f in zip(cfg.qkv, cfg.ffn, strict=True):
        total += 3 * (h * q + q)
        total += q * h + h + 2 * h
        total += h * f + f + f * h + h + 2 * h
    return total


def per_layer_macs(cfg, seq_len, batch):
    s, h = seq_len, cfg.hidden
    out = dict.fromkeys(MAC_CLASSES, 0)
    for q, f in zip(cfg.qkv, cfg.ffn, strict=True):
        out["qkv_proj"] += 3 * s * h * q
        out["attn_scores"] += s * s * q
        out["attn_context"] += s * s * q
        out["attn_out"] += s * q * h
        out["ffn"] += 2 * s * h * f
    return {k: v * batch for k, v in out.items()}


def column_costs(cfgs, seq_len, batch):
    """The features' former column arithmetic, float64 over all configs at once."""
    width = max(c.layers for c in cfgs)
    layers = np.array([c.layers for c in cfgs], dtype=np.float64)
    hidden = np.array([c.hidden for c in cfgs], dtype=np.float64)
    q = np.array([c.qkv + (0,) * (width - c.layers) for c in cfgs], dtype=np.float64).sum(1)
    f = np.array([c.ffn + (0,) * (width - c.layers) for c in cfgs], dtype=np.float64).sum(1)
    s = float(seq_len)
    cols = {
        "macs_qkv": 3 * s * hidden * q * batch,
        "macs_attn": 2 * s * s * q * batch,
        "macs_out": s * q * hidden * batch,
        "macs_ffn": 2 * s * hidden * f * batch,
    }
    cols["macs_total"] = cols["macs_qkv"] + cols["macs_attn"] + cols["macs_out"] + cols["macs_ffn"]
    cols["params"] = 4 * hidden * q + 3 * q + 2 * hidden * f + f + 6 * hidden * layers
    return cols


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_subnet_costs_equal_the_per_layer_sums(cfg):
    assert cfg.params() == per_layer_params(cfg)
    assert cfg.params(embeddings=False) == per_layer_params(cfg, embeddings=False)
    small = {"vocab_size": 1000, "max_positions": 64, "type_vocab": 3}
    assert cfg.params(**small) == per_layer_params(cfg, **small)
    for seq_len, batch in WORKLOADS:
        macs = cfg.macs(seq_len, batch)
        assert macs == per_layer_macs(cfg, seq_len, batch)
        assert tuple(macs) == MAC_CLASSES
        assert cfg.total_macs(seq_len, batch) == sum(per_layer_macs(cfg, seq_len, batch).values())


def test_bert_base_has_its_published_parameter_count():
    # bert-base-uncased: 109,482,240 parameters, of which the pooler (not part of the encoder
    # measured here) holds 768 * 768 + 768.
    base = SubnetConfig.uniform(12, 768, 12, 768, 3072)
    assert base.params() + 768 * 768 + 768 == 109_482_240


@pytest.mark.parametrize("space_name", ["minilm-l6", "bigger-faster", "autotinybert"])
@pytest.mark.parametrize(("seq_len", "batch"), WORKLOADS)
def test_feature_columns_keep_their_exact_bits(space_name, seq_len, batch):
    space = load_space(space_name)
    rng = random.Random(5)
    cfgs = [space.sample(rng) for _ in range(100)] + CONFIGS
    X = feature_matrix(cfgs, seq_len, batch)
    for name, want in column_costs(cfgs, seq_len, batch).items():
        got = X[:, FEATURES.index(name)]
        assert got.tobytes() == want.tobytes(), name


def test_the_formulas_agree_on_ints_and_arrays():
    hidden = np.array([c.hidden for c in CONFIGS], dtype=np.float64)
    q = np.array([sum(c.qkv) for c in CONFIGS], dtype=np.float64)
    f = np.array([sum(c.ffn) for c in CONFIGS], dtype=np.float64)
    layers = np.array([c.layers for c in CONFIGS], dtype=np.float64)
    columns = encoder_macs(hidden, q, f, 64.0, 2)
    params = encoder_params(layers, hidden, q, f)
    for i, cfg in enumerate(CONFIGS):
        assert {k: v[i] for k, v in columns.items()} == cfg.macs(64, 2)
        assert params[i] == cfg.params(embeddings=False)
