"""A dense BERT encoder whose layers may differ in heads, qkv width and FFN width.

Parameter names follow Hugging Face's `BertModel` (embeddings.*, encoder.layer.N.*), so a
dense model and the supernet load HF state dicts directly. The arithmetic lives in the
functions below and is shared by the dense model and the supernet: extraction is exact
because both run the same ops on the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.models.nn.fake_quant import fake_quant_activation, int8_linear
from bfnas.models.space.subnet import BERT_MAX_POSITIONS, BERT_TYPE_VOCAB, BERT_VOCAB, SubnetConfig


@dataclass(frozen=True)
class Vocab:
    """The embedding tables' sizes, which no subnet changes."""

    vocab_size: int = BERT_VOCAB
    max_positions: int = BERT_MAX_POSITIONS
    type_vocab: int = BERT_TYPE_VOCAB
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict:
        return asdict(self)


# -- the arithmetic, shared by Bert and SuperBert -----------------------------------------
def additive_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[batch, seq] of 1/0 to [batch, 1, 1, seq] of 0/-10000 (the form ORT's fusion knows)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0


def embed(
    input_ids: Tensor,
    token_type_ids: Tensor,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    eps: float,
) -> Tensor:
    seq_len = input_ids.shape[1]
    positions = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
    x = F.embedding(input_ids, word) + F.embedding(token_type_ids, token_type)
    x = x + F.embedding(positions, position)
    return F.layer_norm(x, (ln_weight.shape[0],), ln_weight, ln_bias, eps)


def self_attention_block(
    x: Tensor,
    mask: Tensor,
    heads: int,
    q_w: Tensor,
    q_b: Tensor,
    k_w: Tensor,
    k_b: Tensor,
    v_w: Tensor,
    v_b: Tensor,
    o_w: Tensor,
    o_b: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    eps: float,
    probs_out: list[Tensor] | None = None,
    linear: Callable[..., Tensor] = F.linear,
) -> Tensor:
    """`probs_out`, when given, receives the attention probabilities averaged over heads
    ([batch, seq, seq]: comparable between layers with different head counts). `linear`
    runs the four projections (int8-aware training passes a fake-quantized one)."""
    qkv = q_w.shape[0]
    head_size = qkv // heads

    def split(t: Tensor) -> Tensor:
        return t.view(t.size()[:-1] + (heads, head_size)).permute(0, 2, 1, 3)

    q = split(linear(x, q_w, q_b))
    k = split(linear(x, k_w, k_b))
    v = split(linear(x, v_w, v_b))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_size)
    probs = torch.softmax(scores + mask, dim=-1)
    if probs_out is not None:
        probs_out.append(probs.mean(dim=1))
    context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
    context = context.view(context.size()[:-2] + (qkv,))
    out = linear(context, o_w, o_b)
    return F.layer_norm(out + x, (ln_weight.shape[0],), ln_weight, ln_bias, eps)


def ffn_block(
    x: Tensor,
    in_w: Tensor,
    in_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    eps: float,
    linear: Callable[..., Tensor] = F.linear,
) -> Tensor:
    h = F.gelu(linear(x, in_w, in_b))
    out = linear(h, out_w, out_b)
    return F.layer_norm(out + x, (ln_weight.shape[0],), ln_weight, ln_bias, eps)


# -- modules with HF names ------------------------------------------------------------------
class Embeddings(nn.Module):
    def __init__(self, hidden: int, vocab: Vocab) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab.vocab_size, hidden)
        self.position_embeddings = nn.Embedding(vocab.max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(vocab.type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=vocab.layer_norm_eps)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, qkv: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, qkv)
        self.key = nn.Linear(hidden, qkv)
        self.value = nn.Linear(hidden, qkv)


class DenseLayerNorm(nn.Module):
    """A projection back to the residual stream followed by Add & LayerNorm."""

    def __init__(self, in_features: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class Attention(nn.Module):
    def __init__(self, hidden: int, qkv: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, qkv)
        self.output = DenseLayerNorm(qkv, hidden, eps)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)


class Layer(nn.Module):
    def __init__(self, hidden: int, qkv: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, qkv, eps)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = DenseLayerNorm(ffn, hidden, eps)


class Encoder(nn.Module):
    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


def lead(t: Tensor, rows: int | None, cols: int | None = None) -> Tensor:
    """The leading rows x cols of a weight, or the weight itself when that is all of it
    (so a dense model's graph carries no Slice ops)."""
    if rows is not None and rows < t.shape[0]:
        t = t[:rows]
    if cols is not None and cols < t.shape[1]:
        t = t[:, :cols]
    return t


def run_layer(
    layer: Layer,
    x: Tensor,
    mask: Tensor,
    heads: int,
    qkv: int,
    ffn: int,
    hidden: int,
    eps: float,
    probs_out: list[Tensor] | None = None,
    linear: Callable[..., Tensor] = F.linear,
) -> Tensor:
    """One encoder layer on the leading (qkv, ffn, hidden) slice of `layer`'s weights.

    A dense layer is its own full slice; slicing to the full size returns the weight itself.
    """
    sa, ao = layer.attention.self, layer.attention.output
    x = self_attention_block(
        x,
        mask,
        heads,
        lead(sa.query.weight, qkv, hidden),
        lead(sa.query.bias, qkv),
        lead(sa.key.weight, qkv, hidden),
        lead(sa.key.bias, qkv),
        lead(sa.value.weight, qkv, hidden),
        lead(sa.value.bias, qkv),
        lead(ao.dense.weight, hidden, qkv),
        lead(ao.dense.bias, hidden),
        lead(ao.LayerNorm.weight, hidden),
        lead(ao.LayerNorm.bias, hidden),
        eps,
        probs_out,
        linear,
    )
    return ffn_block(
        x,
        lead(layer.intermediate.dense.weight, ffn, hidden),
        lead(layer.intermediate.dense.bias, ffn),
        lead(layer.output.dense.weight, hidden, ffn),
        lead(layer.output.dense.bias, hidden),
        lead(layer.output.LayerNorm.weight, hidden),
        lead(layer.output.LayerNorm.bias, hidden),
        eps,
        linear,
    )


def run_embeddings(
    emb: Embeddings,
    input_ids: Tensor,
    token_type_ids: Tensor,
    hidden: int,
    eps: float,
    table: Callable[[Tensor], Tensor] = lambda t: t,
) -> Tensor:
    """`table` transforms each sliced embedding table first (int8-aware training quantizes
    them as the deployed graph stores them)."""
    return embed(
        input_ids,
        token_type_ids,
        table(lead(emb.word_embeddings.weight, None, hidden)),
        table(lead(emb.position_embeddings.weight, None, hidden)),
        table(lead(emb.token_type_embeddings.weight, None, hidden)),
        lead(emb.LayerNorm.weight, hidden),
        lead(emb.LayerNorm.bias, hidden),
        eps,
    )


class Bert(nn.Module):
    """A plain dense BERT encoder at one `SubnetConfig`. Returns the last hidden state."""

    def __init__(self, cfg: SubnetConfig, vocab: Vocab | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab or Vocab()
        eps = self.vocab.layer_norm_eps
        self.embeddings = Embeddings(cfg.hidden, self.vocab)
        self.encoder = Encoder(
            [Layer(cfg.hidden, q, f, eps) for q, f in zip(cfg.qkv, cfg.ffn, strict=True)]
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        int8: bool = False,
    ) -> Tensor:
        """With `int8`, the encoder runs as the `dynamic` INT8 recipe deploys it (fake-quantized
        projections and embedding tables, straight-through gradients), as
        `SuperBert.states(int8=True)` runs a subnet: what int8-aware fine-tuning trains."""
        cfg, eps = self.cfg, self.vocab.layer_norm_eps
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        table = fake_quant_activation if int8 else (lambda t: t)
        linear = int8_linear if int8 else F.linear
        x = run_embeddings(self.embeddings, input_ids, token_type_ids, cfg.hidden, eps, table)
        mask = additive_mask(attention_mask, x.dtype)
        for layer, a, q, f in zip(self.encoder.layer, cfg.heads, cfg.qkv, cfg.ffn, strict=True):
            x = run_layer(layer, x, mask, a, q, f, cfg.hidden, eps, linear=linear)
        return x


def init_bert_weights(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """BERT's initialisation (normal weights), with small random biases and LayerNorm
    parameters so that a slicing mistake in any tensor shows up in the output."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + std * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(std * torch.randn(p.shape, generator=generator))
