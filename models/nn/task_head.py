"""The elastic classification head of a task supernet: BERT's pooler (a tanh dense layer on the
[CLS] state) and a linear classifier, both at the supernet's full width.

A subnet of hidden h uses the leading slice, like every other weight of the supernet:
`pooler.dense.weight[:h, :h]`, `pooler.dense.bias[:h]`, `classifier.weight[:, :h]` and the
whole `classifier.bias`. The parameter names are Hugging Face's (`pooler.dense.*`,
`classifier.*`), so the head is saved in the same model.safetensors as the encoder and a
dense classifier (`task_classifier.SubnetClassifier`) takes its slices by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.models.nn.checkpoint import TaskHead
from bfnas.models.nn.fake_quant import int8_linear


class ElasticClassifier(nn.Module):
    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, labels)

    @classmethod
    def fresh(
        cls,
        hidden: int,
        labels: int,
        seed: int,
        pooler: dict[str, Tensor] | None = None,
    ) -> ElasticClassifier:
        """A new head: BERT's initialisation of a new classifier (normal, std 0.02, zero
        bias) drawn from `seed`; the pooler is a checkpoint's (`read_pooler`) when given,
        since a pretrained pooler is a better start than a random one."""
        head = cls(hidden, labels)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (head.pooler.dense, head.classifier):
                layer.weight.copy_(0.02 * torch.randn(layer.weight.shape, generator=generator))
                layer.bias.zero_()
            if pooler is not None:
                head.pooler.dense.weight.copy_(pooler["pooler.dense.weight"])
                head.pooler.dense.bias.copy_(pooler["pooler.dense.bias"])
        return head

    @classmethod
    def from_task_head(cls, head: TaskHead) -> ElasticClassifier:
        """The head a task supernet folder holds (`checkpoint.read_task_head`)."""
        weight = head.pooler["pooler.dense.weight"]
        model = cls(weight.shape[0], len(head.labels))
        model.load_state_dict(
            {
                "pooler.dense.weight": weight,
                "pooler.dense.bias": head.pooler["pooler.dense.bias"],
                "classifier.weight": head.classifier["weight"],
                "classifier.bias": head.classifier["bias"],
            }
        )
        return model.eval()

    @property
    def labels(self) -> int:
        return self.classifier.weight.shape[0]

    def sliced(self, hidden: int) -> dict[str, Tensor]:
        """The head of a subnet of width `hidden`, by name (views, no copy)."""
        return {
            "pooler.dense.weight": self.pooler.dense.weight[:hidden, :hidden],
            "pooler.dense.bias": self.pooler.dense.bias[:hidden],
            "classifier.weight": self.classifier.weight[:, :hidden],
            "classifier.bias": self.classifier.bias,
        }

    def pool(self, hidden_states: Tensor, int8: bool = False) -> Tensor:
        """The pooled [CLS] row [batch, h] of a subnet's last hidden states [batch, seq, h]."""
        w = self.sliced(hidden_states.shape[-1])
        linear = int8_linear if int8 else F.linear
        return torch.tanh(
            linear(hidden_states[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"])
        )

    def classify(
        self,
        pooled: Tensor,
        int8: bool = False,
        weights: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Logits from pooled rows, with the head's classifier slice or `weights`
        (weight [labels, h], bias [labels]) in its place."""
        if weights is None:
            w = self.sliced(pooled.shape[-1])
            weights = (w["classifier.weight"], w["classifier.bias"])
        return (int8_linear if int8 else F.linear)(pooled, *weights)

    def forward(self, hidden_states: Tensor, int8: bool = False) -> Tensor:
        """Logits from a subnet's last hidden states [batch, seq, h] (its [CLS] row is
        pooled); `int8` fake-quantizes the two projections as the encoder's are."""
        return self.classify(self.pool(hidden_states, int8), int8)
