"""A GLUE-format classification task folder, read and checked, and its examples as tokens.

A task is a folder with `train.tsv` and `dev.tsv` (MNLI's `dev_matched.tsv` is accepted),
tab-separated with a header row: one text column (`sentence`, as SST-2) or a pair (such as
`sentence1`/`sentence2`, `premise`/`hypothesis`, `question`/`sentence`), and a label column
(`label`, or MNLI's `gold_label`). Labels are mapped to class ids in sorted order of the
values seen in train (numerically when they are all integers). Every problem names the file,
the line or column, and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfnas.errors import InputError
from bfnas.models.deploy.encoder_io import pack_example

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


def length_order(data: Encoded) -> list[int]:
    """Example indices by token count: the batching order every evaluation uses (the INT8
    files quantize activations per batch, so the same batches give comparable numbers)."""
    return sorted(range(len(data.ids)), key=lambda r: len(data.ids[r]))
