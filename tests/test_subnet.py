import hashlib
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bfnas.errors import InputError
from bfnas.models.nn.bert import Bert
from bfnas.models.space.subnet import SubnetConfig

EXAMPLE = (
    '{"layers": 4, "hidden": 384, "heads": [6, 6, 6, 6], "qkv": [384, 384, 384, 384], '
    '"ffn": [1536, 1536, 1536, 1536]}'
)


def test_canonical_json_and_key_are_stable():
    cfg = SubnetConfig.uniform(4, 384, 6, 384, 1536)
    assert cfg.to_json() == EXAMPLE
    assert cfg.key() == hashlib.sha256(EXAMPLE.encode()).hexdigest()[:16]
    # Key order and spacing of the input do not matter; the canonical text does.
    messy = json.dumps(dict(reversed(list(json.loads(EXAMPLE).items()))), indent=4)
    again = SubnetConfig.from_json(messy)
    assert again == cfg and hash(again) == hash(cfg) and again.key() == cfg.key()


def test_scalar_per_layer_fields_broadcast():
    cfg = SubnetConfig.from_dict({"layers": 3, "hidden": 128, "heads": 2, "qkv": 64, "ffn": 256})
    assert cfg.heads == (2, 2, 2) and cfg.qkv == (64, 64, 64) and cfg.ffn == (256, 256, 256)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"layers": 2, "hidden": 64, "heads": [1], "qkv": [64, 64], "ffn": [64, 64]}, "heads"),
        ({"layers": 2, "hidden": 64, "heads": [1, 3], "qkv": [64, 64], "ffn": [64, 64]}, "qkv[1]"),
        ({"layers": 0, "hidden": 64, "heads": [], "qkv": [], "ffn": []}, "layers"),
        ({"layers": 1, "hidden": 64, "heads": [1], "qkv": [64]}, "ffn"),
        ({"layers": 1, "hidden": 64, "heads": [1], "qkv": [64], "ffn": [64], "x": 1}, "x"),
        ({"layers": 1, "hidden": -4, "heads": [1], "qkv": [64], "ffn": [64]}, "hidden"),
        ({"layers": 1, "hidden": 64, "heads": [1], "qkv": [64], "ffn": ["64"]}, "ffn[0]"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(InputError) as err:
        SubnetConfig.from_dict(data)
    assert err.value.field == field


def test_params_match_the_torch_module():
    cfg = SubnetConfig(3, 96, (2, 3, 1), (64, 96, 32), (128, 64, 192))
    model = Bert(cfg)
    assert cfg.params() == sum(p.numel() for p in model.parameters())
    no_emb = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embeddings"))
    assert cfg.params(embeddings=False) == no_emb


def test_macs_match_torch_flop_counter():
    cfg = SubnetConfig(2, 96, (2, 4), (64, 128), (128, 320))
    model = Bert(cfg).eval()
    seq, batch = 24, 2
    ids = torch.randint(0, 1000, (batch, seq))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    assert counter.get_total_flops() == 2 * cfg.total_macs(seq, batch)
    macs = cfg.macs(seq, batch)
    assert macs["attn_scores"] == macs["attn_context"] == batch * seq * seq * (64 + 128)
