"""An offline classification task in GLUE's SST-2 layout, made from the standard library's
docstrings: which module does this sentence document? Real prose on every machine with
Python, so a search for task accuracy runs without downloading GLUE.

An example is one sentence of a docstring paragraph (doctest and code-like paragraphs left
out); its label is the top-level module or package it documents (`asyncio`, `email`,
`tkinter`, ...). Qualified names lose the task's module prefixes (`asyncio.Future` becomes
`Future`), so the label is not spelled out in code references; prose mentions ("the email
package") stay, as a reader would see them.
The classes are the modules with the most sentences; a class keeps at most
`max_per_class` of them, so no module dominates.

The split keeps whole groups together: every docstring of one top-level class or function
(a class's methods are written together and repeat each other) goes to the same side, and
each class sends its share of groups to dev in an order fixed by hashing the group's name
with the seed. Then near-duplicates go: a sentence that appears under two labels is dropped
everywhere, repeats within a split are dropped, and a dev sentence whose word trigrams are
mostly (`near_duplicate`) found in train is dropped, so dev measures reading rather than
recall. For a given Python (its stdlib is the input) and settings the files are the same
bytes on every run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bfnas.errors import InputError
from bfnas.models.digest import file_sha256
from bfnas.models.outputs import atomic_path, write_atomic
from bfnas.models.train.stdlib_text import stdlib_docstrings_iter

MANIFEST = "task.json"
FORMAT = 1
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class TaskDataSettings:
    classes: int = 12
    max_per_class: int = 800  # sentences kept per module before the split
    dev_fraction: float = 0.22
    min_words: int = 6  # shorter sentences ("Return the value.") say too little to classify
    max_words: int = 60
    near_duplicate: float = 0.5  # share of a dev sentence's trigrams seen in train
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= 64:
            raise InputError.bad_setting("classes", f"must be in [2, 64], got {self.classes}")
        if self.max_per_class < 10:
            raise InputError.bad_setting(
                "max_per_class", f"must be at least 10, got {self.max_per_class}"
            )
        if not 0.05 <= self.dev_fraction <= 0.5:
            raise InputError.bad_setting(
                "dev_fraction", f"must be in [0.05, 0.5], got {self.dev_fraction}"
            )
        if not 1 <= self.min_words <= self.max_words:
            raise InputError.bad_setting(
                "min_words", f"must be in [1, max_words={self.max_words}], got {self.min_words}"
            )
        if not 0 < self.near_duplicate <= 1:
            raise InputError.bad_setting(
                "near_duplicate", f"must be in (0, 1], got {self.near_duplicate}"
            )


# The offline task at a demo's size: 80 sentences a module before the split, 40 % of them
# dev (589 train, 339 dev), so that a fine-tune takes seconds and a point of dev accuracy is
# three sentences, not one.
DEMO_TASK = TaskDataSettings(max_per_class=80, dev_fraction=0.4)


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    group: str  # examples of one group stay on one side of the split


def _looks_like_prose(paragraph: str) -> bool:
    if ">>>" in paragraph or "::" in paragraph:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return letters >= 0.85 * len(paragraph)  # tables, signatures and code are mostly symbols


def sentences(text: str, settings: TaskDataSettings) -> list[str]:
    """The prose sentences of a docstring with `min_words`..`max_words` words, whitespace
    made single spaces (so no tab or newline reaches a TSV cell)."""
    out = []
    for paragraph in text.split("\n\n"):
        paragraph = " ".join(paragraph.split())
        if not paragraph or not _looks_like_prose(paragraph):
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            if settings.min_words <= len(sentence.split()) <= settings.max_words:
                out.append(sentence)
    return out


def _prefix_pattern(names: Iterable[str]) -> re.Pattern:
    # `asyncio.Future`, `email.message.Message`: the qualified name of one of the task's modules.
    alternatives = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    return re.compile(rf"(?<![\w.])_?(?:{alternatives})\.(?=[A-Za-z_])")


def stdlib_examples(settings: TaskDataSettings) -> tuple[list[Example], dict[str, int]]:
    """The sentences of the `settings.classes` modules with the most, module names blanked,
    and how many sentences every module had (for the manifest)."""
    by_module: dict[str, list[Example]] = defaultdict(list)
    for doc in stdlib_docstrings_iter():
        group = f"{'/'.join(doc.path)}#{doc.top_level}"
        for s in sentences(doc.text, settings):
            by_module[doc.module].append(Example(s, doc.module, group))
    counts = {m: len(v) for m, v in by_module.items()}
    chosen = sorted(by_module, key=lambda m: (-counts[m], m))[: settings.classes]
    if len(chosen) < settings.classes:
        raise InputError.bad_setting(
            "classes", f"the standard library here has only {len(chosen)} documented modules"
        )
    prefix = _prefix_pattern(chosen)
    examples = [
        Example(prefix.sub("", e.text), e.label, e.group) for m in chosen for e in by_module[m]
    ]
    return examples, counts


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_examples(
    examples: list[Example], settings: TaskDataSettings
) -> tuple[list[Example], list[Example]]:
    """Cap each class at `max_per_class` and split it by whole groups: groups in hashed
    order go to dev until the class's dev share is reached, the rest to train."""
    train: list[Example] = []
    dev: list[Example] = []
    by_label: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for e in examples:
        by_label[e.label][e.group].append(e)
    for label in sorted(by_label):
        groups = by_label[label]
        order = sorted(groups, key=lambda g: _rank(settings.seed, g))
        kept: list[list[Example]] = []
        total = 0
        for g in order:
            if total >= settings.max_per_class:
                break
            kept.append(groups[g][: settings.max_per_class - total])
            total += len(kept[-1])
        # A group joins dev while it fits the class's dev share; one large class (tkinter's
        # Misc has hundreds of methods) would otherwise overshoot it by itself.
        room = settings.dev_fraction * total
        for group in kept:
            if len(group) <= room:
                dev.extend(group)
                room -= len(group)
            else:
                train.extend(group)
    return train, dev


def _normal(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def _trigrams(words: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {words[i : i + 3] for i in range(max(1, len(words) - 2))}


def remove_near_duplicates(
    train: list[Example], dev: list[Example], settings: TaskDataSettings
) -> tuple[list[Example], list[Example], dict[str, int]]:
    """Drop what would let dev be answered from memory (see the module's docstring)."""
    labels_of: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for e in train + dev:
        labels_of[_normal(e.text)].add(e.label)
    dropped = Counter()

    def unique(split: list[Example], kind: str) -> list[Example]:
        seen: set[tuple[str, ...]] = set()
        kept = []
        for e in split:
            words = _normal(e.text)
            if len(labels_of[words]) > 1:
                dropped["ambiguous"] += 1
            elif words in seen:
                dropped[kind] += 1
            else:
                seen.add(words)
                kept.append(e)
        return kept

    train = unique(train, "repeated_in_train")
    dev = unique(dev, "repeated_in_dev")
    seen_trigrams = set().union(*(_trigrams(_normal(e.text)) for e in train))
    kept_dev = []
    for e in dev:
        grams = _trigrams(_normal(e.text))
        if len(grams & seen_trigrams) >= settings.near_duplicate * len(grams):
            dropped["near_duplicate_of_train"] += 1
        else:
            kept_dev.append(e)
    return train, kept_dev, dict(sorted(dropped.items()))


def _write_tsv(path: Path, rows: list[Example]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(
            "sentence\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in rows),
            encoding="utf-8",
        )


def build_task(out: str | Path, settings: TaskDataSettings = TaskDataSettings()) -> dict[str, Any]:
    """Write `train.tsv`, `dev.tsv` and the manifest `task.json` into `out`; returns the
    manifest. The manifest is written last: a folder without it is not a finished task."""
    out = Path(out)
    examples, module_counts = stdlib_examples(settings)
    train, dev = split_examples(examples, settings)
    train, dev, dropped = remove_near_duplicates(train, dev, settings)
    rng = random.Random(settings.seed)
    rng.shuffle(train)
    rng.shuffle(dev)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    _write_tsv(out / "train.tsv", train)
    _write_tsv(out / "dev.tsv", dev)
    labels = sorted({e.label for e in train})
    manifest = {
        "format": FORMAT,
        "kind": "stdlib-docstring-modules",
        "question": "which standard-library module does this docstring sentence document?",
        "layout": "SST-2 (sentence, label)",
        "labels": labels,
        "train_examples": len(train),
        "dev_examples": len(dev),
        "per_label": {
            lab: {
                "train": sum(e.label == lab for e in train),
                "dev": sum(e.label == lab for e in dev),
                "sentences_in_stdlib": module_counts[lab],
            }
            for lab in labels
        },
        "dropped": dropped,
        "train_groups": len({e.group for e in train}),
        "dev_groups": len({e.group for e in dev}),
        "settings": asdict(settings),
        "python": sys.version.split()[0],
        "files": {name: file_sha256(out / name) for name in ("train.tsv", "dev.tsv")},
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
