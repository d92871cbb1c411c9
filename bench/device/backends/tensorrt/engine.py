"""TensorRT engines from the ONNX artifacts: check, plan, key, build, inspect.

The INT8 path is explicit quantization (DESIGN.md): the `qdq-symmetric` ONNX carries its
own scales in QuantizeLinear/DequantizeLinear nodes and is built into a *strongly typed*
network (TensorRT >= 10), where every tensor's type follows from the graph and the builder
may not pick precisions itself. TensorRT 10 deprecated and 11 removed implicit INT8
calibration; the `IInt8EntropyCalibrator2` path here exists only for TensorRT < 10 and an
FP32 graph.

Everything above `build_engine` is pure and runs on any machine (tests run it on CPU):
the explicit-quantization checker, the build plan for a TensorRT version, the optimization
profile shapes, the cache keys and the parser of the engine inspector's JSON. `build_engine`
and the calibrator need tensorrt and pycuda and a GPU; they are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------------------
# The explicit-quantization checker


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Tensors known when the engine is built: initializers and Constant node outputs."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _axis(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return 1  # the ONNX default for QuantizeLinear/DequantizeLinear


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
    problems: list[str] = []
    graph = model.graph
    consts = _constants(model)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    producers = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)

    for node in graph.node:
        where = f"node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(
                f"{where}: op {node.domain}.{node.op_type} is not a standard ONNX op "
                "(TensorRT's ONNX parser has no importer for it)"
            )
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: op {node.op_type} is not in the ops checked for TensorRT")
            continue
        if node.op_type not in QDQ_OPS:
            continue

        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            problems.append(
                f"{where}: scale {node.input[1] if len(node.input) > 1 else '(none)'} "
                "is not a build-time constant"
            )
            continue
        if scale.dtype.kind != "f":
            problems.append(f"{where}: scale has dtype {scale.dtype}, not floating point")
        elif not (np.isfinite(scale).all() and (scale > 0).all()):
            problems.append(f"{where}: scale must be finite and positive (min {scale.min():.3g})")
        if scale.ndim > 1:
            problems.append(
                f"{where}: scale has rank {scale.ndim}; TensorRT takes a scalar "
                "(per tensor) or a 1-D scale (per channel)"
            )
        zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and zero is None:
            problems.append(f"{where}: zero point is not a build-time constant")
        if zero is not None:
            if zero.dtype != np.int8:
                problems.append(f"{where}: zero point has dtype {zero.dtype}, TensorRT needs int8")
            if zero.any():
                problems.append(f"{where}: zero point is not 0 (TensorRT quantizes symmetrically)")
            if zero.shape != scale.shape:
                problems.append(
                    f"{where}: zero point shape {zero.shape} differs from scale shape {scale.shape}"
                )
        per_channel = scale.ndim == 1 and scale.size > 1
        if per_channel and opset < 13:
            problems.append(f"{where}: per-channel scale needs opset >= 13 (model has {opset})")

        if node.op_type == "QuantizeLinear":
            outs = consumers.get(node.output[0], [])
            others = sorted({c.op_type for c, _ in outs if c.op_type != "DequantizeLinear"})
            if others or node.output[0] in graph_outputs:
                problems.append(
                    f"{where}: QuantizeLinear output feeds "
                    f"{', '.join(others) or 'a graph output'}, not only "
                    "DequantizeLinear (TensorRT fuses Q into a following DQ)"
                )
            continue

        # DequantizeLinear: what it reads, and what reads it.
        source = node.input[0]
        weight = consts.get(source)
        if weight is not None:
            if weight.dtype != np.int8:
                problems.append(
                    f"{where}: quantized weight {source} has dtype {weight.dtype}, not int8"
                )
            elif weight.size and int(weight.min()) < -127:
                problems.append(
                    f"{where}: int8 weight {source} uses -128; TensorRT's weights "
                    "are symmetric in [-127, 127]"
                )
        elif source not in producers or producers[source].op_type != "QuantizeLinear":
            problems.append(
                f"{where}: DequantizeLinear reads {source}, which is neither a "
                "QuantizeLinear output nor a constant int8 weight"
            )
        if not per_channel:
            continue
        shape = weight.shape if weight is not None else None
        axis = _axis(node)
        if shape is not None:
            rank = len(shape)
            if not -rank <= axis < rank:
                problems.append(f"{where}: axis {axis} is out of range for rank {rank}")
                continue
            axis %= rank
            if shape[axis] != scale.size:
                problems.append(
                    f"{where}: {scale.size} scales for axis {axis} of length {shape[axis]}"
                )
            for consumer, index in consumers.get(node.output[0], []):
                reduced = _gemm_reduced_dim(consumer, index, rank)
                if reduced is not None and axis == reduced:
                    problems.append(
                        f"{where}: per-channel axis {axis} is the dimension "
                        f"{consumer.op_type} {consumer.name!r} sums over"
                    )
    return problems


# ---------------------------------------------------------------------------------------
# What to build, for which TensorRT


def trt_major(version: str) -> int:
    """10 for "10.3.0.26"."""
    head = version.strip().split(".")[0]
    if not head.isdigit():
        raise ValueError(f"cannot read a TensorRT version from {version!r}")
    return int(head)


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


class BuildError(RuntimeError):
    """The engine cannot be built (bad graph, unsupported combination, builder failure)."""


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
        for got, want in zip(dims, shape, strict=True):
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


# ---------------------------------------------------------------------------------------
# Cache keys: what makes an engine (or a timing cache) valid


@dataclass(frozen=True)
class DeviceIdentity:
    """Everything about the device and software stack an engine is specific to."""

    gpu_name: str
    compute_capability: str  # "8.6"
    tensorrt: str
    cuda_driver: str  # driver API version, e.g. "12040"
    cuda_runtime: str  # the CUDA version the bindings were built against

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class BuildSettings:
    """Every builder setting that can change the engine."""

    precision: str  # "int8" | "fp16" | "fp32"
    plan: BuildPlan
    batch: int
    seq_len: int
    workspace_mb: int
    optimization_level: int = 3  # TensorRT's default builder optimization level
    calibration_samples: int = 0  # implicit calibration only
    profiling_verbosity: str = "DETAILED"  # the inspector needs it for per-layer precision

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        return d

    def timing_dict(self) -> dict[str, Any]:
        """The settings that change which tactics a layer can use: the timing cache's part
        of them. Shapes, workspace and calibration change the network or its memory, not
        the timing of one layer configuration, which is what the timing cache stores."""
        return {"plan": self.plan.to_dict(), "optimization_level": self.optimization_level}


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def engine_key(onnx_sha256: str, device: DeviceIdentity, settings: BuildSettings) -> str:
    """The engine cache key: the ONNX file, the device and stack, every builder setting."""
    return _digest(
        {"onnx_sha256": onnx_sha256, "device": device.to_dict(), "settings": settings.to_dict()}
    )


def timing_cache_key(device: DeviceIdentity, settings: BuildSettings) -> str:
    """The timing cache key. NVIDIA documents the cache as specific to the device, the CUDA
    and TensorRT versions and the builder settings that change layer implementations; it
    is deliberately *not* specific to one ONNX file, since reusing layer timings across
    subnets (which share layer shapes) is what makes it worth having."""
    return _digest({"device": device.to_dict(), "settings": settings.timing_dict()})


# ---------------------------------------------------------------------------------------
# Reading the engine inspector


_PRECISIONS = (  # (substring of "Format/Datatype", precision); first match wins
    ("int8", "int8"),
    ("fp8", "fp8"),
    ("int4", "int4"),
    ("bf16", "bf16"),
    ("half", "fp16"),
    ("fp16", "fp16"),
    ("float", "fp32"),
    ("fp32", "fp32"),
)
_ORDER = ("int4", "int8", "fp8", "fp16", "bf16", "fp32")
BOOKKEEPING_LAYERS = frozenset({"Reformat", "NoOp"})


def tensor_precision(fmt: str) -> str | None:
    """ "Row major linear Int8 format" -> "int8"; None for index/bool tensors or "N/A"."""
    low = fmt.lower()
    if not low or low.startswith("n/a") or any(t in low for t in ("int32", "int64", "bool")):
        return None
    for needle, precision in _PRECISIONS:
        if needle in low:
            return precision
    return None


def layer_precisions(info: str | dict) -> dict[str, Any]:
    """Per-layer precision shares from `IEngineInspector.get_engine_information(JSON)`.

    A layer's precision is the lowest among its input tensors (an INT8 GEMM reads int8 and
    may write float). Reformat and NoOp layers are format bookkeeping, not compute, and are
    left out. Layers compiled by Myelin (TensorRT's fused-graph compiler, LayerType
    "Myelin") show only their boundary tensors, so their inner precision is unknown: they
    are counted apart, and `int8_share` is over the layers whose precision could be read.
    Engines built without ProfilingVerbosity.DETAILED list names only: `detailed` is False.
    """
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        return {"detailed": False, "layers": len(layers)}
    counts: Counter[str] = Counter()
    myelin = bookkeeping = 0
    for layer in layers:
        kind = str(layer.get("LayerType", ""))
        if kind in BOOKKEEPING_LAYERS:
            bookkeeping += 1
            continue
        if kind == "Myelin":
            myelin += 1
            continue
        found = {
            tensor_precision(str(t.get("Format/Datatype", "")))
            for t in layer.get("Inputs", [])
            if isinstance(t, dict)
        }
        found.discard(None)
        counts[min(found, key=_ORDER.index) if found else "unknown"] += 1
    known = sum(v for k, v in counts.items() if k != "unknown")
    return {
        "detailed": True,
        "layers": len(layers),
        "bookkeeping": bookkeeping,
        "myelin": myelin,
        "by_precision": dict(sorted(counts.items())),
        "int8_share": counts["int8"] / known if known else None,
    }


# ---------------------------------------------------------------------------------------
# A float twin of a QDQ graph (for the FP16 baseline)


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network without quantization: int8 weights dequantized into float
    initializers, activation Q->DQ pairs removed. Used to build the FP16 baseline engine
    from the very graph that was measured in INT8 (the weights keep their int8 rounding,
    which does not change the timing)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = _constants(out)
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
                shape[_axis(node) % w.ndim] = scale.size
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


# ---------------------------------------------------------------------------------------
# Building (needs tensorrt, pycuda and a GPU; not run on the CPU-only machines of CI)


@dataclass
class EngineBuild:
    key: str
    path: Path
    cached: bool
    seconds: float
    plan: BuildPlan
    timing_cache: Path | None
    calibration_cache: Path | None = None
    qdq_problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "cached": self.cached,
            "build_s": round(self.seconds, 3),
            "plan": self.plan.to_dict(),
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "calibration_cache": str(self.calibration_cache) if self.calibration_cache else None,
        }


def _atomic_write(path: Path, data: bytes) -> None:
    """Write whole or not at all: a crash mid-build must not leave a truncated engine that
    a later run would deserialize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def entropy_calibrator(trt, cuda, feeds: list[dict[str, np.ndarray]], cache_file: Path):
    """An `IInt8EntropyCalibrator2` fed from host batches through pycuda (TensorRT < 10).

    The class is made here because its base class lives in tensorrt, which is imported
    only on a GPU host. TensorRT calls get_batch until it returns None, and reads the cache
    first: with a cache file present no batch is needed."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            # pybind11 bases must be initialised explicitly (TensorRT's documented pattern).
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._feeds = iter(feeds)
            first = feeds[0]
            self._batch = int(next(iter(first.values())).shape[0])
            self._device = {k: cuda.mem_alloc(v.nbytes) for k, v in first.items()}

        def get_batch_size(self) -> int:
            return self._batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            feed = next(self._feeds, None)
            if feed is None:
                return None
            for name in names:
                cuda.memcpy_htod(self._device[name], np.ascontiguousarray(feed[name]))
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            _atomic_write(cache_file, bytes(cache))

    return EntropyCalibrator()


def build_engine(
    trt,
    onnx_path: Path,
    onnx_sha256: str,
    settings: BuildSettings,
    device: DeviceIdentity,
    cache_dir: Path,
    calibration: Callable[[], list[dict[str, np.ndarray]]] | None = None,
    cuda=None,
) -> EngineBuild:
    """The serialized engine for (ONNX, device, settings): from the cache, or built now on
    this device with the shared timing cache.

    Explicitly quantized graphs are checked first (`check_trt_qdq`): a graph TensorRT would
    reject, or would silently run in float, fails here with the reasons."""
    import time

    key = engine_key(onnx_sha256, device, settings)
    path = cache_dir / "engines" / f"{key}.plan"
    tkey = timing_cache_key(device, settings)
    timing_path = cache_dir / "timing" / f"{tkey}.cache"
    calib_path = (cache_dir / "calibration" / f"{key}.calib") if settings.plan.calibrate else None
    if path.is_file():
        return EngineBuild(key, path, True, 0.0, settings.plan, timing_path, calib_path)

    model = onnx.load(str(onnx_path), load_external_data=False)
    problems = (
        check_trt_qdq(model) if settings.plan.mode in ("strongly-typed", "explicit-qdq") else []
    )
    if problems:
        raise BuildError(
            f"{onnx_path} does not meet TensorRT's explicit-quantization rules: "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else "")
        )
    shapes = profile_shapes(onnx_input_dims(model), settings.batch, settings.seq_len)

    t = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if settings.plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif trt_major(device.tensorrt) < 10:
        # TensorRT < 10 still has implicit-batch networks; ONNX needs explicit batch.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors[:5]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT >= 8.6
        config.builder_optimization_level = settings.optimization_level
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, settings.profiling_verbosity)
    for flag in settings.plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing_cache = config.create_timing_cache(blob)
    # ignore_mismatch=False: a cache from another device or version is refused, not used.
    config.set_timing_cache(timing_cache, False)

    calibrator = None
    if settings.plan.calibrate:
        if calibration is None or cuda is None:
            raise BuildError("implicit INT8 calibration needs calibration batches and pycuda")
        assert calib_path is not None
        feeds = [] if calib_path.is_file() else calibration()
        if not feeds and not calib_path.is_file():
            raise BuildError("implicit INT8 calibration got no batches")
        calibrator = entropy_calibrator(trt, cuda, feeds or [_zeros_like(shapes)], calib_path)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(
            f"TensorRT could not build an engine from {onnx_path} "
            f"({settings.plan.mode}); see the TensorRT log above"
        )
    _atomic_write(path, bytes(serialized))
    _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    return EngineBuild(
        key, path, False, time.perf_counter() - t, settings.plan, timing_path, calib_path
    )


def _zeros_like(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """A placeholder batch that only sizes the calibrator's device buffers when a
    calibration cache makes real batches unnecessary."""
    return {name: np.zeros(opt, dtype=np.int32) for name, (_, opt, _) in shapes.items()}
