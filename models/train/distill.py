"""Stage 1: elastic training of a `SuperBert` by distillation from a teacher BERT.

Each step trains several subnets on one batch (the sandwich rule: the largest, the smallest
and `random_subnets` random members of the space), each by matching the teacher layer by
layer as AutoTinyBERT and Bigger&Faster do: student layer i is mapped to teacher layer
round((i + 1) * L_t / L_s) - 1, and the loss is the MSE of its hidden state against the
teacher's leading `hidden` channels plus the MSE of its head-averaged attention
probabilities against the teacher's. The gradients of all sandwich members add up before
one optimizer step. With `int8_aware` the students run fake-quantized exactly as the
`dynamic` INT8 recipe deploys them (`models.nn.fake_quant`), the teacher in FP32: quality is
learned as it will run, the point of Bigger&Faster. `loss="mlm"` trains by masked-LM
instead (no teacher needed), through an elastic `MlmHead` tied to the word embeddings.

Checkpoints are Hugging Face BERT folders (config.json + model.safetensors), so a trained
supernet loads wherever `--checkpoint DIR` is accepted; the optimizer state and the
trainer's progress sit beside them (optimizer.pt, read back with weights_only=True;
trainer.json), and the tokenizer the data was made with (so `bfnas task eval --supernet`
finds it). A rerun resumes from the folder (`models.train.trainer_checkpoint`, shared with
the task supernet's trainer).

Under `torchrun` (see `models.train.parallel`) the same trainer runs data-parallel: `batch` is the
global batch, each rank reads its own contiguous slice of every batch, all ranks draw the
same sandwich (same seed), each rank's loss is scaled to its share of the batch and the
gradients are summed over ranks before the optimizer step -- so N processes compute what
one process computes at the same `batch`, up to float rounding (tested with 2 CPU
processes). Only rank 0 writes the checkpoint, and a run may resume with another number of
processes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bfnas.errors import InputError
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.parallel import (
    Distributed,
    all_reduce_grads,
    all_reduce_sum,
    broadcast_parameters,
)
from bfnas.models.train.trainer_checkpoint import (
    hf_config,
    load_checkpoint,
    read_trainer_state,
    refuse_another_run,
    replicas_identical,
    restore_progress,
    rng_to_json,
    sandwich,
    save_checkpoint,
)

LOSSES = ("kd", "mlm")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 100
    batch: int = 8
    lr: float = 5e-5
    random_subnets: int = 2
    attention_weight: float = 1.0
    checkpoint_every: int = 50
    loss: str = "kd"
    int8_aware: bool = (
        False  # the subnets run fake-quantized as the dynamic INT8 recipe deploys them
    )
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError.bad_setting(
                "loss", f"unknown loss {self.loss!r} (known: {', '.join(LOSSES)})"
            )
        for name in ("steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    return [
        max(round((i + 1) * teacher_layers / student_layers) - 1, 0) for i in range(student_layers)
    ]


def kd_loss(
    student: tuple[list[Tensor], list[Tensor]],
    teacher: tuple[list[Tensor], list[Tensor]],
    hidden: int,
    attention_weight: float = 1.0,
) -> Tensor:
    (s_h, s_p), (t_h, t_p) = student, teacher
    pairs = list(enumerate(layer_map(len(s_p), len(t_p))))
    total = F.mse_loss(s_h[0], t_h[0][..., :hidden])  # the embeddings
    for i, j in pairs:
        total = total + F.mse_loss(s_h[i + 1], t_h[j + 1][..., :hidden])
        total = total + attention_weight * F.mse_loss(s_p[i], t_p[j])
    return total / (len(pairs) + 1)


class MlmHead(torch.nn.Module):
    """BERT's masked-LM head, elastic like the encoder: a subnet of width h uses the leading h
    rows and columns of the transform and the leading h columns of the word embeddings
    (tied decoder). Hugging Face names (`cls.predictions.*`), saved with the checkpoint; an
    encoder-only checkpoint such as all-MiniLM-L6-v2 has none, so it starts fresh."""

    def __init__(self, hidden: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(hidden, hidden)
        self.norm = torch.nn.LayerNorm(hidden, eps=eps)
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        self.eps = eps

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        h = x.shape[-1]
        y = F.gelu(F.linear(x, self.dense.weight[:h, :h], self.dense.bias[:h]))
        y = F.layer_norm(y, (h,), self.norm.weight[:h], self.norm.bias[:h], self.eps)
        return F.linear(y, word_embeddings[:, :h], self.bias)

    def hf_state(self) -> dict[str, Tensor]:
        p = "cls.predictions."
        return {
            p + "transform.dense.weight": self.dense.weight,
            p + "transform.dense.bias": self.dense.bias,
            p + "transform.LayerNorm.weight": self.norm.weight,
            p + "transform.LayerNorm.bias": self.norm.bias,
            p + "bias": self.bias,
        }

    def load_hf_state(self, tensors: dict[str, Tensor]) -> bool:
        state = self.hf_state()
        if not all(k in tensors for k in state):
            return False
        with torch.no_grad():
            for k, v in state.items():
                v.copy_(tensors[k])
        return True


def mlm_loss(
    supernet: SuperBert,
    head: MlmHead,
    batch: dict[str, Tensor],
    cfg: SubnetConfig,
    int8: bool = False,
    predicted: int | None = None,
) -> Tensor:
    """Cross-entropy summed over the predicted tokens of `batch`, divided by `predicted`
    (default: their number here, i.e. the mean; a rank of a data-parallel job passes the
    count of the whole global batch, so the ranks' losses add up to the global mean)."""
    hiddens, _ = supernet.states(batch["masked_ids"], cfg, batch["attention_mask"], int8=int8)
    logits = head(hiddens[-1], supernet.embeddings.word_embeddings.weight)
    labels = batch["labels"].reshape(-1)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels, ignore_index=-100, reduction="sum"
    )
    return total / max(predicted if predicted is not None else int((labels != -100).sum()), 1)


def training_batches(data_dir: str | Path, batch: int, seed: int) -> Iterator[dict[str, Tensor]]:
    """Endless batches from every shard but the last (held out for one-shot scoring), in a
    seeded order: the original tokens (what distillation reads) and the masked ones with
    their labels (what MLM reads)."""
    from bfnas.models.train.pretraining_data import load_shard, original_tokens, shard_files

    shards = shard_files(data_dir, at_least=2)[:-1]
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(shards)):
            shard = load_shard(shards[i])
            labels = shard["labels"].astype(np.int64)
            masked = shard["input_ids"].astype(np.int64)
            ids = original_tokens(shard)
            mask = shard["attention_mask"].astype(np.int64)
            order = rng.permutation(len(ids))
            for start in range(0, len(ids) - batch + 1, batch):
                sel = order[start : start + batch]
                yield {
                    "input_ids": torch.from_numpy(ids[sel]),
                    "attention_mask": torch.from_numpy(mask[sel]),
                    "masked_ids": torch.from_numpy(masked[sel]),
                    "labels": torch.from_numpy(labels[sel]),
                }


class SupernetTrainer:
    """`dist` places this process in a torchrun job (default: one process on the CPU);
    `tokenizer`, when given, is copied into the checkpoint folder beside the weights."""

    def __init__(
        self,
        supernet: SuperBert,
        teacher: SuperBert,
        teacher_cfg: SubnetConfig,
        space: SearchSpace,
        data_dir: str | Path,
        out: str | Path,
        settings: TrainSettings,
        base_config: dict,
        dist: Distributed | None = None,
        tokenizer: Path | None = None,
    ) -> None:
        space_big = space.largest()
        supernet.check_fits(space_big, setting="space")
        self.dist = dist or Distributed()
        self.rows = self.dist.shard(
            settings.batch
        )  # refuses a batch that does not split over the ranks
        device = self.dist.device
        self.supernet, self.teacher, self.teacher_cfg = (
            supernet.to(device),
            teacher.to(device).eval(),
            teacher_cfg,
        )
        self.space, self.data_dir, self.out, self.s = space, Path(data_dir), Path(out), settings
        self.base_config, self.tokenizer = base_config, tokenizer
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        d = supernet.dims
        self.head = (
            MlmHead(d.hidden, d.vocab.vocab_size, d.vocab.layer_norm_eps).to(device)
            if settings.loss == "mlm"
            else None
        )
        self.params = list(self.supernet.parameters()) + (
            list(self.head.parameters()) if self.head else []
        )
        self.opt = torch.optim.AdamW(self.params, lr=settings.lr)
        self.step = 0
        self.history: list[dict] = []
        self.rng = random.Random(settings.seed)  # the same on every rank: the same sandwich
        self._resume()
        broadcast_parameters(self.supernet, self.dist)
        if self.head is not None:
            broadcast_parameters(self.head, self.dist)

    # -- checkpoints ------------------------------------------------------------------------
    def _resume(self) -> None:
        state = read_trainer_state(self.out)
        if state is None:
            return
        old = state.get("settings", {})
        old = old if isinstance(old, dict) else {}
        refuse_another_run(
            self.out,
            (self.s.seed, self.s.int8_aware, self.s.loss, self.space.name),
            (
                old.get("seed"),
                old.get("int8_aware", False),
                old.get("loss", "kd"),
                state.get("space"),
            ),
        )

        def load_weights(tensors: dict[str, Tensor]) -> None:
            if self.head is not None:
                self.head.load_hf_state(tensors)
            self.supernet.load_state_dict(
                {k: v for k, v in tensors.items() if not k.startswith("cls.")}
            )

        load_checkpoint(self.out, load_weights, self.opt)
        self.step, self.history = restore_progress(self.out, state, self.rng)

    def save(self) -> None:
        """Write the checkpoint (rank 0 only: the replicas are identical)."""
        if not self.dist.main:
            return
        tensors = dict(self.supernet.state_dict())
        if self.head is not None:
            tensors.update({k: v.detach() for k, v in self.head.hf_state().items()})
        state = {
            "step": self.step,
            "settings": asdict(self.s),
            "space": self.space.name,
            "world_size": self.dist.world,
            "history": self.history,
            "rng": rng_to_json(self.rng.getstate()),
        }
        save_checkpoint(
            self.out,
            hf_config(self.base_config, self.supernet),
            tensors,
            self.opt,
            self.tokenizer,
            state,
        )

    # -- training ---------------------------------------------------------------------------
    def train(self, on_step: Callable[[dict], None] = lambda row: None) -> dict[str, Any]:
        batches = training_batches(self.data_dir, self.s.batch, self.s.seed)
        for _ in range(self.step):  # the same batches as an uninterrupted run
            next(batches)
        self.supernet.train()
        t0 = time.perf_counter()
        start = self.step
        # This rank's rows are 1/world of the batch: its mean loss counts for that share.
        share = 1.0 / self.dist.world
        while self.step < self.s.steps:
            whole = next(batches)
            predicted = int((whole["labels"] != -100).sum())  # the global batch's, for MLM
            b = {k: v[self.rows].to(self.dist.device) for k, v in whole.items()}
            if self.head is None:
                with torch.no_grad():
                    target = self.teacher.states(
                        b["input_ids"], self.teacher_cfg, b["attention_mask"]
                    )
            self.opt.zero_grad()
            names, values = [], []
            for name, cfg in sandwich(self.space, self.rng, self.s.random_subnets):
                if self.head is not None:
                    loss = mlm_loss(self.supernet, self.head, b, cfg, self.s.int8_aware, predicted)
                else:
                    student = self.supernet.states(
                        b["input_ids"], cfg, b["attention_mask"], int8=self.s.int8_aware
                    )
                    loss = share * kd_loss(student, target, cfg.hidden, self.s.attention_weight)
                loss.backward()
                names.append(name)
                values.append(float(loss.detach()))
            all_reduce_grads(self.params, self.dist)
            self.opt.step()
            self.step += 1
            row = {
                "step": self.step,
                **dict(zip(names, all_reduce_sum(values, self.dist), strict=True)),
            }
            self.history.append(row)
            on_step(row)
            if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                self.save()
        self.supernet.eval()
        seconds = time.perf_counter() - t0
        done = self.step - start
        same = replicas_identical(self.supernet, self.dist)
        return {
            "steps": self.step,
            "new_steps": done,
            "seconds": seconds,
            "steps_per_s": done / seconds if done else None,
            "out": str(self.out),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "replicas_identical": same,
            "last": self.history[-1] if self.history else None,
        }
