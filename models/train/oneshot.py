"""One-shot subnet quality: how close a subnet, with the supernet's inherited weights, stays to
the teacher on held-out text. No fine-tuning: it ranks architectures cheaply for search.

The score is linear CKA (centered kernel alignment) between the subnet's last hidden states
and the teacher's, over every real token of a fixed held-out batch: 1.0 for the teacher
itself, lower as the subnet drifts. CKA compares representations of different widths, so a
narrow subnet is scored against the full-width teacher without a projection to fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bfnas.models.nn.supernet import SuperBert
from bfnas.models.space.subnet import SubnetConfig


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
