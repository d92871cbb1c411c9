"""Fine-tuning one subnet on a GLUE-format classification task: the downstream check of a
stage-1 supernet (the seed's MNLI step, for any GLUE-style TSV task).

The subnet starts from the supernet's weights (`SuperBert.extract`), gets BERT's classifier
on top (the pooler -- a tanh dense on [CLS] -- taken from the checkpoint when it has one,
sliced to the subnet's width, else fresh; dropout; a fresh linear layer; from a task
supernet, its trained pooler and linear layer, both sliced) and is fine-tuned end to end with
AdamW under a linear warm-up/decay schedule, then scored on the dev split. With `int8_aware`
the subnet and its head train fake-quantized as the `dynamic` INT8 recipe deploys them.
Everything random (the head's initialisation, dropout, the order of the examples) comes from
`seed`, inside a forked RNG so the caller's global state is untouched: on one machine the
same inputs give the same accuracy.

The task folder is read by `glue_task`, the model is `task_classifier`'s; this module is the
training loop and the result it reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.errors import InputError
from bfnas.models.nn.supernet import SuperBert, weights_sha256
from bfnas.models.prune.masks import apply_masks
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.glue_task import Encoded, GlueTask, collate, encode
from bfnas.models.train.task_classifier import (
    SubnetClassifier,
    build_classifier,
    classification_metrics,
    predict,
)


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 3
    lr: float = 5e-5
    batch: int = 32
    max_len: int = 128
    seed: int = 0
    warmup: float = 0.1  # fraction of the steps with a rising learning rate, as BERT fine-tunes
    weight_decay: float = 0.01
    dropout: float = 0.1  # on the pooled [CLS], as BERT's classifier
    # Train as the dynamic INT8 recipe runs the model (fake quantization, straight-through
    # gradients), so the INT8 file keeps the accuracy the FP32 one has.
    int8_aware: bool = False
    # Batches of examples of about one length (sorted within chunks of 50 shuffled batches,
    # the batches then in random order, as Hugging Face's group_by_length): far less padding.
    # Measured on the offline task's 22-token sentences (benchmarks/finetune_protocol.py).
    length_grouped: bool = False
    # The word-embedding table (vocab x hidden) kept as it starts: its dense gradient and
    # AdamW step cost a small subnet more than its whole encoder's.
    freeze_word_embeddings: bool = False
    # Task distillation (TinyBERT's prediction-layer loss): the weight of the soft
    # cross-entropy to a fine-tuned teacher's logits at `temperature`, the rest on the labels.
    distill: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        # Set by a protocol in code (`protocols.PROTOCOLS`), never typed: a wrong value is a
        # programming error, not bad input.
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")
        if not 4 <= self.max_len <= 4096:
            raise InputError.bad_setting("max_len", f"must be in [4, 4096], got {self.max_len}")
        if not self.lr > 0:
            raise InputError.bad_setting("lr", f"must be positive, got {self.lr}")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # BERT's recipe: no decay on biases and LayerNorm weights.
    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def epoch_batches(lengths: list[int], batch: int, grouped: bool) -> list[list[int]]:
    """One epoch's batches of example indices, drawn from torch's RNG. `grouped`: each chunk
    of 50 batches of a random order is sorted by length before it is cut, and the batches
    are then shuffled, so a batch pads little and the order stays random."""
    order = torch.randperm(len(lengths)).tolist()
    if not grouped:
        return [order[s : s + batch] for s in range(0, len(order), batch)]
    chunk = 50 * batch
    batches = []
    for c in range(0, len(order), chunk):
        rows = sorted(order[c : c + chunk], key=lambda r: lengths[r])
        batches += [rows[s : s + batch] for s in range(0, len(rows), batch)]
    return [batches[i] for i in torch.randperm(len(batches)).tolist()]


def distill_loss(logits: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Soft cross-entropy to the teacher's distribution at `temperature`, scaled by T^2 so its
    gradients keep their size as T changes (Hinton et al.; TinyBERT's prediction loss)."""
    soft = F.softmax(teacher / temperature, dim=-1)
    return -(soft * F.log_softmax(logits / temperature, dim=-1)).sum(-1).mean() * temperature**2


def train_classifier(
    model: SubnetClassifier,
    data: Encoded,
    settings: FinetuneSettings,
    pad: int,
    on_step: Callable[[dict], None] = lambda row: None,
    teacher_logits: Tensor | None = None,
    masks: dict[str, Tensor] | None = None,
) -> list[float]:
    """Fine-tune in place; the mean training loss of each epoch. Call inside a seeded RNG
    (as `finetune_subnet` does): dropout and the example order draw from it.
    `teacher_logits` ([train examples, labels], file order) are what `settings.distill`
    distils from. `masks` (parameter name to bool, `models.prune.masks`) hold a ticket's
    pruned weights at zero: applied before the first step and after every one."""
    if settings.distill > 0 and teacher_logits is None:
        raise ValueError("settings.distill needs a teacher's logits (a fine-tuned model)")
    n = len(data.ids)
    lengths = [len(row) for row in data.ids]
    if settings.freeze_word_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    per_epoch = math.ceil(n / settings.batch)
    total = per_epoch * settings.epochs
    warm = max(1, round(settings.warmup * total))
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = decay_groups(model, settings.weight_decay)
    opt = torch.optim.AdamW(
        [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups],
        lr=settings.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    hold = (lambda: apply_masks(model, masks)) if masks else (lambda: None)
    hold()
    model.train()
    step, epoch_losses = 0, []
    for epoch in range(settings.epochs):
        losses = []
        for rows in epoch_batches(lengths, settings.batch, settings.length_grouped):
            b = collate(data, rows, pad)
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            loss = F.cross_entropy(logits, b["labels"])
            if settings.distill > 0:
                soft = distill_loss(logits, teacher_logits[rows], settings.temperature)
                loss = (1 - settings.distill) * loss + settings.distill * soft
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            hold()  # AdamW's momentum and decay move a pruned weight; the mask puts it back
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            on_step({"step": step, "total": total, "epoch": epoch + 1, "loss": losses[-1]})
        epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return epoch_losses


@dataclass(frozen=True)
class PreparedTask:
    """A task checked against a supernet and tokenized: what `finetune_subnet` runs on."""

    task: GlueTask
    train: Encoded
    dev: Encoded
    pad: int
    max_len: int
    tokenizer: Path


def prepare_task(
    supernet: SuperBert,
    cfg: SubnetConfig,
    task: GlueTask,
    tokenizer_path: str | Path,
    settings: FinetuneSettings = FinetuneSettings(),
) -> PreparedTask:
    """Every check that needs the supernet (the arch fits, max_len, token types, the
    vocabulary), then the tokens: a caller can refuse bad input before any training starts."""
    from bfnas.models.train.pretraining_data import load_tokenizer

    supernet.check_fits(cfg, setting="arch")
    vocab = supernet.dims.vocab
    if settings.max_len > vocab.max_positions:
        raise InputError.bad_setting(
            "max_len", f"{settings.max_len} exceeds the supernet's {vocab.max_positions} positions"
        )
    if task.pair and vocab.type_vocab < 2:
        raise InputError(
            str(task.train.path),
            "header",
            f"a sentence-pair task needs two token types; the supernet has {vocab.type_vocab}",
        )
    tok, specials, tok_file = load_tokenizer(tokenizer_path)
    if specials.vocab_size > vocab.vocab_size:
        raise InputError(
            str(tok_file),
            None,
            f"{specials.vocab_size} tokens, more than the supernet's "
            f"{vocab.vocab_size} word embeddings",
        )
    train = encode(task.train, tok, specials.cls, specials.sep, settings.max_len)
    dev = encode(task.dev, tok, specials.cls, specials.sep, settings.max_len)
    return PreparedTask(task, train, dev, specials.pad, settings.max_len, tok_file)


def finetune_subnet(
    supernet: SuperBert,
    cfg: SubnetConfig,
    data: PreparedTask,
    settings: FinetuneSettings = FinetuneSettings(),
    pooler: dict[str, Tensor] | None = None,
    on_step: Callable[[dict], None] = lambda row: None,
    classifier: dict[str, Tensor] | None = None,
    teacher_logits: Tensor | None = None,
) -> dict[str, Any]:
    """Fine-tune `cfg` (weights from `supernet`) on the task's train split and score it on
    dev. Nothing is written; the result is a JSON-ready dict. `classifier`: a task
    supernet's head to start from (see `build_classifier`); `teacher_logits`: what
    `settings.distill` distils from (`train_classifier`)."""
    return finetune_classifier(
        supernet, cfg, data, settings, pooler, on_step, classifier, teacher_logits
    )[1]


def finetune_classifier(
    supernet: SuperBert,
    cfg: SubnetConfig,
    data: PreparedTask,
    settings: FinetuneSettings = FinetuneSettings(),
    pooler: dict[str, Tensor] | None = None,
    on_step: Callable[[dict], None] = lambda row: None,
    classifier: dict[str, Tensor] | None = None,
    teacher_logits: Tensor | None = None,
    masks: dict[str, Tensor] | None = None,
) -> tuple[SubnetClassifier, dict[str, Any]]:
    """`finetune_subnet`, also returning the fine-tuned model (in eval mode, running FP32
    whether or not it trained int8-aware): what a deployable package is written from.
    `masks`: a lottery ticket's, held through training (`train_classifier`)."""
    if data.max_len != settings.max_len:
        raise ValueError(
            f"the task was tokenized for max_len {data.max_len}, not {settings.max_len}"
        )
    supernet.check_fits(cfg, setting="arch")
    task, train, dev = data.task, data.train, data.dev
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_classifier(
            supernet,
            cfg,
            len(task.label_names),
            settings.dropout,
            pooler,
            classifier,
            settings.int8_aware,
        )
        inherited = weights_sha256(model.bert)
        t0 = time.perf_counter()
        epoch_losses = train_classifier(
            model, train, settings, data.pad, on_step, teacher_logits, masks
        )
        train_seconds = time.perf_counter() - t0
    # Scored (and returned) as the FP32 network it now is: an int8-aware run's INT8 accuracy
    # is the quantized file's, measured where that file is made.
    model.int8_aware = False
    t0 = time.perf_counter()
    pred = predict(model, dev, settings.batch, data.pad)
    eval_seconds = time.perf_counter() - t0
    counts = torch.bincount(dev.labels, minlength=len(task.label_names))
    return model, {
        "task": str(task.folder),
        "dev_file": task.dev.path.name,
        "pair": task.pair,
        "text_columns": list(task.text_columns),
        "labels": list(task.label_names),
        "train_examples": len(train.ids),
        "dev_examples": len(dev.ids),
        "truncated_examples": train.truncated + dev.truncated,
        **classification_metrics(pred, dev.labels, len(task.label_names)),
        "majority_accuracy": float(counts.max()) / len(dev.ids),
        "epoch_losses": epoch_losses,
        "steps": math.ceil(len(train.ids) / settings.batch) * settings.epochs,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "arch": cfg.to_dict(),
        "arch_key": cfg.key(),
        "inherited_weights_sha256": inherited,
        "pooler": "checkpoint" if pooler is not None else "fresh",
        "classifier": "checkpoint" if classifier is not None else "fresh",
        "supernet": {
            "path": supernet.source.get("path"),
            "weights_sha256": supernet.source.get("weights_sha256"),
            "kind": supernet.source.get("kind"),
        },
        "tokenizer": str(data.tokenizer),
        "settings": asdict(settings),
        "threads": torch.get_num_threads(),
    }
