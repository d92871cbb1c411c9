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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bfnas.models.nn.supernet import SuperBert
from bfnas.models.nn.task_head import ElasticClassifier
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.glue_task import Encoded, collate

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


@dataclass(frozen=True)
class HeadRefit:
    """Refit a subnet's classifier slice on its own pooled features before it is scored.

    The head is the part of a task supernet its members share least well: a 2-layer
    subnet's [CLS] features are not a 6-layer one's, and the sandwich trains the shared
    classifier mostly on the members it samples, so a full-width shallow subnet scores
    42 % with the inherited head and 72 % once fine-tuned. Fitting the classifier's
    weight and bias (multinomial logistic regression, L-BFGS, an L2 pull of strength `l2`
    towards the inherited slice) on `examples` train rows undoes that, as OFA recalibrates
    BatchNorm statistics per subnet before it evaluates one. Measured on the offline task
    over 38 subnets fine-tuned from the task supernet: Kendall tau against their fine-tuned
    accuracy 0.27 with the inherited head, 0.72 refitted with these defaults (0.58-0.72 over
    512-2,048 rows and l2 1e-6 to 1e-3), 0.59 for encoder parameters (docs/tasks.md)."""

    examples: int = 512
    l2: float = 1e-3
    iterations: int = 50
    seed: int = 0

    def rows(self, available: int) -> list[int]:
        """The train rows fitted on: a fixed draw of `examples` of them, in file order."""
        order = np.random.default_rng(self.seed).permutation(available)
        return sorted(order[: self.examples].tolist())

    def fit(
        self, features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The classifier (weight, bias) fitted to `features` [n, h] from the inherited one."""
        w0, b0 = weight.detach().clone(), bias.detach().clone()
        w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.iterations, line_search_fn="strong_wolfe")

        def loss() -> Tensor:
            opt.zero_grad()
            value = F.cross_entropy(features @ w.T + b, labels)
            value = value + self.l2 * ((w - w0) ** 2).sum()
            value.backward()
            return value

        with torch.enable_grad():
            opt.step(loss)
        return w.detach(), b.detach()


# What the `task` objective refits with (`task_supernet.task_scorer`).
TASK_REFIT = HeadRefit()


def length_batches(
    enc: Encoded, rows: Sequence[int], pad: int, batch_tokens: int
) -> list[tuple[list[int], dict[str, Tensor]]]:
    """`rows` of `enc` sorted by length and cut into batches of at most `batch_tokens`
    padded tokens, collated once."""
    batches: list[tuple[list[int], dict[str, Tensor]]] = []
    cut: list[int] = []
    for r in sorted(rows, key=lambda r: len(enc.ids[r])):
        # Sorted by length: the row added is the batch's longest, its padded length.
        if cut and (len(cut) + 1) * len(enc.ids[r]) > batch_tokens:
            batches.append((cut, collate(enc, cut, pad)))
            cut = []
        cut.append(r)
    if cut:
        batches.append((cut, collate(enc, cut, pad)))
    return batches


class TaskAccuracyScorer:
    """`score(cfg)`: the dev accuracy of subnet `cfg` with the supernet's weights and the
    task head's slices, cached by arch key; `many(cfgs)` for a batch.

    The dev split is tokenized once (`dev`, as `glue_task.encode` makes it), its rows sorted
    by length and cut into batches of at most `batch_tokens` padded tokens, kept as tensors:
    scoring a subnet is then only its forward passes, under `torch.inference_mode`. With
    `refit` and `train` (the task's train split, encoded the same way) the classifier slice
    is refitted on the subnet's features of `refit.examples` train rows first (`HeadRefit`).
    `evaluated` counts the subnets actually run (a cache hit runs none)."""

    def __init__(
        self,
        supernet: SuperBert,
        head: ElasticClassifier,
        dev: Encoded,
        pad: int,
        batch_tokens: int = SCORER_BATCH_TOKENS,
        int8: bool = False,
        train: Encoded | None = None,
        refit: HeadRefit | None = None,
    ) -> None:
        if (train is None) != (refit is None):
            raise ValueError("a head refit needs both `train` and `refit`")
        self.supernet, self.head, self.int8, self.refit = supernet.eval(), head.eval(), int8, refit
        self.labels = dev.labels
        self.batches = length_batches(dev, range(len(dev.ids)), pad, batch_tokens)
        self.fit_batches: list[tuple[list[int], dict[str, Tensor]]] = []
        if train is not None and refit is not None:
            rows = refit.rows(len(train.ids))
            self.fit_labels = train.labels[rows]
            at = {r: i for i, r in enumerate(rows)}
            # Rows renumbered 0..n-1: the features come back in the order of fit_labels.
            self.fit_batches = [
                ([at[r] for r in cut], b)
                for cut, b in length_batches(train, rows, pad, batch_tokens)
            ]
        self.cache: dict[str, float] = {}
        self.evaluated = 0

    def _pooled(
        self, cfg: SubnetConfig, batches: list[tuple[list[int], dict[str, Tensor]]], n: int
    ) -> Tensor:
        out = torch.empty(n, cfg.hidden)
        with torch.inference_mode():
            for rows, b in batches:
                hidden = self.supernet(
                    b["input_ids"], cfg, b["attention_mask"], b["token_type_ids"], self.int8
                )
                out[rows] = self.head.pool(hidden, self.int8)
        return out.clone()  # a plain tensor: the refit takes gradients through it

    def predictions(self, cfg: SubnetConfig) -> Tensor:
        """The predicted class of every dev example, in the dev file's order."""
        pooled = self._pooled(cfg, self.batches, len(self.labels))
        weights = None
        if self.refit is not None:
            w = self.head.sliced(cfg.hidden)
            features = self._pooled(cfg, self.fit_batches, len(self.fit_labels))
            weights = self.refit.fit(
                features, self.fit_labels, w["classifier.weight"], w["classifier.bias"]
            )
        with torch.inference_mode():
            return self.head.classify(pooled, self.int8, weights).argmax(-1)

    def __call__(self, cfg: SubnetConfig) -> float:
        key = cfg.key()
        if key not in self.cache:
            self.evaluated += 1
            self.cache[key] = float((self.predictions(cfg) == self.labels).float().mean())
        return self.cache[key]

    def many(self, cfgs: Sequence[SubnetConfig]) -> list[float]:
        return [self(c) for c in cfgs]
