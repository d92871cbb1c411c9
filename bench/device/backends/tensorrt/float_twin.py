"""A float twin of a QDQ graph: the network the FP16 baseline engine is built from
(`harness`, opt-in `runtime.tensorrt.fp16_baseline`). Pure: runs on any machine.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .build_plan import BuildError
from .qdq_check import QDQ_OPS, graph_constants, quant_axis


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network without quantization: int8 weights dequantized into float
    initializers, activation Q->DQ pairs removed. Used to build the FP16 baseline engine
    from the very graph that was measured in INT8 (the weights keep their int8 rounding,
    which does not change the timing)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = graph_constants(out)
    q_input = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    rename: dict[str, str] = {}
    new_inits = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        if src in q_input:
            rename[node.output[0]] = q_input[src]
        elif src in consts:
            scale = consts[node.input[1]].astype(np.float32)
            w = consts[src].astype(np.float32)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * w.ndim
                shape[quant_axis(node) % w.ndim] = scale.size
                scale = scale.reshape(shape)
            new_inits.append(numpy_helper.from_array(w * scale, node.output[0]))
    keep = [n for n in graph.node if n.op_type not in QDQ_OPS]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for value in graph.output:
        if value.name in rename:
            raise BuildError(f"graph output {value.name} is a DequantizeLinear output")
    used = {name for n in keep for name in n.input}
    inits = [t for t in graph.initializer if t.name in used] + new_inits
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return out
