"""One-shot subnet quality: a subnet scored with the supernet's inherited weights, no
fine-tuning of its own, so architectures are ranked cheaply for search. Two scores:

`OneShotScorer`: how close the subnet stays to the teacher on held-out text, as linear CKA
(centered kernel alignment) between the subnet's last hidden states and the teacher's, over
every real token of a fixed held-out batch: 1.0 for the teacher itself, lower as the subnet
drifts. CKA compares representations of different widths, so a narrow subnet is scored
against the full-width teacher without a projection to fit.

`TaskAccuracyScorer`: the subnet's accuracy on a task's dev split, run with the inherited
weights and the elastic classification head of a task supernet (`bfnas supernet finetune`,
`models.train.task_supernet`): the task itself, not a proxy for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bfnas.models.nn.supernet import SuperBert
from bfnas.models.nn.task_head import ElasticClassifier
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import Encoded, collate

# Padded tokens per batch of the task scorer: small enough that rows sorted by length pad
# little (measured on 762 dev sentences of stdlib docstrings at max_len 64: 9 % padding at
# 2,048, 61 % at 16,384), big enough that the matrix products stay efficient.
SCORER_BATCH_TOKENS = 2048


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations of the same n items: x [n, d1], y [n, d2]."""
    x = x.double() - x.double().mean(dim=0, keepdim=True)
    y = y.double() - y.double().mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0


def held_out_batch(data_dir: str | Path, sequences: int = 16) -> dict[str, np.ndarray]:
    """The first `sequences` rows of the *last* shard of `bfnas data build` output (held out
    by convention: training reads the others), with the masked tokens put back."""
    from bfnas.models.train.pretraining_data import load_shard, original_tokens, shard_files

    shard = load_shard(shard_files(data_dir)[-1])
    original = original_tokens(shard)[:sequences]
    return {
        "input_ids": original,
        "attention_mask": shard["attention_mask"][:sequences].astype(np.int64),
        "token_type_ids": np.zeros_like(original),
    }


class OneShotScorer:
    """`score(cfg)`: linear CKA of the subnet to the teacher on a fixed batch, cached by key.

    The teacher is `teacher` at `teacher_cfg` when given (the model a trained supernet was
    distilled from), else the supernet's own member at `teacher_cfg` (its largest member is
    the teacher when the supernet was loaded from the teacher's checkpoint)."""

    def __init__(
        self,
        supernet: SuperBert,
        teacher_cfg: SubnetConfig,
        batch: dict[str, np.ndarray],
        teacher: SuperBert | None = None,
    ) -> None:
        self.supernet = supernet.eval()
        self.ids = torch.from_numpy(batch["input_ids"])
        self.mask = torch.from_numpy(batch["attention_mask"])
        self.types = torch.from_numpy(batch["token_type_ids"])
        self.real = self.mask.bool()
        # A trained supernet is scored against the model it was distilled from, when given.
        self.teacher = self._states(teacher_cfg, teacher.eval() if teacher is not None else None)
        self.cache: dict[str, float] = {} if teacher is not None else {teacher_cfg.key(): 1.0}

    def _states(self, cfg: SubnetConfig, model: SuperBert | None = None) -> Tensor:
        with torch.no_grad():
            out = (model or self.supernet)(self.ids, cfg, self.mask, self.types)
        return out[self.real]  # [real tokens, hidden]

    def __call__(self, cfg: SubnetConfig) -> float:
        key = cfg.key()
        if key not in self.cache:
            self.cache[key] = linear_cka(self._states(cfg), self.teacher)
        return self.cache[key]

    def many(self, cfgs: Sequence[SubnetConfig]) -> list[float]:
        return [self(c) for c in cfgs]


class TaskAccuracyScorer:
    """`score(cfg)`: the dev accuracy of subnet `cfg` with the supernet's weights and the
    task head's slices, cached by arch key; `many(cfgs)` for a batch.

    The dev split is tokenized once (`dev`, as `finetune.encode` makes it), its rows sorted
    by length and cut into batches of at most `batch_tokens` padded tokens, kept as tensors:
    scoring a subnet is then only its forward passes, under `torch.inference_mode`.
    `evaluated` counts the subnets actually run (a cache hit runs none)."""

    def __init__(
        self,
        supernet: SuperBert,
        head: ElasticClassifier,
        dev: Encoded,
        pad: int,
        batch_tokens: int = SCORER_BATCH_TOKENS,
        int8: bool = False,
    ) -> None:
        self.supernet, self.head, self.int8 = supernet.eval(), head.eval(), int8
        self.labels = dev.labels
        order = sorted(range(len(dev.ids)), key=lambda r: len(dev.ids[r]))
        self.batches: list[tuple[list[int], dict[str, Tensor]]] = []
        rows: list[int] = []
        for r in order:
            # Sorted by length: the row added is the batch's longest, its padded length.
            if rows and (len(rows) + 1) * len(dev.ids[r]) > batch_tokens:
                self.batches.append((rows, collate(dev, rows, pad)))
                rows = []
            rows.append(r)
        if rows:
            self.batches.append((rows, collate(dev, rows, pad)))
        self.cache: dict[str, float] = {}
        self.evaluated = 0

    def predictions(self, cfg: SubnetConfig) -> Tensor:
        """The predicted class of every dev example, in the dev file's order."""
        out = torch.empty(len(self.labels), dtype=torch.long)
        with torch.inference_mode():
            for rows, b in self.batches:
                hidden = self.supernet(
                    b["input_ids"], cfg, b["attention_mask"], b["token_type_ids"], self.int8
                )
                out[rows] = self.head(hidden, self.int8).argmax(-1)
        return out

    def __call__(self, cfg: SubnetConfig) -> float:
        key = cfg.key()
        if key not in self.cache:
            self.evaluated += 1
            self.cache[key] = float((self.predictions(cfg) == self.labels).float().mean())
        return self.cache[key]

    def many(self, cfgs: Sequence[SubnetConfig]) -> list[float]:
        return [self(c) for c in cfgs]
