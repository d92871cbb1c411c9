"""TensorRT harness: build (or load) the engine on the device and time it with CUDA events.

`make_infer(model_path, profile)` is what the backend registry (`bench.device.backends`) names
for `runtime.backend = "tensorrt"`; it returns (the inference function, the backend really
running, details) like the ONNX Runtime harness, and the shared timing loop
(`bench.device.timing.time_runs`) applies the same statistics and stop rules. Each run
returns a `DeviceTime`: the milliseconds between two CUDA events recorded on the stream
around `execute_async_v3` (and around the host<->device copies when
`runtime.include_copies` is set), so host-side Python overhead is not counted.

Engines are built on the device itself (the worker runs there) and cached under
`target.workdir/tensorrt/` by `bench.device.backends.tensorrt.keys.engine_key`.

Not run on a GPU in this repository's CI (CPU only); see docs/tensorrt.md.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...gpu import tensorrt_missing
from ...timing import DeviceTime
from ..ort import token_feed
from .build import EngineBuild, build_engine
from .build_plan import BuildError, plan_build
from .float_twin import strip_qdq
from .inspector import inspect_precisions
from .keys import BuildSettings, DeviceIdentity
from .qdq_check import has_qdq

if TYPE_CHECKING:
    from ...settings import DeviceSettings

FP16_BASELINE_RUNS = 50


class TensorRTUnavailable(RuntimeError):
    """tensorrt, pycuda or a GPU is missing here; the message names which."""


def require_tensorrt():
    """(tensorrt, pycuda.driver), or TensorRTUnavailable naming everything missing."""
    missing = tensorrt_missing()
    if missing:
        raise TensorRTUnavailable("backend tensorrt is not usable here: " + "; ".join(missing))
    import pycuda.driver as cuda
    import tensorrt as trt

    return trt, cuda


_CONTEXTS: dict[int, Any] = {}


def cuda_context(cuda, device_id: int = 0):
    """One CUDA context per process and device, made current and popped at exit (what
    `pycuda.autoinit` does, for a chosen device)."""
    if device_id not in _CONTEXTS:
        cuda.init()
        ctx = cuda.Device(device_id).make_context()
        atexit.register(ctx.pop)
        _CONTEXTS[device_id] = ctx
    return _CONTEXTS[device_id]


def device_identity(trt, cuda, device_id: int = 0) -> DeviceIdentity:
    dev = cuda.Device(device_id)
    major, minor = dev.compute_capability()
    driver = getattr(cuda, "get_driver_version", lambda: "unknown")()
    runtime = getattr(cuda, "get_version", lambda: "unknown")()
    return DeviceIdentity(
        gpu_name=dev.name(),
        compute_capability=f"{major}.{minor}",
        tensorrt=trt.__version__,
        cuda_driver=str(driver),
        cuda_runtime=".".join(map(str, runtime)) if isinstance(runtime, tuple) else str(runtime),
    )


class _Bindings:
    """Host (page-locked) and device buffers for every I/O tensor of one context.

    Page-locked host memory is what makes `memcpy_*_async` really asynchronous; pageable
    memory would add a hidden staging copy to a timed region that includes copies."""

    def __init__(self, trt, cuda, engine, context, batch: int, seq_len: int) -> None:
        feed = token_feed(batch, seq_len)
        self.inputs: list[tuple[Any, Any]] = []
        self.outputs: list[tuple[Any, Any]] = []
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_names = inputs
        for name in inputs:
            if name not in feed:
                raise BuildError(f"engine input {name} is not one of {sorted(feed)}")
            context.set_input_shape(name, feed[name].shape)
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(context.get_tensor_shape(name))
            host = cuda.pagelocked_empty(shape, dtype)
            if name in inputs:
                # The engine may take int32 where the ONNX said int64 (TensorRT < 10).
                host[...] = feed[name].astype(dtype)
            device = cuda.mem_alloc(max(host.nbytes, 1))
            context.set_tensor_address(name, int(device))
            (self.inputs if name in inputs else self.outputs).append((host, device))


def _engine_inference(trt, cuda, engine_path: Path, batch: int, seq_len: int, include_copies: bool):
    """(the inference function returning its DeviceTime, engine, context, bindings)."""
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise BuildError(f"cannot deserialize {engine_path} (built by another TensorRT?)")
    context = engine.create_execution_context()
    io = _Bindings(trt, cuda, engine, context, batch, seq_len)
    stream = cuda.Stream()
    start, end = cuda.Event(), cuda.Event()
    for host, device in io.inputs:  # inputs in place once; copies are timed only if asked
        cuda.memcpy_htod(device, host)

    def infer() -> DeviceTime:
        start.record(stream)
        if include_copies:
            for host, device in io.inputs:
                cuda.memcpy_htod_async(device, host, stream)
        if not context.execute_async_v3(stream.handle):
            raise RuntimeError("execute_async_v3 failed")
        if include_copies:
            for host, device in io.outputs:
                cuda.memcpy_dtoh_async(host, device, stream)
        end.record(stream)
        end.synchronize()
        return DeviceTime(end.time_since(start))

    # Keep the runtime alive as long as the engine (TensorRT's lifetime rule).
    infer.keep = (runtime, engine, context, io, stream)  # type: ignore[attr-defined]
    return infer, engine, context, io


def build_settings(profile, precision: str, plan) -> BuildSettings:
    opts = profile.runtime.tensorrt
    return BuildSettings(
        precision=precision,
        plan=plan,
        batch=profile.workload.batch,
        seq_len=profile.workload.seq_len,
        workspace_mb=profile.runtime.workspace_mb,
        optimization_level=opts.builder_optimization_level,
        calibration_samples=profile.quantization.calibration_samples if plan.calibrate else 0,
    )


def _calibration(profile) -> Callable[[], list[dict[str, np.ndarray]]]:
    """Generated token batches for the legacy calibrator, as int32: TensorRT < 10 casts the
    ONNX int64 inputs to int32, so that is the network's input type."""
    from ...feeds import token_batches

    w, q = profile.workload, profile.quantization

    def feeds() -> list[dict[str, np.ndarray]]:
        batches = token_batches(q.calibration_samples, w.batch, w.seq_len, 30522, seed=1235)
        return [{k: v.astype(np.int32) for k, v in b.items()} for b in batches]

    return feeds


def _fp16_baseline(trt, cuda, model, sha256: str, profile, device, cache_dir: Path) -> dict:
    """Median of FP16_BASELINE_RUNS CUDA-event timings of an FP16 engine of the same network
    (Q/DQ stripped, weights kept at their int8 rounding), after 10 warm-up runs. Costs one
    more engine build per subnet (cached like any engine), hence `runtime.tensorrt.
    fp16_baseline` opts in. None with the reason when the TensorRT version cannot build it."""
    import onnx

    try:
        plan = plan_build(device.tensorrt, "fp16", False)
    except BuildError as exc:
        return {"ms": None, "reason": str(exc)}
    fp_path = cache_dir / "fp" / f"{sha256}.onnx"
    if not fp_path.is_file():
        fp_path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(strip_qdq(model), str(fp_path))
    from ...digest import file_sha256

    settings = build_settings(profile, "fp16", plan)
    built = build_engine(trt, fp_path, file_sha256(fp_path), settings, device, cache_dir)
    infer, *_ = _engine_inference(
        trt,
        cuda,
        built.path,
        profile.workload.batch,
        profile.workload.seq_len,
        profile.runtime.include_copies,
    )
    for _ in range(10):
        infer()
    samples = [infer().ms for _ in range(FP16_BASELINE_RUNS)]
    return {"ms": float(np.median(samples)), "runs": FP16_BASELINE_RUNS, "engine": built.to_dict()}


def make_infer(
    model_path: str, profile: DeviceSettings
) -> tuple[Callable[[], DeviceTime], str, dict]:
    """(the inference function returning its CUDA-event time, "TensorRT <version> on <GPU>",
    details)."""
    import onnx

    from ...digest import file_sha256

    trt, cuda = require_tensorrt()
    opts = profile.runtime.tensorrt
    cuda_context(cuda, opts.device_id)
    device = device_identity(trt, cuda, opts.device_id)
    path = Path(model_path)
    sha256 = file_sha256(path)
    model = onnx.load(str(path), load_external_data=False)
    plan = plan_build(device.tensorrt, profile.precision, has_qdq(model))
    settings = build_settings(profile, profile.precision, plan)
    cache_dir = Path(profile.target.workdir).expanduser() / "tensorrt"
    built: EngineBuild = build_engine(
        trt, path, sha256, settings, device, cache_dir, calibration=_calibration(profile), cuda=cuda
    )
    rt = profile.runtime
    infer, engine, context, io = _engine_inference(
        trt, cuda, built.path, profile.workload.batch, profile.workload.seq_len, rt.include_copies
    )
    details: dict[str, Any] = {
        "engine": built.to_dict(),
        "device": device.to_dict(),
        "timing": {"clock": "cuda-events", "includes_copies": rt.include_copies},
        "inputs": io.input_names,
        "precision": inspect_precisions(trt, engine, context),
    }
    if opts.fp16_baseline and profile.precision == "int8":
        details["fp16_baseline"] = _fp16_baseline(
            trt, cuda, model, sha256, profile, device, cache_dir
        )
    return infer, f"TensorRT {device.tensorrt} on {device.gpu_name}", details
