"""Fake quantization with a straight-through estimator, for int8-aware supernet training.

`int8_linear` computes a projection the way the `dynamic` INT8 recipe runs it on the device:
weights symmetric int8 per tensor (zero point 0, scale max|w| / 127, ONNX Runtime's choice
for QInt8 weights) and activations asymmetric uint8 per tensor, scaled from each call's
range with 0 inside it (DynamicQuantizeLinear). Embedding tables are stored as asymmetric
uint8 per table, which `fake_quant_activation` also computes. Rounding happens in the
forward pass; the backward pass treats it as the identity, so training learns weights that
survive INT8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _ste(x: Tensor, q: Tensor) -> Tensor:
    return x + (q - x).detach()


def fake_quant_weight(w: Tensor) -> Tensor:
    scale = w.detach().abs().max().clamp(min=1e-12) / 127.0
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


def fake_quant_activation(x: Tensor) -> Tensor:
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=1e-12)
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    q = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
    return _ste(x, q)


def int8_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.linear(fake_quant_activation(x), fake_quant_weight(weight), bias)
