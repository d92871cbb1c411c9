"""The analytic cost of a dense BERT encoder: its parameters and its multiply-accumulates per
op class, at a sequence length and batch.

One model for `SubnetConfig` (exact integers) and the predictor's features (float64 columns
of many subnets at once): every formula takes a subnet's totals over its layers, and works
the same on Python ints and on numpy arrays of them. Each is written in the order the
feature columns have always been computed in, so a float64 column keeps its exact bits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only names a type here: importing the space stays cheap
    import numpy as np

    # An int, a float, or a numpy array of them (one entry per subnet).
    Count = int | float | np.ndarray

# MAC classes, in the order features and reports list them.
MAC_CLASSES = ("qkv_proj", "attn_scores", "attn_context", "attn_out", "ffn")
# Element-wise work, by the tensor it runs over, in the order features list it.
ELEMENTWISE_CLASSES = ("attn_probs", "hidden_states", "ffn_states", "qkv_states")


def encoder_params(layers: Count, hidden: Count, qkv_total: Count, ffn_total: Count) -> Count:
    """Weights, biases and LayerNorms of the encoder layers; `qkv_total` and `ffn_total` are
    the layers' Q/K/V and FFN widths summed. Per layer of widths (q, f) over hidden h:
    Q, K, V 3(hq + q); attention output qh + h; FFN hf + f + fh + h; two LayerNorms 4h."""
    return (
        4 * hidden * qkv_total
        + 3 * qkv_total
        + 2 * hidden * ffn_total
        + ffn_total
        + 6 * hidden * layers
    )


def embedding_params(hidden: Count, vocab_size: int, max_positions: int, type_vocab: int) -> Count:
    """The word, position and token-type tables and their LayerNorm."""
    return (vocab_size + max_positions + type_vocab) * hidden + 2 * hidden


def encoder_macs(
    hidden: Count, qkv_total: Count, ffn_total: Count, seq_len: Count, batch: Count
) -> dict[str, Count]:
    """Multiply-accumulates per class in MAC_CLASSES (embedding lookups cost none)."""
    s = seq_len
    return {
        "qkv_proj": 3 * s * hidden * qkv_total * batch,
        "attn_scores": s * s * qkv_total * batch,
        "attn_context": s * s * qkv_total * batch,
        "attn_out": s * qkv_total * hidden * batch,
        "ffn": 2 * s * hidden * ffn_total * batch,
    }


def encoder_elementwise(
    layers: Count,
    hidden: Count,
    heads_total: Count,
    qkv_total: Count,
    ffn_total: Count,
    seq_len: Count,
    batch: Count,
) -> dict[str, Count]:
    """Elements the encoder's element-wise ops touch, per class in ELEMENTWISE_CLASSES: the
    work that is no matrix product but costs time, most of it in small subnets (the softmax
    over every head's s x s scores; per layer two LayerNorms and residual adds over the
    hidden states, plus the embeddings' LayerNorm; the FFN's bias, GELU and the INT8 input
    quantization of its second product; the Q/K/V biases, head reshapes and the output
    product's input quantization). Summed over layers, as the MACs are."""
    s = seq_len
    return {
        "attn_probs": s * s * heads_total * batch,
        "hidden_states": s * hidden * (2 * layers + 1) * batch,
        "ffn_states": s * ffn_total * batch,
        "qkv_states": s * qkv_total * batch,
    }
