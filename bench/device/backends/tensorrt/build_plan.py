"""What to build, for which TensorRT: the build plan for a precision and a TensorRT version
(`plan_build`), and the optimization-profile shapes of the workload (`profile_shapes`).

The INT8 path is explicit quantization (docs/DESIGN.md): the `qdq-symmetric` ONNX carries
its own scales in QuantizeLinear/DequantizeLinear nodes and is built into a *strongly typed*
network (TensorRT >= 10), where every tensor's type follows from the graph and the builder
may not pick precisions itself. TensorRT 10 deprecated and 11 removed implicit INT8
calibration; the calibrator path (`build.entropy_calibrator`) exists only for TensorRT < 10
and an FP32 graph. Pure: runs on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import onnx


class BuildError(RuntimeError):
    """The engine cannot be built (bad graph, unsupported combination, builder failure)."""


def trt_major(version: str) -> int:
    """10 for "10.3.0.26"."""
    head = version.strip().split(".")[0]
    if not head.isdigit():
        raise ValueError(f"cannot read a TensorRT version from {version!r}")
    return int(head)


@dataclass(frozen=True)
class BuildPlan:
    """How one network is built.

    mode: "strongly-typed" (explicit quantization or plain FP32, TensorRT >= 10),
    "explicit-qdq" (Q/DQ honoured by a weakly typed TensorRT 8/9 network with the INT8 flag),
    "implicit-calibration" (FP32 graph + entropy calibrator, TensorRT < 10 only),
    "fp16" (weakly typed FP32 graph with the FP16 flag: the FP16 baseline), "fp32".
    """

    mode: str
    strongly_typed: bool
    flags: tuple[str, ...]  # tensorrt.BuilderFlag names
    calibrate: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


def plan_build(trt_version: str, precision: str, qdq: bool) -> BuildPlan:
    """The build for `precision` ("int8" | "fp16" | "fp32") of a graph with or without Q/DQ.

    Raises BuildError for what a TensorRT version cannot do, with the way out."""
    major = trt_major(trt_version)
    if precision == "int8":
        if qdq:
            if major >= 10:
                # Strongly typed: the builder may not set precisions, so no INT8/FP16 flag
                # (TensorRT rejects them on a strongly typed network).
                return BuildPlan("strongly-typed", True, (), False)
            return BuildPlan("explicit-qdq", False, ("INT8", "FP16"), False)
        if major >= 10:
            raise BuildError(
                f"TensorRT {trt_version}: implicit INT8 calibration is deprecated in TensorRT 10 "
                "and removed in 11; quantize with recipe qdq-symmetric (explicit Q/DQ) instead"
            )
        return BuildPlan("implicit-calibration", False, ("INT8", "FP16"), True)
    if qdq:
        raise BuildError(f"precision {precision} needs an FP32 graph; this one has Q/DQ nodes")
    if precision == "fp16":
        if major >= 11:
            raise BuildError(
                f"TensorRT {trt_version} builds only strongly typed networks: an "
                "FP16 engine needs an FP16 ONNX graph"
            )
        return BuildPlan("fp16", False, ("FP16",), False)
    if precision == "fp32":
        return BuildPlan("fp32", major >= 10, (), False)
    raise BuildError(f"unknown precision {precision!r}")


def profile_shapes(inputs: dict[str, tuple], batch: int, seq_len: int) -> dict[str, tuple]:
    """(min, opt, max) shape per network input for the workload.

    min = opt = max = (batch, seq_len): a measurement times exactly one shape, so the engine
    is tuned for that shape alone (the shape is part of the engine's cache key)."""
    out = {}
    for name, dims in inputs.items():
        if len(dims) != 2:
            raise BuildError(f"input {name} has rank {len(dims)}; expected (batch, sequence)")
        shape = (batch, seq_len)
        for got, want in zip(dims, shape):  # both of length 2 (checked above)
            if isinstance(got, int) and got > 0 and got != want:
                raise BuildError(
                    f"input {name} is fixed at {tuple(dims)}, the workload asks for {shape}"
                )
        out[name] = (shape, shape, shape)
    return out


def onnx_input_dims(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each graph input's dims: ints where fixed, the symbolic name (or -1) where not."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        out[value.name] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in dims
        )
    return out
