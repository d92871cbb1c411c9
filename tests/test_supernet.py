import random

import pytest
import torch

from bfnas.errors import InputError
from bfnas.models.nn.bert import Bert
from bfnas.models.nn.supernet import SuperBert, SupernetDims, weights_sha256
from bfnas.models.space.search_space import load_space, shipped_spaces
from bfnas.models.space.subnet import SubnetConfig


def _tokens(batch=2, seq=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 30522, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2 :] = 0
    return ids, mask


@pytest.mark.parametrize("name", sorted(shipped_spaces()))
def test_extracted_subnet_equals_supernet(name):
    space = load_space(name)
    supernet = SuperBert.random(SupernetDims.for_space(space), seed=1)
    rng = random.Random(name)
    ids, mask = _tokens()
    configs = [space.sample(rng) for _ in range(4)] + [space.largest(), space.smallest()]
    for cfg in configs:
        dense = supernet.extract(cfg)
        assert type(dense) is Bert
        with torch.no_grad():
            want = supernet(ids, cfg, mask)
            got = dense(ids, mask)
        assert got.shape == (2, 24, cfg.hidden)
        assert (got - want).abs().max().item() < 1e-5, cfg
        # A plain module: its parameters are exactly the subnet's, not views of the supernet.
        assert sum(p.numel() for p in dense.parameters()) == cfg.params()
        assert all(
            p.data_ptr() != q.data_ptr() for p in dense.parameters() for q in supernet.parameters()
        )


def test_different_configs_give_different_outputs(tiny_supernet, tiny_space):
    ids, mask = _tokens()
    a = SubnetConfig(2, 128, (4, 4), (128, 128), (256, 256))
    b = SubnetConfig(2, 128, (2, 4), (128, 128), (256, 256))  # only the head split differs
    with torch.no_grad():
        assert (tiny_supernet(ids, a, mask) - tiny_supernet(ids, b, mask)).abs().max() > 1e-3


def test_padding_does_not_leak_into_real_tokens(tiny_supernet):
    cfg = SubnetConfig(2, 96, (2, 1), (64, 32), (128, 64))
    ids, mask = _tokens(batch=1, seq=16)
    mask[:, 10:] = 0
    other = ids.clone()
    other[:, 10:] = 7
    with torch.no_grad():
        a = tiny_supernet(ids, cfg, mask)[:, :10]
        b = tiny_supernet(other, cfg, mask)[:, :10]
    assert (a - b).abs().max().item() < 1e-5


def test_random_supernet_is_reproducible(tiny_space):
    dims = SupernetDims.for_space(tiny_space)
    assert weights_sha256(SuperBert.random(dims, 3)) == weights_sha256(SuperBert.random(dims, 3))
    assert weights_sha256(SuperBert.random(dims, 3)) != weights_sha256(SuperBert.random(dims, 4))


def test_too_big_config_is_refused(tiny_supernet):
    with pytest.raises(InputError) as err:
        tiny_supernet.extract(SubnetConfig(1, 128, (1,), (128,), (512,)))
    assert err.value.field == "ffn[0]"
    with pytest.raises(InputError) as err:
        tiny_supernet.check_space(load_space("minilm-l6"))
    assert err.value.setting == "space" and "does not fit" in err.value.reason
