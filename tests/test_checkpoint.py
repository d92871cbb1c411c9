import json
import pickle
import shutil

import pytest
import torch

from bfnas.errors import InputError
from bfnas.models.nn.checkpoint import load_supernet, minilm_dir
from bfnas.models.space.search_space import load_space


def _prose() -> list[str]:
    # Real English prose that is on every machine: standard library docstrings.
    import argparse
    import json as json_module

    return [json_module.__doc__.split("\n\n")[0], argparse.__doc__.split("\n\n")[1]]


def test_minilm_matches_transformers(minilm_supernet):
    from transformers import BertModel, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(minilm_dir()))
    ref = BertModel.from_pretrained(str(minilm_dir())).eval()
    enc = tok(_prose(), padding=True, truncation=True, max_length=128, return_tensors="pt")
    full = load_space("minilm-l6").largest()
    with torch.no_grad():
        ours = minilm_supernet(enc["input_ids"], full, enc["attention_mask"], enc["token_type_ids"])
        theirs = ref(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    assert ours.shape == theirs.shape
    assert (ours - theirs)[real].abs().max().item() < 1e-4
    dense = minilm_supernet.extract(full)
    with torch.no_grad():
        again = dense(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert (again - ours).abs().max().item() < 1e-5


def _copy_config(tmp_path):
    shutil.copy(minilm_dir() / "config.json", tmp_path / "config.json")


def test_pytorch_bin_loads_with_bert_prefix(tmp_path, minilm_supernet):
    _copy_config(tmp_path)
    state = {f"bert.{k}": v for k, v in minilm_supernet.state_dict().items()}
    state["cls.predictions.bias"] = torch.zeros(3)  # pretraining heads are ignored
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_supernet(tmp_path)
    assert loaded.source["kind"] == "checkpoint"
    for k, v in minilm_supernet.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path, capsys):
    _copy_config(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"x": _Boom()}, fh)
    with pytest.raises(InputError) as err:
        load_supernet(tmp_path)
    assert err.value.where.endswith("pytorch_model.bin")
    assert "this must never run" not in capsys.readouterr().out


def test_bad_config_names_the_field(tmp_path):
    cfg = json.loads((minilm_dir() / "config.json").read_text())
    cfg["num_attention_heads"] = 7
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as err:
        load_supernet(tmp_path)
    assert err.value.field == "num_attention_heads"


def test_missing_weights_and_shape_mismatch(tmp_path, minilm_supernet):
    _copy_config(tmp_path)
    with pytest.raises(InputError, match="no weights found"):
        load_supernet(tmp_path)
    state = dict(minilm_supernet.state_dict())
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(10, 384)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError) as err:
        load_supernet(tmp_path)
    assert err.value.field == "encoder.layer.0.intermediate.dense.weight"


def test_not_a_directory(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        load_supernet(tmp_path / "nowhere")
