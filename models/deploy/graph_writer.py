"""Writes a dense subnet's ONNX graph straight from its weights, FP32 or dynamic INT8.

Tracing a torch module and running ONNX Runtime's quantizer over the result cost ~2 s per
subnet, most of it protobuf round trips, shape inference and the tracer; profiling spends
that on every subnet. A BERT encoder is a fixed sequence of ops, so this module emits the
graph the TorchScript exporter produces (same ops, same order, same constants) and, for the
`dynamic` recipe, the graph `onnxruntime.quantization.quantize_dynamic` makes of it: weights
quantized by ONNX Runtime's own `quantize_data`, activations by `DynamicQuantizeLinear` in
front of `MatMulInteger`, embedding tables gathered as uint8 and dequantized after the
Gather. Tests compare it with the exporter + quantizer path tensor for tensor.

Recipes it does not write (static QDQ, fused graphs, per-channel weights) go through the
exporter and ONNX Runtime's tools as before.

With a classification head (a model package, `models.deploy.classifier_package`) the graph
goes on from the last hidden state: the [CLS] row, BERT's pooler (dense, tanh) and the
linear classifier, output `logits`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bfnas.models.deploy.encoder_io import INPUT_NAMES, LOGITS_NAME, OUTPUT_NAME
from bfnas.models.space.subnet import SubnetConfig

OPSET = 17
# Part of every direct artifact's cache key: bump it whenever the emitted graph changes.
WRITER_VERSION = 3


def can_write(precision: str, recipe, fuse: bool = False) -> bool:
    """Whether this writer produces exactly what (precision, recipe, fuse) asks for."""
    if fuse:
        return False
    if precision == "fp32":
        return True
    return (
        recipe is not None
        and recipe.method == "dynamic"
        and not recipe.fuse
        and not recipe.per_channel
        and recipe.weight_type == "int8"
        and recipe.op_types is None
    )


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, int8: bool) -> None:
        self.int8 = int8
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}
        self._names: set[str] = set()

    def name(self, op: str) -> str:
        n = self._count.get(op, 0)
        self._count[op] = n + 1
        return f"/{op}" if n == 0 else f"/{op}_{n}"

    def op(
        self, op: str, inputs: list[str], outputs: int = 1, out: str | None = None, **attrs
    ) -> list[str]:
        name = self.name(op)
        names = [out] if out else [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=name, **attrs))
        return names

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already added is shared (shape constants recur per layer)."""
        if name not in self._names:
            self._names.add(name)
            # np.ascontiguousarray would turn a 0-d scalar into shape [1].
            value = np.asarray(value)
            self.inits.append(
                numpy_helper.from_array(value if value.flags.c_contiguous else value.copy(), name)
            )
        return name

    def scalar(self, name: str, value: float | int, dtype=np.float32) -> str:
        return self.const(name, np.array(value, dtype=dtype))

    # -- building blocks ----------------------------------------------------------------
    def batch_seq_shape(self, x: str, tail: str) -> str:
        """[batch, seq] of `x` read at run time, then `tail`: the exporter's way of spelling a
        Reshape. A constant [0, 0, ...] would let shape inference prove the attention
        residual's shape, and ONNX Runtime would then fuse it into SkipLayerNormalization,
        which runs 10-20 % slower here than Add + LayerNormalization (measured on this
        project's CPU with ORT 1.32): a different graph from the one users deploy."""
        (shape,) = self.op("Shape", [x])
        dims = []
        for axis in (0, 1):
            (d,) = self.op("Gather", [shape, self.scalar(f"i64_{axis}", axis, np.int64)], axis=0)
            (d,) = self.op("Unsqueeze", [d, self.const("axes_0", np.array([0], np.int64))])
            dims.append(d)
        (out,) = self.op("Concat", [*dims, tail], axis=0)
        return out

    def quantize_input(self, x: str) -> tuple[str, str, str]:
        q, scale, zp = self.op("DynamicQuantizeLinear", [x], outputs=3)
        return q, scale, zp

    def linear(
        self,
        x: str | tuple[str, str, str],
        weight: np.ndarray,
        bias: np.ndarray,
        prefix: str,
        out: str | None = None,
    ) -> str:
        """x @ weight.T + bias; `x` is an FP tensor, or its DynamicQuantizeLinear outputs."""
        w = weight.T
        if not self.int8:
            assert isinstance(x, str)
            (y,) = self.op("MatMul", [x, self.const(f"{prefix}.weight_t", w)])
        else:
            from onnxruntime.quantization.quant_utils import quantize_data

            assert isinstance(x, tuple)
            xq, x_scale, x_zp = x
            # Symmetric int8 weights: ONNX Runtime's default for QInt8 weights.
            zp, scale, wq = quantize_data(w, TensorProto.INT8, True)
            wq_name = self.const(f"{prefix}.weight_quantized", np.asarray(wq, dtype=np.int8))
            w_scale = self.scalar(f"{prefix}.weight_scale", float(np.asarray(scale).reshape(())))
            w_zp = self.const(
                f"{prefix}.weight_zero_point", np.asarray(zp, dtype=np.int8).reshape(())
            )
            (scales,) = self.op("Mul", [x_scale, w_scale])
            (acc,) = self.op("MatMulInteger", [xq, wq_name, x_zp, w_zp])
            (acc_f,) = self.op("Cast", [acc], to=TensorProto.FLOAT)
            (y,) = self.op("Mul", [acc_f, scales])
        (added,) = self.op("Add", [self.const(f"{prefix}.bias", bias), y], out=out)
        return added

    def gather_table(self, table: np.ndarray, indices: str, name: str) -> str:
        if not self.int8:
            (out,) = self.op("Gather", [self.const(f"{name}.weight", table), indices])
            return out
        from onnxruntime.quantization.quant_utils import quantize_data

        # ONNX Runtime quantizes a gathered table as an activation: asymmetric uint8.
        zp, scale, tq = quantize_data(table, TensorProto.UINT8, False)
        (q,) = self.op(
            "Gather", [self.const(f"{name}.weight_quantized", np.asarray(tq, np.uint8)), indices]
        )
        (out,) = self.op(
            "DequantizeLinear",
            [
                q,
                self.scalar(f"{name}.weight_scale", float(np.asarray(scale).reshape(()))),
                self.const(f"{name}.weight_zero_point", np.asarray(zp, dtype=np.uint8).reshape(())),
            ],
        )
        return out

    def layer_norm(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray,
        prefix: str,
        eps: float,
        out: str | None = None,
    ) -> str:
        (y,) = self.op(
            "LayerNormalization",
            [x, self.const(f"{prefix}.weight", weight), self.const(f"{prefix}.bias", bias)],
            out=out,
            axis=-1,
            epsilon=eps,
        )
        return y


def write_onnx(
    state: Mapping[str, np.ndarray],
    cfg: SubnetConfig,
    path: Path,
    int8: bool = False,
    layer_norm_eps: float = 1e-12,
    head: Mapping[str, np.ndarray] | None = None,
) -> dict[str, int]:
    """Write the dense BERT encoder at `cfg` with weights `state` (Hugging Face names,
    already sliced to `cfg`'s shapes) to `path`: inputs input_ids, attention_mask,
    token_type_ids [batch, sequence] int64; output last_hidden_state. With `head`
    (`pooler.dense.weight` / `.bias`, `classifier.weight` / `.bias` at `cfg.hidden`) the
    output is the classifier's `logits` [batch, labels] instead. Returns the op counts."""
    g = _Graph(int8)
    # Node names are numbered in emission order, so the steps run in the exporter's order.
    x = _embeddings(g, state, layer_norm_eps)
    mask = _additive_mask(g)
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        x = _attention(g, state, p, cfg.heads[i], cfg.qkv[i], x, mask, layer_norm_eps)
        last = i == cfg.layers - 1 and head is None
        x = _feed_forward(g, state, p, x, layer_norm_eps, OUTPUT_NAME if last else None)
    output = (OUTPUT_NAME, ("batch", "sequence", cfg.hidden))
    if head is not None:
        _classifier(g, head, x)
        output = (LOGITS_NAME, ("batch", head["classifier.weight"].shape[0]))
    _save(g, output, path)
    return dict(Counter(n.op_type for n in g.nodes))


def _classifier(g: _Graph, head: Mapping[str, np.ndarray], x: str) -> None:
    """BERT's sequence-classification head on the last hidden state `x`: the [CLS] row, the
    pooler (dense, tanh), the linear classifier into `logits`."""
    (cls,) = g.op("Gather", [x, g.scalar("i64_0", 0, np.int64)], axis=1)
    pooled = g.linear(
        g.quantize_input(cls) if g.int8 else cls,
        head["pooler.dense.weight"],
        head["pooler.dense.bias"],
        "pooler.dense",
    )
    (pooled,) = g.op("Tanh", [pooled])
    g.linear(
        g.quantize_input(pooled) if g.int8 else pooled,
        head["classifier.weight"],
        head["classifier.bias"],
        "classifier",
        out=LOGITS_NAME,
    )


def _embeddings(g: _Graph, state: Mapping[str, np.ndarray], eps: float) -> str:
    """Word + token type + position embeddings, then LayerNorm."""
    i64 = np.int64
    (shape,) = g.op("Shape", ["input_ids"])
    (seq,) = g.op("Gather", [shape, g.scalar("i64_1", 1, i64)], axis=0)
    word = g.gather_table(
        state["embeddings.word_embeddings.weight"], "input_ids", "embeddings.word_embeddings"
    )
    types = g.gather_table(
        state["embeddings.token_type_embeddings.weight"],
        "token_type_ids",
        "embeddings.token_type_embeddings",
    )
    (x,) = g.op("Add", [word, types])
    (positions,) = g.op("Range", [g.scalar("i64_0", 0, i64), seq, g.scalar("i64_1", 1, i64)])
    (positions,) = g.op("Unsqueeze", [positions, g.const("axes_0", np.array([0], i64))])
    pos = g.gather_table(
        state["embeddings.position_embeddings.weight"], positions, "embeddings.position_embeddings"
    )
    (x,) = g.op("Add", [x, pos])
    return g.layer_norm(
        x,
        state["embeddings.LayerNorm.weight"],
        state["embeddings.LayerNorm.bias"],
        "embeddings.LayerNorm",
        eps,
    )


def _additive_mask(g: _Graph) -> str:
    """[batch, seq] of 1/0 -> [batch, 1, 1, seq] of 0/-10000, as models.nn.bert.additive_mask."""
    i64 = np.int64
    (m,) = g.op("Unsqueeze", ["attention_mask", g.const("axes_1", np.array([1], i64))])
    (m,) = g.op("Unsqueeze", [m, g.const("axes_2", np.array([2], i64))])
    (m,) = g.op("Cast", [m], to=TensorProto.FLOAT)
    (m,) = g.op("Sub", [g.scalar("one_f", 1.0), m])
    (mask,) = g.op("Mul", [m, g.scalar("mask_value", -10000.0)])
    return mask


def _attention(
    g: _Graph,
    state: Mapping[str, np.ndarray],
    p: str,
    heads: int,
    qkv: int,
    x: str,
    mask: str,
    eps: float,
) -> str:
    """Layer `p`'s self-attention, its output projection, the residual and LayerNorm."""
    i64 = np.int64
    head = qkv // heads
    xin = g.quantize_input(x) if g.int8 else x
    proj = {}
    for part in ("query", "key", "value"):
        proj[part] = g.linear(
            xin,
            state[f"{p}.attention.self.{part}.weight"],
            state[f"{p}.attention.self.{part}.bias"],
            f"{p}.attention.self.{part}",
        )
    tail = g.const(f"{p}.head_dims", np.array([heads, head], i64))
    (q,) = g.op("Reshape", [proj["query"], g.batch_seq_shape(proj["query"], tail)])
    (q,) = g.op("Transpose", [q], perm=[0, 2, 1, 3])
    (k,) = g.op("Reshape", [proj["key"], g.batch_seq_shape(proj["key"], tail)])
    (k,) = g.op("Transpose", [k], perm=[0, 2, 3, 1])
    (v,) = g.op("Reshape", [proj["value"], g.batch_seq_shape(proj["value"], tail)])
    (v,) = g.op("Transpose", [v], perm=[0, 2, 1, 3])
    (s,) = g.op("MatMul", [q, k])
    (s,) = g.op("Div", [s, g.scalar(f"{p}.sqrt_head", math.sqrt(head))])
    (s,) = g.op("Add", [s, mask])
    (s,) = g.op("Softmax", [s], axis=-1)
    (c,) = g.op("MatMul", [s, v])
    (c,) = g.op("Transpose", [c], perm=[0, 2, 1, 3])
    (c,) = g.op("Reshape", [c, g.batch_seq_shape(c, g.const(f"{p}.qkv_dim", np.array([qkv], i64)))])
    o = g.linear(
        g.quantize_input(c) if g.int8 else c,
        state[f"{p}.attention.output.dense.weight"],
        state[f"{p}.attention.output.dense.bias"],
        f"{p}.attention.output.dense",
    )
    (o,) = g.op("Add", [o, x])
    return g.layer_norm(
        o,
        state[f"{p}.attention.output.LayerNorm.weight"],
        state[f"{p}.attention.output.LayerNorm.bias"],
        f"{p}.attention.output.LayerNorm",
        eps,
    )


def _feed_forward(
    g: _Graph,
    state: Mapping[str, np.ndarray],
    p: str,
    x: str,
    eps: float,
    out: str | None,
) -> str:
    """Layer `p`'s FFN (exact GELU), the residual and LayerNorm, written to `out` if named."""
    h = g.linear(
        g.quantize_input(x) if g.int8 else x,
        state[f"{p}.intermediate.dense.weight"],
        state[f"{p}.intermediate.dense.bias"],
        f"{p}.intermediate.dense",
    )
    # Exact (erf) GELU, spelled as the exporter spells F.gelu.
    (e,) = g.op("Div", [h, g.scalar(f"{p}.sqrt2", math.sqrt(2.0))])
    (e,) = g.op("Erf", [e])
    (e,) = g.op("Add", [e, g.scalar(f"{p}.one", 1.0)])
    (h,) = g.op("Mul", [h, e])
    (h,) = g.op("Mul", [h, g.scalar(f"{p}.half", 0.5)])
    o = g.linear(
        g.quantize_input(h) if g.int8 else h,
        state[f"{p}.output.dense.weight"],
        state[f"{p}.output.dense.bias"],
        f"{p}.output.dense",
    )
    (o,) = g.op("Add", [o, x])
    return g.layer_norm(
        o,
        state[f"{p}.output.LayerNorm.weight"],
        state[f"{p}.output.LayerNorm.bias"],
        f"{p}.output.LayerNorm",
        eps,
        out=out,
    )


def _save(g: _Graph, output: tuple[str, tuple], path: Path) -> None:
    """The model around `g`'s nodes, shapes inferred, written to `path`; `output` is the
    graph output's name and shape."""
    dims = ("batch", "sequence")
    name, shape = output
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in INPUT_NAMES],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bfnas.onnx_writer"
    )
    model.ir_version = 8  # what the exporter writes; readable by every ORT this tool supports
    # Stored shapes are what ONNX Runtime's SkipLayerNormalization fusion keys on (the
    # quantizer leaves them in its output too); without them the session runs another graph.
    # Strict inference also rejects a mistyped graph, so no separate checker pass is run.
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
