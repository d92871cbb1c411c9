import random

import numpy as np
import pytest

from bfnas.models.space.search_space import load_space
from bfnas.search.features import FEATURES, MONOTONE, feature_matrix


@pytest.mark.parametrize("space_name", ["minilm-l6", "bigger-faster", "autotinybert"])
def test_features_agree_with_the_config_arithmetic(space_name):
    space = load_space(space_name)
    rng = random.Random(0)
    cfgs = [space.sample(rng) for _ in range(50)]
    X = feature_matrix(cfgs, seq_len=64, batch=2)
    assert X.shape == (50, len(FEATURES))
    col = {name: X[:, i] for i, name in enumerate(FEATURES)}
    for i, c in enumerate(cfgs):
        m = c.macs(64, 2)
        assert col["macs_qkv"][i] == m["qkv_proj"]
        assert col["macs_attn"][i] == m["attn_scores"] + m["attn_context"]
        assert col["macs_out"][i] == m["attn_out"] and col["macs_ffn"][i] == m["ffn"]
        assert col["macs_total"][i] == c.total_macs(64, 2)
        assert col["params"][i] == c.params(embeddings=False)
        assert col["qkv_min"][i] == min(c.qkv) and col["ffn_max"][i] == max(c.ffn)
        assert col["heads_mean"][i] == pytest.approx(np.mean(c.heads))
        assert col["layers"][i] == c.layers and col["seq_len"][i] == 64 and col["batch"][i] == 2


def test_minimum_ignores_the_padding_of_shallow_configs():
    from bfnas.models.space.subnet import SubnetConfig

    deep = SubnetConfig(3, 64, (2, 2, 2), (64, 64, 64), (256, 512, 128))
    shallow = SubnetConfig(1, 64, (2,), (64,), (384,))
    X = feature_matrix([deep, shallow], seq_len=8)
    ffn_min = X[:, FEATURES.index("ffn_min")]
    assert list(ffn_min) == [128, 384]


def test_monotone_constraints_cover_every_feature():
    assert set(MONOTONE) == set(FEATURES)
    assert MONOTONE["macs_total"] == 1 and MONOTONE["heads_mean"] == 0
