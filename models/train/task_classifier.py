"""The classifier a fine-tune trains and a package ships: a dense subnet, BERT's pooler (a
tanh dense on [CLS]) and a linear layer; its predictions over a split, and the metrics GLUE
reports for them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.models.nn.bert import Bert
from bfnas.models.nn.fake_quant import int8_linear
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.glue_task import Encoded, collate, length_order


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
