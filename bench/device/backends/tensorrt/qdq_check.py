"""Can an ONNX graph build as an explicitly quantized TensorRT network? `check_trt_qdq` lists
what would keep it from building (or would make TensorRT run it in float), one line each.

Pure: needs onnx and numpy, never TensorRT, so it runs on any machine (tests run it on
CPU, on the real `qdq-symmetric` graph and on broken copies of it). `build.build_engine`
runs it before every explicitly quantized build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# Every op the bfnas BERT exporters emit (TorchScript, dynamo, the graph writer, ORT's
# quantizer), each of which TensorRT 10's ONNX parser imports (onnx-tensorrt's operator
# matrix; LayerNormalization since TensorRT 8.6). Deliberately narrow: an op outside it is
# reported so a new exporter's graph is looked at before an engine build fails on a GPU.
SUPPORTED_OPS = frozenset(
    {
        "Add",
        "Cast",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "DequantizeLinear",
        "Div",
        "Equal",
        "Erf",
        "Expand",
        "Gather",
        "Gemm",
        "Identity",
        "LayerNormalization",
        "MatMul",
        "Mul",
        "Neg",
        "Pow",
        "QuantizeLinear",
        "Range",
        "ReduceMean",
        "Reshape",
        "Shape",
        "Slice",
        "Softmax",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Tanh",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def graph_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Tensors known when the engine is built: initializers and Constant node outputs."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def quant_axis(node: onnx.NodeProto) -> int:
    """The `axis` of a QuantizeLinear/DequantizeLinear node."""
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return 1  # the ONNX default for QuantizeLinear/DequantizeLinear


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def _gemm_reduced_dim(consumer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The dimension of input `index` that `consumer` sums over (normalised to >= 0)."""
    if consumer.op_type == "MatMul":
        return rank - 1 if index == 0 else rank - 2
    if consumer.op_type == "Gemm" and index in (0, 1):
        trans = {a.name: a.i for a in consumer.attribute}
        if index == 0:
            return 0 if trans.get("transA", 0) else 1
        return 1 if trans.get("transB", 0) else 0
    return None


@dataclass(frozen=True)
class _GraphIndex:
    """What the checks look up about a graph, indexed once for all its nodes."""

    consts: dict[str, np.ndarray]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]  # tensor -> (node, input index)
    producers: dict[str, onnx.NodeProto]
    outputs: frozenset[str]
    opset: int

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _GraphIndex:
        graph = model.graph
        consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                consumers.setdefault(name, []).append((node, i))
        return cls(
            consts=graph_constants(model),
            consumers=consumers,
            producers={out: node for node in graph.node for out in node.output},
            outputs=frozenset(o.name for o in graph.output),
            opset=max(
                (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
            ),
        )


def check_trt_qdq(model: onnx.ModelProto) -> list[str]:
    """Problems that keep `model` from building as an explicitly quantized TensorRT network;
    an empty list means none found.

    Checked: every node is a standard ONNX op in SUPPORTED_OPS; every Q/DQ scale is a
    build-time constant, floating point, finite and positive, a scalar (per tensor) or 1-D
    (per channel) whose length matches the quantized axis; every zero point is int8 and 0
    (TensorRT's quantization is symmetric and signed); int8 weights stay within
    [-127, 127]; a QuantizeLinear feeds only DequantizeLinear nodes; a DequantizeLinear reads
    a QuantizeLinear or a constant int8 weight; per-channel scales in front of a GEMM lie
    along a dimension the GEMM does not sum over (otherwise they cannot be applied after the
    integer product); per-channel Q/DQ needs opset >= 13 (the `axis` attribute).
    """
    index = _GraphIndex.of(model)
    return [problem for node in model.graph.node for problem in _node_problems(node, index)]


def _node_problems(node: onnx.NodeProto, index: _GraphIndex) -> list[str]:
    """One node's problems, in the order a reader fixes them: the op, then its scale and
    zero point, then what a Q feeds or a DQ reads, then a per-channel axis."""
    where = f"node {node.name or node.output[0]!r}"
    unsupported = _op_problem(node, where)
    if unsupported:
        return [unsupported]
    if node.op_type not in QDQ_OPS:
        return []
    scale = index.consts.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        name = node.input[1] if len(node.input) > 1 else "(none)"
        return [f"{where}: scale {name} is not a build-time constant"]
    problems = _scale_problems(scale, where) + _zero_point_problems(node, scale, index, where)
    per_channel = scale.ndim == 1 and scale.size > 1
    if per_channel and index.opset < 13:
        problems.append(f"{where}: per-channel scale needs opset >= 13 (model has {index.opset})")
    if node.op_type == "QuantizeLinear":
        return problems + _quantize_output_problems(node, index, where)
    weight = index.consts.get(node.input[0])
    problems += _dequantize_input_problems(node, weight, index, where)
    if per_channel and weight is not None:
        problems += _per_channel_problems(node, scale, weight.shape, index, where)
    return problems


def _op_problem(node: onnx.NodeProto, where: str) -> str | None:
    if node.domain not in ("", "ai.onnx"):
        return (
            f"{where}: op {node.domain}.{node.op_type} is not a standard ONNX op "
            "(TensorRT's ONNX parser has no importer for it)"
        )
    if node.op_type not in SUPPORTED_OPS:
        return f"{where}: op {node.op_type} is not in the ops checked for TensorRT"
    return None


def _scale_problems(scale: np.ndarray, where: str) -> list[str]:
    problems = []
    if scale.dtype.kind != "f":
        problems.append(f"{where}: scale has dtype {scale.dtype}, not floating point")
    elif not (np.isfinite(scale).all() and (scale > 0).all()):
        problems.append(f"{where}: scale must be finite and positive (min {scale.min():.3g})")
    if scale.ndim > 1:
        problems.append(
            f"{where}: scale has rank {scale.ndim}; TensorRT takes a scalar "
            "(per tensor) or a 1-D scale (per channel)"
        )
    return problems


def _zero_point_problems(
    node: onnx.NodeProto, scale: np.ndarray, index: _GraphIndex, where: str
) -> list[str]:
    if len(node.input) <= 2 or not node.input[2]:
        return []  # no zero point: 0, as TensorRT needs
    zero = index.consts.get(node.input[2])
    if zero is None:
        return [f"{where}: zero point is not a build-time constant"]
    problems = []
    if zero.dtype != np.int8:
        problems.append(f"{where}: zero point has dtype {zero.dtype}, TensorRT needs int8")
    if zero.any():
        problems.append(f"{where}: zero point is not 0 (TensorRT quantizes symmetrically)")
    if zero.shape != scale.shape:
        problems.append(
            f"{where}: zero point shape {zero.shape} differs from scale shape {scale.shape}"
        )
    return problems


def _quantize_output_problems(node: onnx.NodeProto, index: _GraphIndex, where: str) -> list[str]:
    """TensorRT fuses a Q into the DQ that follows it: anything else reading it cannot build."""
    outs = index.consumers.get(node.output[0], [])
    others = sorted({c.op_type for c, _ in outs if c.op_type != "DequantizeLinear"})
    if not others and node.output[0] not in index.outputs:
        return []
    return [
        f"{where}: QuantizeLinear output feeds {', '.join(others) or 'a graph output'}, not "
        "only DequantizeLinear (TensorRT fuses Q into a following DQ)"
    ]


def _dequantize_input_problems(
    node: onnx.NodeProto, weight: np.ndarray | None, index: _GraphIndex, where: str
) -> list[str]:
    """A DequantizeLinear reads a symmetric int8 weight or a QuantizeLinear's output."""
    source = node.input[0]
    if weight is not None:
        if weight.dtype != np.int8:
            return [f"{where}: quantized weight {source} has dtype {weight.dtype}, not int8"]
        if weight.size and int(weight.min()) < -127:
            return [
                f"{where}: int8 weight {source} uses -128; TensorRT's weights "
                "are symmetric in [-127, 127]"
            ]
        return []
    if source not in index.producers or index.producers[source].op_type != "QuantizeLinear":
        return [
            f"{where}: DequantizeLinear reads {source}, which is neither a "
            "QuantizeLinear output nor a constant int8 weight"
        ]
    return []


def _per_channel_problems(
    node: onnx.NodeProto, scale: np.ndarray, shape: tuple, index: _GraphIndex, where: str
) -> list[str]:
    """A per-channel weight's axis: in range, as long as the scales, and not the dimension a
    GEMM reading it sums over (the scales could not be applied after the integer product)."""
    rank = len(shape)
    axis = quant_axis(node)
    if not -rank <= axis < rank:
        return [f"{where}: axis {axis} is out of range for rank {rank}"]
    axis %= rank
    problems = []
    if shape[axis] != scale.size:
        problems.append(f"{where}: {scale.size} scales for axis {axis} of length {shape[axis]}")
    for consumer, input_index in index.consumers.get(node.output[0], []):
        if _gemm_reduced_dim(consumer, input_index, rank) == axis:
            problems.append(
                f"{where}: per-channel axis {axis} is the dimension "
                f"{consumer.op_type} {consumer.name!r} sums over"
            )
    return problems
