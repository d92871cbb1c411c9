"""INT8 quantization of ONNX models by a recipe (`recipes`), with ONNX Runtime's tools, and
optional transformer fusion."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from bfnas.models.deploy.recipes import Recipe


def fuse_transformer(src: Path, dst: Path) -> dict[str, int]:
    """ONNX Runtime's BERT fusion (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm).

    opt_level=0: the default level also rewrites MatMul+Add into Reshape-Gemm-Reshape, which
    blocks later fusions and static quantization (docs/MEASURED.md). Returns the fused op counts.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    optimized.save_model_to_file(str(dst))
    return _op_counts(
        onnx.load(str(dst)),
        (
            "Attention",
            "SkipLayerNormalization",
            "BiasGelu",
            "EmbedLayerNormalization",
            "Gelu",
            "FastGelu",
        ),
    )


def quantize(
    src: Path,
    dst: Path,
    recipe: Recipe,
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, int]:
    """Quantize `src` (FP32 ONNX, already fused if the recipe asks) into `dst`.

    Returns counts of the quantization ops in the result, so a recipe that silently
    quantized nothing is visible."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    logging.getLogger("root").setLevel(logging.ERROR)
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    extra: dict = {}
    if recipe.fuse:
        # Fused graphs carry contrib ops whose types the quantizer cannot infer without this.
        extra["DefaultTensorType"] = onnx.TensorProto.FLOAT
    op_types = list(recipe.op_types) if recipe.op_types else None
    if recipe.method == "dynamic":
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=op_types,
            per_channel=recipe.per_channel,
            weight_type=qtype[recipe.weight_type],
            extra_options=extra,
        )
    else:
        if not calibration:
            raise ValueError(f"recipe {recipe.name} needs calibration inputs")
        if recipe.symmetric_activations:
            extra["ActivationSymmetric"] = True
            extra["WeightSymmetric"] = True
            # A Q/DQ pair per consumer: residual Adds and LayerNorms keep FP inputs, only
            # GEMM inputs are quantized (TensorRT fuses each pair into its GEMM).
            extra["DedicatedQDQPair"] = True
            extra["OpTypesToExcludeOutputQuantization"] = list(recipe.op_types or ())
        with tempfile.TemporaryDirectory(prefix="bfnas-quant-") as tmp:
            prepped = Path(tmp) / "prepped.onnx"
            # Without pre-processing (shape inference), static QDQ on a fused model
            # "succeeds" while quantizing no activations (docs/MEASURED.md).
            quant_pre_process(str(src), str(prepped), skip_optimization=recipe.fuse)
            quantize_static(
                prepped,
                dst,
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=recipe.per_channel,
                activation_type=qtype[recipe.activation_type],
                weight_type=qtype[recipe.weight_type],
                calibrate_method={"minmax": CalibrationMethod.MinMax}[recipe.calibration_method],
                extra_options=extra,
            )
            shutil.rmtree(tmp, ignore_errors=True)
        if recipe.symmetric_activations and recipe.op_types:
            model = onnx.load(str(dst))
            _unquantize_other_consumers(model, set(recipe.op_types))
            onnx.save(model, str(dst))
    return quantization_counts(dst)


QUANTIZATION_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QAttention",
    "DynamicQuantizeMatMul",
    "QGemm",
)


def quantization_counts(path: Path) -> dict[str, int]:
    """Counts of quantization ops in a model, so a recipe that quantized nothing is visible."""
    return _op_counts(onnx.load(str(path), load_external_data=False), QUANTIZATION_OPS)


def _unquantize_other_consumers(model: onnx.ModelProto, op_types: set[str]) -> None:
    """Feed nodes outside `op_types` the FP tensor instead of its Q/DQ round trip.

    ORT shares one Q/DQ pair between a GEMM and, say, the residual Add that reads the same
    tensor; the Add then sees int8 error it does not need. TensorRT also expects Q/DQ only
    in front of the layers it runs in INT8."""
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    fp_of = {
        n.output[0]: q_input[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_input
    }
    for node in model.graph.node:
        if node.op_type in op_types or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in fp_of:
                node.input[i] = fp_of[name]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _op_counts(model: onnx.ModelProto, names: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(node.op_type for node in model.graph.node)
    return {n: counts[n] for n in names if counts[n]}
