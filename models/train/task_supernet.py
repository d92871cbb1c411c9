"""A task supernet: the whole elastic `SuperBert` fine-tuned on one classification task, so that
every subnet's dev accuracy with inherited weights ranks it for search (objective `task`,
`oneshot.TaskAccuracyScorer`) without a fine-tune of its own.

Each step trains the sandwich (`trainer_checkpoint.sandwich`: the largest member, the
smallest and `random_subnets` random ones) on one batch of the task's train split, through an
elastic classification head (`models.nn.task_head.ElasticClassifier`: BERT's pooler and a
linear classifier, sliced to each subnet's width). The largest member learns from the labels
(cross-entropy); the others from the labels and, with `kd="inplace"` (in-place distillation,
as BigNAS and OFA train their children), from the largest member's softened predictions on the
same batch, which carry more than a label does (how alike two classes look). The gradients of
all members add up before one AdamW step.

Training is deterministic and resumable: the batch of step s is a function of the seed and s
(an epoch's order is drawn from (seed, epoch)), the learning rate rises linearly over
`warmup_steps` and then stays (so a rerun with more `--steps` continues the same curve), and
there is no dropout (its masks would make a resumed or data-parallel run differ from a
straight one). Under torchrun each rank takes its contiguous share of every batch, as
`supernet train` does (`models.train.parallel`).

The folder written (`bfnas supernet finetune --out`) is a supernet checkpoint folder whose
model.safetensors also holds the head at full width (`pooler.dense.*`, `classifier.*`), with
task.json beside it: the label names in class-id order, the task folder and the hashes of
its splits, max_len (`checkpoint.read_task_manifest` reads it).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bfnas.errors import InputError
from bfnas.models.digest import file_sha256
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.nn.task_head import ElasticClassifier
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.train.finetune import PreparedTask, decay_groups
from bfnas.models.train.glue_task import GlueTask, collate, read_task
from bfnas.models.train.oneshot import (
    SCORER_BATCH_TOKENS,
    TASK_REFIT,
    HeadRefit,
    TaskAccuracyScorer,
)
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

TASK_FILE = "task.json"


# -- what a child learns from ------------------------------------------------------------------
@dataclass(frozen=True)
class ChildTargets:
    """What a sandwich member other than the largest is trained on."""

    logits: Tensor
    labels: Tensor
    teacher: Tensor  # the largest member's logits on the same rows (detached)
    kd_weight: float
    temperature: float


def labels_only(t: ChildTargets) -> Tensor:
    return F.cross_entropy(t.logits, t.labels)


def inplace_distillation(t: ChildTargets) -> Tensor:
    """(1 - w) * cross-entropy + w * T^2 * KL(teacher_T || child_T): Hinton's distillation
    with the largest member as the teacher; T^2 keeps the gradient scale of the soft term
    independent of the temperature."""
    temp = t.temperature
    soft = F.kl_div(
        F.log_softmax(t.logits / temp, dim=-1),
        F.log_softmax(t.teacher / temp, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(t.logits, t.labels)
    return (1 - t.kd_weight) * hard + t.kd_weight * temp * temp * soft


CHILD_LOSSES: dict[str, Callable[[ChildTargets], Tensor]] = {
    "none": labels_only,
    "inplace": inplace_distillation,
}


@dataclass(frozen=True)
class TaskTrainSettings:
    # 5e-4 x 400: at 1e-4 x 150 the lower half of minilm-l6 stays at chance on the offline
    # task (benchmarks/results/task_supernet_lr.md); narrow slices learn slowly, not never.
    steps: int = 400
    batch: int = 32
    lr: float = 5e-4
    random_subnets: int = 2
    max_len: int = 64
    kd: str = "inplace"  # what the smaller members learn from: a name in CHILD_LOSSES
    kd_weight: float = 0.5
    temperature: float = 2.0
    warmup_steps: int = 20
    weight_decay: float = 0.01
    checkpoint_every: int = 50
    int8_aware: bool = False  # members run fake-quantized as the dynamic INT8 recipe runs them
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kd not in CHILD_LOSSES:
            raise InputError.bad_setting(
                "kd", f"unknown {self.kd!r} (known: {', '.join(CHILD_LOSSES)})"
            )
        for name in ("steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("random_subnets", "warmup_steps"):
            if getattr(self, name) < 0:
                raise InputError.bad_setting(name, f"must be 0 or more, got {getattr(self, name)}")
        if not 4 <= self.max_len <= 4096:
            raise InputError.bad_setting("max_len", f"must be in [4, 4096], got {self.max_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError.bad_setting("lr", f"must be positive, got {self.lr}")
        if not 0 <= self.kd_weight <= 1:
            raise InputError.bad_setting("kd_weight", f"must be in [0, 1], got {self.kd_weight}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InputError.bad_setting("temperature", f"must be positive, got {self.temperature}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant: a function of the step alone, so a resumed run
        and a longer one follow the same curve."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr


# -- the task -----------------------------------------------------------------------------------
def task_identity(task: GlueTask) -> dict[str, str]:
    """The task.json entry of a task: its folder and the hashes of its two splits."""
    return {
        "folder": str(task.folder.resolve()),
        "train_sha256": file_sha256(task.train.path),
        "dev_sha256": file_sha256(task.dev.path),
    }


def check_task_labels(manifest: dict[str, Any], where: Path, task: GlueTask) -> None:
    """A task supernet scores a task only with the labels its head was trained on, in the
    same class-id order."""
    labels = list(manifest["labels"])
    if labels != list(task.label_names):
        raise InputError(
            str(where),
            "labels",
            f"{', '.join(labels)}, but {task.train.path} has "
            f"{', '.join(task.label_names)}: the head was trained on another task",
        )


class TaskBatches:
    """The rows of every step's batch: epoch e's order is a permutation drawn from
    (seed, e), each epoch ends with its last full batch (every step has the whole global
    batch, so it splits over the ranks)."""

    def __init__(self, examples: int, batch: int, seed: int, where: str) -> None:
        if examples < batch:
            raise InputError(
                where, None, f"{examples} training examples, fewer than one batch of {batch}"
            )
        self.examples, self.batch, self.seed = examples, batch, seed
        self.per_epoch = examples // batch
        self._order: tuple[int, np.ndarray] | None = None

    def rows(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.examples)
            self._order = (epoch, order)
        return self._order[1][index * self.batch : (index + 1) * self.batch].tolist()


# -- the trainer ---------------------------------------------------------------------------------
class TaskSupernetTrainer:
    """Fine-tune `supernet` (all of it: the space's members share its weights) on `data`.

    `head` is the classification head to start from (a fresh one unless resuming);
    `base_config` the source checkpoint's config.json; `source` where the supernet came from
    (recorded in task.json); `dist` places this process in a torchrun job."""

    def __init__(
        self,
        supernet: SuperBert,
        head: ElasticClassifier,
        space: SearchSpace,
        data: PreparedTask,
        out: str | Path,
        settings: TaskTrainSettings,
        base_config: dict,
        source: dict | None = None,
        dist: Distributed | None = None,
    ) -> None:
        supernet.check_fits(space.largest(), setting="space")
        if data.max_len != settings.max_len:
            raise ValueError(f"the task was tokenized for max_len {data.max_len}")
        self.dist = dist or Distributed()
        self.rank_rows = self.dist.shard(settings.batch)
        device = self.dist.device
        self.supernet, self.head = supernet.to(device), head.to(device)
        self.space, self.data, self.out, self.s = space, data, Path(out), settings
        self.base_config, self.source = base_config, source or dict(supernet.source)
        self.task = task_identity(data.task)
        self.batches = TaskBatches(
            len(data.train.ids), settings.batch, settings.seed, str(data.task.train.path)
        )
        self.params = list(self.supernet.parameters()) + list(self.head.parameters())
        groups = decay_groups(self.supernet, settings.weight_decay)
        head_groups = decay_groups(self.head, settings.weight_decay)
        for g, h in zip(groups, head_groups, strict=True):
            g["params"] += h["params"]
        self.opt = torch.optim.AdamW(groups, lr=settings.lr)
        self.child_loss = CHILD_LOSSES[settings.kd]
        self.step = 0
        self.history: list[dict] = []
        self.rng = random.Random(settings.seed)  # the same on every rank: the same sandwich
        self._resume()
        broadcast_parameters(self.supernet, self.dist)
        broadcast_parameters(self.head, self.dist)

    # -- checkpoints ------------------------------------------------------------------------
    def _identity(self) -> tuple:
        """What fixes the results: another value of any of these is another run."""
        s = self.s
        return (
            s.seed,
            s.kd,
            s.int8_aware,
            s.max_len,
            s.batch,
            self.space.name,
            list(self.data.task.label_names),
            self.task["train_sha256"],
        )

    def _resume(self) -> None:
        state = read_trainer_state(self.out)
        if state is None:
            return
        old = state.get("settings")
        old = old if isinstance(old, dict) else {}
        task = state.get("task")
        task = task if isinstance(task, dict) else {}
        refuse_another_run(
            self.out,
            self._identity(),
            (
                old.get("seed"),
                old.get("kd"),
                old.get("int8_aware"),
                old.get("max_len"),
                old.get("batch"),
                state.get("space"),
                state.get("labels"),
                task.get("train_sha256"),
            ),
        )

        def load_weights(tensors: dict[str, Tensor]) -> None:
            head = {k: v for k, v in tensors.items() if k.startswith(("pooler.", "classifier."))}
            self.head.load_state_dict(head)
            self.supernet.load_state_dict({k: v for k, v in tensors.items() if k not in head})

        load_checkpoint(self.out, load_weights, self.opt)
        self.step, self.history = restore_progress(self.out, state, self.rng)

    def manifest(self) -> dict[str, Any]:
        """task.json: what `checkpoint.read_task_head` and the `task` objective read."""
        t = self.data.task
        return {
            "labels": list(t.label_names),
            "task": {
                **self.task,
                "text_columns": list(t.text_columns),
                "label_column": t.label_column,
                "train_examples": len(t.train.a),
                "dev_examples": len(t.dev.a),
                "dev_file": t.dev.path.name,
            },
            "max_len": self.s.max_len,
            "space": self.space.name,
            "source": {k: self.source.get(k) for k in ("kind", "path", "weights_sha256")},
            "steps": self.step,
            "settings": asdict(self.s),
        }

    def save(self) -> None:
        """Write the checkpoint and task.json (rank 0 only: the replicas are identical)."""
        if not self.dist.main:
            return
        tensors = {**self.supernet.state_dict(), **self.head.state_dict()}
        state = {
            "step": self.step,
            "settings": asdict(self.s),
            "space": self.space.name,
            "labels": list(self.data.task.label_names),
            "task": self.task,
            "world_size": self.dist.world,
            "history": self.history,
            "rng": rng_to_json(self.rng.getstate()),
        }
        save_checkpoint(
            self.out,
            hf_config(self.base_config, self.supernet),
            tensors,
            self.opt,
            self.data.tokenizer,
            state,
            {TASK_FILE: self.manifest()},
        )

    # -- training ---------------------------------------------------------------------------
    def _batch(self, step: int) -> dict[str, Tensor]:
        rows = self.batches.rows(step)[self.rank_rows]
        batch = collate(self.data.train, rows, self.data.pad)
        return {k: v.to(self.dist.device) for k, v in batch.items()}

    def _logits(self, b: dict[str, Tensor], cfg) -> Tensor:
        hidden = self.supernet(
            b["input_ids"], cfg, b["attention_mask"], b["token_type_ids"], self.s.int8_aware
        )
        return self.head(hidden, self.s.int8_aware)

    def train(self, on_step: Callable[[dict], None] = lambda row: None) -> dict[str, Any]:
        self.supernet.train()
        self.head.train()
        t0 = time.perf_counter()
        start = self.step
        # This rank's rows are 1/world of the batch: its mean loss counts for that share.
        share = 1.0 / self.dist.world
        while self.step < self.s.steps:
            b = self._batch(self.step)
            for group in self.opt.param_groups:
                group["lr"] = self.s.lr_at(self.step)
            self.opt.zero_grad()
            names, values = [], []
            teacher: Tensor | None = None
            for name, cfg in sandwich(self.space, self.rng, self.s.random_subnets):
                logits = self._logits(b, cfg)
                if teacher is None:  # the largest member, first: it learns from the labels
                    loss = F.cross_entropy(logits, b["labels"])
                    teacher = logits.detach()
                else:
                    loss = self.child_loss(
                        ChildTargets(
                            logits, b["labels"], teacher, self.s.kd_weight, self.s.temperature
                        )
                    )
                (share * loss).backward()
                names.append(name)
                values.append(share * float(loss.detach()))
            all_reduce_grads(self.params, self.dist)
            # Clipped after the all-reduce: every rank clips the same summed gradient.
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
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
        self.head.eval()
        seconds = time.perf_counter() - t0
        done = self.step - start
        return {
            "steps": self.step,
            "new_steps": done,
            "seconds": seconds,
            "steps_per_s": done / seconds if done else None,
            "out": str(self.out),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "replicas_identical": replicas_identical(self.supernet, self.dist),
            "labels": list(self.data.task.label_names),
            "last": self.history[-1] if self.history else None,
        }

    def dev_accuracy(self, which: Sequence[str] = ("largest", "smallest")) -> dict[str, float]:
        """Dev accuracy of the space's largest and smallest members, as the `task`
        objective scores them."""
        scorer = TaskAccuracyScorer(
            self.supernet.cpu(), self.head.cpu(), self.data.dev, self.data.pad
        )
        members = {"largest": self.space.largest(), "smallest": self.space.smallest()}
        return {name: scorer(members[name]) for name in which}


def task_supernet_start(
    folder: Path,
    task: GlueTask,
    tokenizer: str | Path,
    space: SearchSpace,
    settings: TaskTrainSettings,
) -> tuple[SuperBert, ElasticClassifier, PreparedTask, dict]:
    """What a `TaskSupernetTrainer` starts from, for the CLI and the demo alike: the
    supernet checkpoint at `folder` (its weights and config.json), the task tokenized at
    `settings.max_len`, and a fresh head (the checkpoint's pooler when it has one)."""
    from bfnas.models.nn.checkpoint import load_supernet, read_config, read_pooler
    from bfnas.models.train.finetune import FinetuneSettings, prepare_task

    supernet = load_supernet(folder)
    _, _, raw = read_config(folder)
    try:
        supernet.check_fits(space.largest())
    except InputError as exc:
        raise InputError.bad_setting(
            "space", f"space {space.name} does not fit the supernet: {exc.reason}", exc.field
        ) from None
    data = prepare_task(
        supernet, space.largest(), task, tokenizer, FinetuneSettings(max_len=settings.max_len)
    )
    head = ElasticClassifier.fresh(
        supernet.dims.hidden, len(task.label_names), settings.seed, read_pooler(folder)
    )
    return supernet, head, data, raw


# -- reading a task supernet back ----------------------------------------------------------------
@dataclass(frozen=True)
class TaskSupernet:
    """A task supernet folder, loaded: the encoder, its head, task.json and the tokenizer."""

    folder: Path
    supernet: SuperBert
    head: ElasticClassifier
    manifest: dict[str, Any]
    tokenizer: Path


def load_task_supernet(folder: str | Path, setting: str = "task_supernet") -> TaskSupernet:
    """A folder `bfnas supernet finetune` wrote, or one line saying what is wrong with it:
    not a folder, no task.json (a plain supernet), a damaged one, weights without the head,
    no tokenizer."""
    from bfnas.models.nn.checkpoint import load_supernet, read_task_head, read_task_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError.bad_setting(setting, f"{folder}: not a directory")
    manifest = read_task_manifest(folder)
    head = read_task_head(folder) if manifest is not None else None
    if manifest is None or head is None:
        raise InputError(
            str(folder / TASK_FILE),
            None,
            "missing: not a task supernet (make one with `bfnas supernet finetune`)",
        )
    tokenizer = next(
        (folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()), None
    )
    if tokenizer is None:
        raise InputError(str(folder), None, "holds no tokenizer.json or vocab.txt")
    return TaskSupernet(
        folder, load_supernet(folder), ElasticClassifier.from_task_head(head), manifest, tokenizer
    )


def task_folder(tsn: TaskSupernet, task_dir: str | Path | None) -> GlueTask:
    """The task a task supernet scores: `task_dir` when given, else the folder its
    task.json names; its labels must be the head's."""
    where = tsn.folder / TASK_FILE
    if task_dir is None:
        recorded = Path(tsn.manifest["task"]["folder"])
        if not recorded.is_dir():
            raise InputError.bad_setting(
                "task_dir",
                f"not given, and the task folder {where} names ({recorded}) is not there any more",
            )
        task_dir = recorded
    task = read_task(task_dir)
    check_task_labels(tsn.manifest, where, task)
    return task


def task_scorer(
    tsn: TaskSupernet,
    task_dir: str | Path | None = None,
    batch_tokens: int = SCORER_BATCH_TOKENS,
    int8: bool = False,
    refit: HeadRefit | None = TASK_REFIT,
) -> TaskAccuracyScorer:
    """The `task` objective's scorer over a task supernet: its dev split tokenized with the
    folder's tokenizer at the max_len the supernet was fine-tuned with, each subnet's
    classifier refitted on train rows first (`oneshot.HeadRefit`) unless `refit` is None."""
    from bfnas.models.train.glue_task import encode
    from bfnas.models.train.pretraining_data import load_tokenizer

    task = task_folder(tsn, task_dir)
    tok, specials, _ = load_tokenizer(tsn.tokenizer)
    max_len = tsn.manifest["max_len"]
    dev = encode(task.dev, tok, specials.cls, specials.sep, max_len)
    train = None
    if refit is not None:
        # Only the rows the refit fits on are tokenized (a user's train may be large); the
        # scorer's own draw from exactly that many rows is all of them, in this order.
        fit_rows = task.train.subset(refit.rows(len(task.train.a)))
        train = encode(fit_rows, tok, specials.cls, specials.sep, max_len)
    return TaskAccuracyScorer(
        tsn.supernet, tsn.head, dev, specials.pad, batch_tokens, int8, train, refit
    )
