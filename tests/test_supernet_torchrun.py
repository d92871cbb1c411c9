"""`bfnas supernet train` under torchrun: two CPU processes (gloo) compute what one process
computes at the same global batch, resume a single-process run, and write one checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import corpus_head
from safetensors.torch import load_file, save_file

from bfnas.cli import main
from bfnas.models.nn.checkpoint import minilm_dir
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.train.distill import MlmHead, kd_loss, mlm_loss
from bfnas.models.train.parallel import Distributed
from bfnas.models.train.pretraining_data import DataSettings, build_data

CHECKPOINT_FILES = {
    "config.json",
    "model.safetensors",
    "optimizer.pt",
    "trainer.json",
    "tokenizer.json",
}


@pytest.fixture(scope="module")
def setup(tiny_space, tiny_space_file, stdlib_corpus, tmp_path_factory):
    """A small random teacher as a Hugging Face folder (2 layers x 128: steps take
    milliseconds, so the test times torchrun, not the model) and data in MiniLM's vocabulary."""
    root = tmp_path_factory.mktemp("ddp")
    dims = SupernetDims.for_space(tiny_space)
    teacher = root / "teacher"
    teacher.mkdir()
    save_file(dict(SuperBert.random(dims, seed=0).state_dict()), str(teacher / "model.safetensors"))
    (teacher / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": dims.hidden,
                "num_attention_heads": 4,
                "num_hidden_layers": dims.layers,
                "intermediate_size": dims.ffn,
                "vocab_size": dims.vocab.vocab_size,
                "max_position_embeddings": dims.vocab.max_positions,
                "type_vocab_size": dims.vocab.type_vocab,
            }
        )
    )
    small = corpus_head(stdlib_corpus[0], 600, root / "small.txt")
    build_data(small, minilm_dir(), root / "data", DataSettings(seq_len=32, shard_size=64))
    args = [
        "supernet",
        "train",
        "--teacher",
        str(teacher),
        "--data",
        str(root / "data"),
        "--space",
        str(tiny_space_file),
        "--batch",
        "8",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "2",
        "--json",
    ]
    return root, args


def test_two_processes_resume_and_equal_one_process(setup, capsys, tmp_path):
    _, args = setup
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*args, "--steps", "4", "--out", str(straight)]) == 0
    assert main([*args, "--steps", "2", "--out", str(split)]) == 0  # steps 1-2 in one process
    capsys.readouterr()
    # Steps 3-4 resumed by two processes, each reading half of every batch.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "bfnas.cli",
            *args,
            "--steps",
            "4",
            "--out",
            str(split),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # rank 0 alone prints
    assert result["world_size"] == 2 and result["replicas_identical"] is True
    assert result["steps"] == 4 and result["new_steps"] == 2
    # One checkpoint, written whole by one process (no temporary files left behind).
    assert {p.name for p in split.iterdir()} == CHECKPOINT_FILES
    state = json.loads((split / "trainer.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    # The same losses and weights as one process at the same batch. Measured: weights within
    # 1.4e-6 while training moved them by 4e-3.
    one = json.loads((straight / "trainer.json").read_text())["history"]
    assert [r["largest"] for r in state["history"]] == pytest.approx(
        [r["largest"] for r in one], rel=1e-5
    )
    assert one[-1]["largest"] < one[1]["largest"]  # the loss moved
    a, b = (
        load_file(str(straight / "model.safetensors")),
        load_file(str(split / "model.safetensors")),
    )
    start = load_file(str(setup[0] / "teacher" / "model.safetensors"))
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-3
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < moved / 100


def test_ranks_losses_add_up_to_the_global_batchs(tiny_supernet, tiny_space):
    """What the trainer does per rank, without processes: each rank's slice of the batch,
    its loss scaled to its share, summed over ranks, is the whole batch's loss."""
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (4, 12))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[0, :5] = ids[0, :5]  # uneven: rank 0 has 6 predicted tokens, rank 1 has 1
    labels[1, 3] = ids[1, 3]
    labels[3, 7] = ids[3, 7]
    batch = {"input_ids": ids, "masked_ids": ids, "attention_mask": mask, "labels": labels}
    cfg, teacher = tiny_space.smallest(), tiny_space.largest()
    head = MlmHead(128, 30522, 1e-12)
    ranks = [Distributed(rank=r, world=2) for r in range(2)]
    with torch.no_grad():
        whole = mlm_loss(tiny_supernet, head, batch, cfg)
        parts = [
            mlm_loss(
                tiny_supernet, head, {k: v[d.shard(4)] for k, v in batch.items()}, cfg, predicted=7
            )
            for d in ranks
        ]
        assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-5)
        target = tiny_supernet.states(ids, teacher, mask)
        whole = kd_loss(tiny_supernet.states(ids, cfg, mask), target, cfg.hidden)
        parts = [
            0.5
            * kd_loss(
                tiny_supernet.states(ids[d.shard(4)], cfg, mask[d.shard(4)]),
                tiny_supernet.states(ids[d.shard(4)], teacher, mask[d.shard(4)]),
                cfg.hidden,
            )
            for d in ranks
        ]
        assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-5)


def test_a_trained_supernet_carries_its_tokenizer_to_task_eval(setup, capsys, tmp_path):
    _, args = setup
    out = tmp_path / "sn"
    assert main([*args, "--steps", "1", "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()
    task = tmp_path / "task"
    task.mkdir()
    rows = [
        f"{w} {w} {w}\t{i % 2}\n" for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 3)
    ]
    (task / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (task / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows[:4]))
    capsys.readouterr()
    code = main(
        [
            "task",
            "eval",
            "--supernet",
            str(out),
            "--task-dir",
            str(task),
            "--space",
            args[args.index("--space") + 1],
            "--arch",
            '{"layers": 1, "hidden": 64, "heads": 2, "qkv": 64, "ffn": 64}',
            "--epochs",
            "1",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["pooler"] == "fresh" and result["supernet"]["path"] == str(out)
    assert result["tokenizer"] == str(out / "tokenizer.json")


@pytest.mark.parametrize(
    "env, flags, message",
    [
        ({"WORLD_SIZE": "3"}, [], "--batch: 8 does not split evenly over 3 processes"),
        ({}, ["--device", "cuda"], "--device: cuda asked for"),
    ],
)
def test_refused_before_any_process_group_forms(
    setup, capsys, tmp_path, monkeypatch, env, flags, message
):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _, args = setup
    code = main([*args, "--steps", "1", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
