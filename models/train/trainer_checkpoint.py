"""What every elastic trainer shares: the sandwich of subnets a step trains, and the checkpoint
folder it writes and resumes from.

A checkpoint folder is a Hugging Face BERT folder (config.json + model.safetensors, so it loads
wherever `--checkpoint DIR` is accepted) with the optimizer state (optimizer.pt, read back with
weights_only=True), the tokenizer the token ids belong to, any JSON files the trainer adds
(a task supernet's task.json) and, written last, trainer.json: the step, the settings, the
loss history and the sandwich generator's state. A folder is resumed from only once its
trainer.json records a step, so a run killed while writing resumes from the checkpoint before.
Every file of a folder a killed or damaged run left is read with one-line errors.

`bfnas supernet train` (`distill.SupernetTrainer`) and `bfnas supernet finetune`
(`task_supernet.TaskSupernetTrainer`) both use this module.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfnas.errors import InputError, read_text_input
from bfnas.models.nn.supernet import SuperBert, weights_sha256
from bfnas.models.outputs import atomic_path, write_atomic
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.parallel import Distributed, all_equal

CHECKPOINT_FILES = ("config.json", "model.safetensors", "optimizer.pt", "trainer.json")
TRAINER_FILE = "trainer.json"


def sandwich(
    space: SearchSpace, rng: random.Random, random_subnets: int
) -> list[tuple[str, SubnetConfig]]:
    """The sandwich rule's subnets for one step, named: the largest first (a trainer that
    distils in place reads its output before the others'), the smallest, then
    `random_subnets` random members drawn from `rng` (the same on every rank)."""
    return [
        ("largest", space.largest()),
        ("smallest", space.smallest()),
        *((f"random{i}", space.sample(rng)) for i in range(random_subnets)),
    ]


def read_trainer_state(out: Path) -> dict[str, Any] | None:
    """trainer.json of a checkpoint folder, or None when there is none (a fresh run)."""
    meta = out / TRAINER_FILE
    if not meta.is_file():
        return None
    try:
        state = json.loads(read_text_input(meta))
    except json.JSONDecodeError as exc:
        raise InputError(str(meta), None, f"damaged: not valid JSON ({exc.msg})") from None
    if not isinstance(state, dict):
        raise InputError(str(meta), None, "damaged: not a JSON object")
    return state


def refuse_another_run(out: Path, ours: tuple, theirs: tuple) -> None:
    """A folder whose run differs in what fixes its results (seed, loss, space, ...) is not
    continued: its steps would mix two trainings."""
    if ours != theirs:
        raise InputError.bad_setting(
            "out",
            f"{out}: holds another training run ({TRAINER_FILE} records other settings): "
            "give a new folder",
        )


def load_checkpoint(
    out: Path,
    load_weights: Callable[[dict[str, Tensor]], None],
    optimizer: torch.optim.Optimizer,
) -> None:
    """Load model.safetensors through `load_weights` (which may raise KeyError, RuntimeError
    or ValueError for tensors that do not fit) and optimizer.pt into `optimizer`."""
    from bfnas.models.nn.checkpoint import load_tensors, torch_load_data

    tensors = load_tensors(out / "model.safetensors")
    state = torch_load_data(out / "optimizer.pt")
    try:
        load_weights(tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputError(
            str(out / "model.safetensors"),
            None,
            f"does not fit this supernet ({str(exc).splitlines()[0][:160]})",
        ) from None
    try:
        optimizer.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(
            str(out / "optimizer.pt"),
            None,
            f"damaged or of another run ({str(exc).splitlines()[0][:160]})",
        ) from None


def restore_progress(out: Path, state: dict[str, Any], rng: random.Random) -> tuple[int, list]:
    """The step and loss history trainer.json records; `rng` is set to its saved state."""
    try:
        step = int(state["step"])
        history = state["history"]
        if not isinstance(history, list):
            raise TypeError("history is not a list")
        rng.setstate(rng_from_json(state["rng"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            str(out / TRAINER_FILE),
            None,
            f"damaged: step, history or rng unreadable ({type(exc).__name__}: {exc})",
        ) from None
    return step, history


def save_checkpoint(
    out: Path,
    config: dict[str, Any],
    tensors: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    tokenizer: Path | None,
    state: dict[str, Any],
    extra_json: dict[str, dict] | None = None,
) -> None:
    """Write a checkpoint folder: config, weights, optimizer, tokenizer (copied once), the
    trainer's own JSON files, and trainer.json last."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with atomic_path(out / "optimizer.pt") as tmp:
        torch.save(optimizer.state_dict(), tmp)
    if tokenizer is not None and not (out / tokenizer.name).exists():
        with atomic_path(out / tokenizer.name) as tmp:
            shutil.copyfile(tokenizer, tmp)
    for name, data in (extra_json or {}).items():
        write_atomic(out / name, json.dumps(data, indent=2) + "\n")
    # Written last: a checkpoint is resumed from only once its step is recorded.
    write_atomic(out / TRAINER_FILE, json.dumps(state, indent=1) + "\n")


def hf_config(base_config: dict[str, Any], supernet: SuperBert) -> dict[str, Any]:
    """The checkpoint's config.json: the source checkpoint's, at the supernet's size."""
    d = supernet.dims
    return {
        **base_config,
        "model_type": "bert",
        "hidden_size": d.hidden,
        "num_hidden_layers": d.layers,
        "intermediate_size": d.ffn,
    }


def replicas_identical(supernet: SuperBert, dist: Distributed) -> bool:
    """A cheap guard against replicas drifting apart (a rank that skipped a collective, a
    nondeterministic kernel): every rank hashes its weights and compares."""
    return all_equal(weights_sha256(supernet), dist) if dist.world > 1 else True


def rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def rng_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return version, tuple(internal), gauss
