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

A task is a folder with `train.tsv` and `dev.tsv` (MNLI's `dev_matched.tsv` is accepted),
tab-separated with a header row: one text column (`sentence`, as SST-2) or a pair (such as
`sentence1`/`sentence2`, `premise`/`hypothesis`, `question`/`sentence`), and a label column
(`label`, or MNLI's `gold_label`). Labels are mapped to class ids in sorted order of the
values seen in train (numerically when they are all integers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.errors import InputError
from bfnas.models.deploy.encoder_io import pack_example
from bfnas.models.nn.bert import Bert
from bfnas.models.nn.fake_quant import int8_linear
from bfnas.models.nn.supernet import SuperBert, weights_sha256
from bfnas.models.space.subnet import SubnetConfig

DEV_FILES = ("dev.tsv", "dev_matched.tsv")
LABEL_COLUMNS = ("label", "gold_label", "quality")
PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("#1 string", "#2 string"),
)
SINGLE_COLUMNS = ("sentence", "text")


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

    def __post_init__(self) -> None:
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")
        if not 4 <= self.max_len <= 4096:
            raise InputError.bad_setting("max_len", f"must be in [4, 4096], got {self.max_len}")
        if not self.lr > 0:
            raise InputError.bad_setting("lr", f"must be positive, got {self.lr}")


# -- the task files ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSplit:
    path: Path
    a: tuple[str, ...]
    b: tuple[str, ...] | None  # None for single-sentence tasks
    labels: tuple[int, ...]

    def subset(self, rows: Sequence[int]) -> TaskSplit:
        """The examples at `rows`, in that order (a fixed draw for a shorter job)."""
        return replace(
            self,
            a=tuple(self.a[r] for r in rows),
            b=None if self.b is None else tuple(self.b[r] for r in rows),
            labels=tuple(self.labels[r] for r in rows),
        )


@dataclass(frozen=True)
class GlueTask:
    folder: Path
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    train: TaskSplit
    dev: TaskSplit

    @property
    def pair(self) -> bool:
        return len(self.text_columns) == 2


def _read_tsv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows. GLUE's TSVs are not CSV-quoted (MNLI has bare
    quotes inside sentences), so a row is split on tabs and nothing else."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(str(path), None, "missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, f"cannot read ({exc})") from None
    lines = text.split("\n")
    header = lines[0].rstrip("\r").split("\t") if lines and lines[0].strip() else []
    if not header:
        raise InputError(str(path), "header", "empty file: expected a header row of column names")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise InputError(
                str(path),
                f"line {number}",
                f"{len(fields)} tab-separated fields, the header has {len(header)}",
            )
        rows.append((number, fields))
    return header, rows


def _columns(path: Path, header: list[str]) -> tuple[tuple[str, ...], str]:
    names = [h.strip().lower() for h in header]
    label = next((c for c in LABEL_COLUMNS if c in names), None)
    if label is None:
        raise InputError(
            str(path),
            "header",
            f"no label column (expected one of {', '.join(LABEL_COLUMNS)}; "
            f"found {', '.join(header)})",
        )
    texts = next((p for p in PAIR_COLUMNS if all(c in names for c in p)), None)
    texts = texts or next(((c,) for c in SINGLE_COLUMNS if c in names), None)
    if texts is None:
        pairs = ", ".join("/".join(p) for p in PAIR_COLUMNS)
        raise InputError(
            str(path),
            "header",
            f"no text column (expected {' or '.join(SINGLE_COLUMNS)}, or a pair: "
            f"{pairs}; found {', '.join(header)})",
        )
    return texts, label


def _split(
    path: Path,
    texts: tuple[str, ...],
    label: str,
    label_ids: dict[str, int] | None,
    train_file: Path | None = None,
) -> tuple[TaskSplit, list[str]]:
    header, rows = _read_tsv(path)
    names = [h.strip().lower() for h in header]
    missing = [c for c in (*texts, label) if c not in names]
    if missing:
        raise InputError(
            str(path),
            "header",
            f"no {missing[0]!r} column (as in {train_file}; found {', '.join(header)})",
        )
    if not rows:
        raise InputError(str(path), None, "no examples (only a header)")
    cols = [names.index(c) for c in texts]
    li = names.index(label)
    raw_labels = [fields[li].strip() for _, fields in rows]
    for (number, _), value in zip(rows, raw_labels, strict=True):
        if not value:
            raise InputError(str(path), f"line {number}", f"empty {label}")
        if label_ids is not None and value not in label_ids:
            raise InputError(
                str(path),
                f"line {number}",
                f"label {value!r} does not occur in {train_file} (labels: {', '.join(label_ids)})",
            )
    a = tuple(fields[cols[0]] for _, fields in rows)
    b = tuple(fields[cols[1]] for _, fields in rows) if len(cols) == 2 else None
    ids = tuple(label_ids[v] for v in raw_labels) if label_ids is not None else ()
    return TaskSplit(path, a, b, ids), raw_labels


def _label_order(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=int)  # "2" before "10"
    except ValueError:
        return sorted(values)


def read_task(folder: str | Path) -> GlueTask:
    """A GLUE-format task folder, checked: every problem names the file, the line or
    column, and the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            str(folder), None, "not a directory (expected train.tsv and dev.tsv in it)"
        )
    train_path = folder / "train.tsv"
    dev_path = next(
        (folder / n for n in DEV_FILES if (folder / n).is_file()), folder / DEV_FILES[0]
    )
    header, _ = _read_tsv(train_path)
    texts, label = _columns(train_path, header)
    unlabelled, raw = _split(train_path, texts, label, None)
    names = _label_order(set(raw))
    if len(names) < 2:
        raise InputError(
            str(train_path), label, f"only one label ({names[0]!r}): nothing to classify"
        )
    ids = {n: i for i, n in enumerate(names)}
    train = TaskSplit(train_path, unlabelled.a, unlabelled.b, tuple(ids[v] for v in raw))
    dev, _ = _split(dev_path, texts, label, ids, train_path)
    return GlueTask(folder, texts, label, tuple(names), train, dev)


# -- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    types: list[list[int]]
    labels: Tensor
    truncated: int  # examples that lost tokens to max_len


def encode(split: TaskSplit, tokenizer: Any, cls: int, sep: int, max_len: int) -> Encoded:
    """Every example of `split` as `encoder_io.pack_example` lays it out: `[CLS] a [SEP]`
    or `[CLS] a [SEP] b [SEP]` (segment 0 then 1), cut to `max_len` tokens by trimming the
    longer text first, as BERT's GLUE scripts do."""
    enc_a = [e.ids for e in tokenizer.encode_batch(list(split.a), add_special_tokens=False)]
    enc_b = (
        [e.ids for e in tokenizer.encode_batch(list(split.b), add_special_tokens=False)]
        if split.b is not None
        else None
    )
    ids, types, truncated = [], [], 0
    for i, a in enumerate(enc_a):
        row, row_types, cut = pack_example(
            a, enc_b[i] if enc_b is not None else None, cls, sep, max_len
        )
        ids.append(row)
        types.append(row_types)
        truncated += cut
    return Encoded(ids, types, torch.tensor(split.labels, dtype=torch.long), truncated)


def collate(enc: Encoded, rows: Sequence[int], pad: int) -> dict[str, Tensor]:
    """One batch padded to its longest row (not to max_len: short tasks run faster)."""
    longest = max(len(enc.ids[r]) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    types = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(enc.ids[r])
        ids[i, :n] = torch.tensor(enc.ids[r])
        types[i, :n] = torch.tensor(enc.types[r])
        mask[i, :n] = 1
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "labels": enc.labels[list(rows)],
    }


# -- the model ----------------------------------------------------------------------------------
class SubnetClassifier(nn.Module):
    """A dense subnet, BERT's pooler (tanh dense on [CLS]) and a linear classifier.
    Hugging Face names for the head (`pooler.dense`, `classifier`). With `int8_aware` it runs
    fake-quantized as the dynamic INT8 recipe deploys it, head included."""

    def __init__(
        self, encoder: Bert, labels: int, dropout: float = 0.1, int8_aware: bool = False
    ) -> None:
        super().__init__()
        h = encoder.cfg.hidden
        self.int8_aware = int8_aware
        self.bert = encoder
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(h, h)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(h, labels)
        for layer in (self.pooler.dense, self.classifier):
            nn.init.normal_(layer.weight, std=0.02)  # BERT's initialisation of a new head
            nn.init.zeros_(layer.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        x = self.bert(input_ids, attention_mask, token_type_ids, int8=self.int8_aware)
        linear = int8_linear if self.int8_aware else F.linear
        dense, out = self.pooler.dense, self.classifier
        pooled = torch.tanh(linear(x[:, 0], dense.weight, dense.bias))
        return linear(self.dropout(pooled), out.weight, out.bias)


def build_classifier(
    supernet: SuperBert,
    cfg: SubnetConfig,
    labels: int,
    dropout: float = 0.1,
    pooler: dict[str, Tensor] | None = None,
    classifier: dict[str, Tensor] | None = None,
    int8_aware: bool = False,
) -> SubnetClassifier:
    """The subnet with the supernet's weights and a classifier head; `pooler` (the
    checkpoint's, full width) is sliced to the subnet's leading `hidden` channels like
    every other weight, and so is `classifier` ("weight" [labels, H], "bias": a task
    supernet's, `checkpoint.read_task_head`) when given, else the classifier is new. With
    `int8_aware` the model runs fake-quantized as the dynamic INT8 recipe deploys it."""
    model = SubnetClassifier(supernet.extract(cfg), labels, dropout, int8_aware)
    h = cfg.hidden
    with torch.no_grad():
        if pooler is not None:
            model.pooler.dense.weight.copy_(pooler["pooler.dense.weight"][:h, :h])
            model.pooler.dense.bias.copy_(pooler["pooler.dense.bias"][:h])
        if classifier is not None:
            model.classifier.weight.copy_(classifier["weight"][:, :h])
            model.classifier.bias.copy_(classifier["bias"])
    return model


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # BERT's recipe: no decay on biases and LayerNorm weights.
    decay, plain = [], []
    for name, p in model.named_parameters():
        (plain if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def train_classifier(
    model: SubnetClassifier,
    data: Encoded,
    settings: FinetuneSettings,
    pad: int,
    on_step: Callable[[dict], None] = lambda row: None,
) -> list[float]:
    """Fine-tune in place; the mean training loss of each epoch. Call inside a seeded RNG
    (as `finetune_subnet` does): dropout and the example order draw from it."""
    n = len(data.ids)
    per_epoch = math.ceil(n / settings.batch)
    total = per_epoch * settings.epochs
    warm = max(1, round(settings.warmup * total))
    opt = torch.optim.AdamW(decay_groups(model, settings.weight_decay), lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    model.train()
    step, epoch_losses = 0, []
    for epoch in range(settings.epochs):
        order = torch.randperm(n).tolist()
        losses = []
        for start in range(0, n, settings.batch):
            b = collate(data, order[start : start + settings.batch], pad)
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            loss = F.cross_entropy(logits, b["labels"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            on_step({"step": step, "total": total, "epoch": epoch + 1, "loss": losses[-1]})
        epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return epoch_losses


def predict_logits(model: SubnetClassifier, data: Encoded, batch: int, pad: int) -> Tensor:
    """Logits of every example, [examples, labels], in file order."""
    # Rows sorted by length so each batch pads little; logits go back in file order.
    order = length_order(data)
    out = torch.empty(len(order), model.classifier.out_features)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            b = collate(data, rows, pad)
            out[rows] = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    return out


def length_order(data: Encoded) -> list[int]:
    """Example indices by token count: the batching order every evaluation uses (the INT8
    files quantize activations per batch, so the same batches give comparable numbers)."""
    return sorted(range(len(data.ids)), key=lambda r: len(data.ids[r]))


def predict(model: SubnetClassifier, data: Encoded, batch: int, pad: int) -> Tensor:
    return predict_logits(model, data, batch, pad).argmax(-1)


def classification_metrics(pred: Tensor, gold: Tensor, classes: int) -> dict[str, float | None]:
    """Accuracy; macro-F1 over the classes that occur (in gold or predicted); and for two
    classes the Matthews correlation (what GLUE reports for CoLA, robust to imbalance)."""
    accuracy = float((pred == gold).float().mean())
    f1s = []
    for c in range(classes):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    mcc = None
    if classes == 2:
        tp = int(((pred == 1) & (gold == 1)).sum())
        tn = int(((pred == 0) & (gold == 0)).sum())
        fp = int(((pred == 1) & (gold == 0)).sum())
        fn = int(((pred == 0) & (gold == 1)).sum())
        denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0, "mcc": mcc}


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
) -> dict[str, Any]:
    """Fine-tune `cfg` (weights from `supernet`) on the task's train split and score it on
    dev. Nothing is written; the result is a JSON-ready dict. `classifier`: a task
    supernet's head to start from (see `build_classifier`)."""
    return finetune_classifier(supernet, cfg, data, settings, pooler, on_step, classifier)[1]


def finetune_classifier(
    supernet: SuperBert,
    cfg: SubnetConfig,
    data: PreparedTask,
    settings: FinetuneSettings = FinetuneSettings(),
    pooler: dict[str, Tensor] | None = None,
    on_step: Callable[[dict], None] = lambda row: None,
    classifier: dict[str, Tensor] | None = None,
) -> tuple[SubnetClassifier, dict[str, Any]]:
    """`finetune_subnet`, also returning the fine-tuned model (in eval mode, running FP32
    whether or not it trained int8-aware): what a deployable package is written from."""
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
        epoch_losses = train_classifier(model, train, settings, data.pad, on_step)
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
