"""Stage-1 distillation of the MiniLM supernet on real prose: it learns, checkpoints, resumes."""

import json

import pytest
import torch
from conftest import corpus_head

from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.nn.checkpoint import load_supernet, minilm_dir, read_config
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.distill import SupernetTrainer, TrainSettings, kd_loss, layer_map
from bfnas.models.train.oneshot import OneShotScorer, held_out_batch
from bfnas.models.train.pretraining_data import DataSettings, build_data

SMALL = SubnetConfig(2, 192, (6, 3), (192, 96), (512, 256))


@pytest.fixture(scope="module")
def data_dir(stdlib_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    small = corpus_head(stdlib_corpus[0], 2500, folder / "small.txt")
    build_data(small, minilm_dir(), folder / "data", DataSettings(seq_len=32, shard_size=100))
    return folder / "data"


def _trainer(data_dir, out, steps, student=None):
    space = load_space("minilm-l6")
    _, _, raw = read_config(minilm_dir())
    return SupernetTrainer(
        student or load_supernet("minilm"),
        load_supernet("minilm"),
        space.largest(),
        space,
        data_dir,
        out,
        TrainSettings(steps=steps, batch=4, lr=2e-4, checkpoint_every=4),
        raw,
    )


def test_layer_map_spreads_student_layers_over_the_teacher():
    assert layer_map(6, 6) == [0, 1, 2, 3, 4, 5]
    assert layer_map(2, 6) == [2, 5] and layer_map(1, 6) == [5] and layer_map(3, 6) == [1, 3, 5]


def test_the_teacher_has_zero_loss_against_itself():
    sn = load_supernet("minilm")
    ids = torch.randint(1000, 30000, (2, 16))
    big = load_space("minilm-l6").largest()
    with torch.no_grad():
        states = sn.states(ids, big)
        assert float(kd_loss(states, states, big.hidden)) == 0.0
        assert float(kd_loss(sn.states(ids, SMALL), states, SMALL.hidden)) > 0.01


def test_training_improves_a_small_subnet_and_resumes_exactly(data_dir, tmp_path):
    batch = held_out_batch(data_dir, 8)
    space = load_space("minilm-l6")
    before = OneShotScorer(load_supernet("minilm"), space.largest(), batch)(SMALL)

    straight = _trainer(data_dir, tmp_path / "a", 8)
    straight.train()
    after = OneShotScorer(straight.supernet, space.largest(), batch)(SMALL)
    assert after > before  # the sandwich's subnets move towards the teacher

    first = _trainer(data_dir, tmp_path / "b", 4)  # stops at step 4 with a checkpoint
    first.train()
    resumed = _trainer(data_dir, tmp_path / "b", 8)
    assert resumed.step == 4
    resumed.train()
    assert [r["largest"] for r in resumed.history] == pytest.approx(
        [r["largest"] for r in straight.history], rel=1e-4
    )
    for name, tensor in straight.supernet.state_dict().items():
        assert torch.allclose(tensor, resumed.supernet.state_dict()[name], atol=1e-5), name


def test_cli_train_writes_a_checkpoint_that_loads(capsys, data_dir, tmp_path):
    out = tmp_path / "sn"
    code = main(
        [
            "supernet",
            "train",
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch",
            "4",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["steps"] == 2 and result["steps_per_s"] > 0
    trained = load_supernet(out)  # an HF BERT folder like any other
    assert trained.dims == load_supernet("minilm").dims and trained.source["path"] == str(out)
    assert {"config.json", "model.safetensors", "optimizer.pt", "trainer.json"} <= {
        p.name for p in out.iterdir()
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "nope"], "--loss"),
        (["--steps", "0"], "--steps"),
        (["--space", "autotinybert"], "does not fit"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, data_dir, tmp_path, args, message):
    code = main(["supernet", "train", "--data", str(data_dir), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_data_without_a_manifest_is_refused(capsys, tmp_path):
    code = main(["supernet", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "manifest.json" in capsys.readouterr().err


def test_int8_aware_forward_is_the_deployed_int8_graph(tmp_path):
    """Fake quantization emulates ONNX Runtime's dynamic INT8 graph of the same subnet."""
    import numpy as np
    import onnxruntime as ort

    from bfnas.models.deploy.artifacts import ArtifactCache
    from bfnas.models.deploy.encoder_io import token_batches
    from bfnas.models.deploy.recipes import get_recipe

    sn = load_supernet("minilm")
    cfg = SubnetConfig(3, 256, (4, 8, 2), (128, 256, 64), (512, 1024, 256))
    art = ArtifactCache(tmp_path).build(sn, cfg, "int8", get_recipe("dynamic"))
    feed = token_batches(1, 2, 32, 30522, seed=3)[0]
    deployed = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(
        None, feed
    )[0]
    ids, mask = torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])
    with torch.no_grad():
        fake = sn.states(ids, cfg, mask, int8=True)[0][-1].numpy()
        fp32 = sn(ids, cfg, mask).numpy()
    assert np.abs(fake - deployed).max() < 1e-4
    assert np.abs(fp32 - deployed).max() > 100 * np.abs(fake - deployed).max()


def test_int8_aware_training_has_gradients_and_records_the_mode(data_dir, tmp_path):
    sn = load_supernet("minilm")
    ids = torch.randint(1000, 30000, (2, 16))
    hiddens, _ = sn.states(ids, SMALL, int8=True)
    hiddens[-1].pow(2).mean().backward()
    grad = sn.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # straight-through: rounding does not block it
    space = load_space("minilm-l6")
    _, _, raw = read_config(minilm_dir())
    trainer = SupernetTrainer(
        load_supernet("minilm"),
        load_supernet("minilm"),
        space.largest(),
        space,
        data_dir,
        tmp_path / "q",
        TrainSettings(steps=2, batch=4, int8_aware=True),
        raw,
    )
    trainer.train()
    assert (
        json.loads((tmp_path / "q" / "trainer.json").read_text())["settings"]["int8_aware"] is True
    )
    with pytest.raises(InputError, match="^out: .*: holds another training run"):
        SupernetTrainer(
            load_supernet("minilm"),
            load_supernet("minilm"),
            space.largest(),
            space,
            data_dir,
            tmp_path / "q",
            TrainSettings(steps=4, batch=4),
            raw,
        )


def test_mlm_loss_falls_and_its_head_is_saved_and_resumed(data_dir, tmp_path):
    space = load_space("minilm-l6")
    _, _, raw = read_config(minilm_dir())

    def trainer(steps):
        return SupernetTrainer(
            load_supernet("minilm"),
            load_supernet("minilm"),
            space.largest(),
            space,
            data_dir,
            tmp_path / "m",
            TrainSettings(steps=steps, batch=4, lr=5e-4, loss="mlm", checkpoint_every=3),
            raw,
        )

    first = trainer(6)
    first.train()
    losses = [r["largest"] for r in first.history]
    assert losses[0] > 9.0  # a fresh head: about ln(30522)
    assert min(losses[-2:]) < losses[0] - 1.0
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "cls.predictions.transform.dense.weight" in saved
    resumed = trainer(7)
    assert resumed.step == 6
    assert torch.equal(resumed.head.dense.weight, first.head.dense.weight)
    assert (
        load_supernet(tmp_path / "m").dims.hidden == 384
    )  # the encoder still loads as a checkpoint


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A run stopped at step 4 with its checkpoint: what a resume reads."""
    out = tmp_path_factory.mktemp("trained") / "run"
    _trainer(data_dir, out, 4).train()
    return out


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        ("trainer.json", b"{not json", "not valid JSON"),
        ("trainer.json", b"[1, 2]", "not a JSON object"),
        ("optimizer.pt", b"PK\x03\x04 cut short", "damaged"),
        ("optimizer.pt", b"\x00\x01 neither zip nor pickle", "damaged"),
        ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "model.safetensors"),
    ],
)
def test_a_damaged_checkpoint_folder_is_refused_naming_the_file(
    data_dir, trained, tmp_path, name, damage, says
):
    """Resuming reads what a killed or damaged run left: each file's fault is one line."""
    import shutil

    from bfnas.errors import InputError

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / name).write_bytes(damage)
    with pytest.raises(InputError) as err:
        _trainer(data_dir, out, 8).train()
    line = err.value.line()
    assert name in line and says in line and "\n" not in line, line
