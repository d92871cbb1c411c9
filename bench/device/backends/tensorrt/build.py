"""Building an engine (needs tensorrt, pycuda for the legacy calibrator, and a GPU; not run on
the CPU-only machines of CI): `build_engine` returns the serialized engine for (ONNX, device,
settings) from the cache under `target.workdir/tensorrt/`, or builds it on this device with
the shared timing cache. Each step of a build is a function below, in the order it runs.

TensorRT's Python objects do not keep what they were made from alive: the ONNX parser owns
the weights the network points into, and the builder config does not hold the timing cache
or the calibrator. Everything a build made is kept in one `_Build` until the engine is
serialized, so nothing is collected while TensorRT still reads it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .build_plan import (
    BuildError,
    BuildPlan,
    onnx_input_dims,
    profile_shapes,
    trt_major,
)
from .keys import (
    BuildSettings,
    DeviceIdentity,
    engine_key,
    timing_cache_key,
)
from .qdq_check import check_trt_qdq

Calibration = Callable[[], list[dict[str, np.ndarray]]]
EXPLICIT_QDQ_MODES = ("strongly-typed", "explicit-qdq")


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


def atomic_write(path: Path, data: bytes) -> None:
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
            atomic_write(cache_file, bytes(cache))

    return EntropyCalibrator()


@dataclass(frozen=True)
class CachePaths:
    """Where one engine, its timing cache and its calibration cache live under a cache dir."""

    key: str
    engine: Path
    timing: Path
    calibration: Path | None  # implicit calibration only

    @classmethod
    def of(
        cls, onnx_sha256: str, device: DeviceIdentity, settings: BuildSettings, cache_dir: Path
    ) -> CachePaths:
        key = engine_key(onnx_sha256, device, settings)
        timing = cache_dir / "timing" / f"{timing_cache_key(device, settings)}.cache"
        calibration = (
            cache_dir / "calibration" / f"{key}.calib" if settings.plan.calibrate else None
        )
        return cls(key, cache_dir / "engines" / f"{key}.plan", timing, calibration)


@dataclass
class _Build:
    """What one build made, held until the engine is serialized (see the module docstring)."""

    builder: Any
    network: Any
    parser: Any
    config: Any = None
    optimization_profile: Any = None
    timing_cache: Any = None
    calibrator: Any = None


def build_engine(
    trt,
    onnx_path: Path,
    onnx_sha256: str,
    settings: BuildSettings,
    device: DeviceIdentity,
    cache_dir: Path,
    calibration: Calibration | None = None,
    cuda=None,
) -> EngineBuild:
    """The serialized engine for (ONNX, device, settings): from the cache, or built now on
    this device with the shared timing cache.

    Explicitly quantized graphs are checked first (`qdq_check.check_trt_qdq`): a graph
    TensorRT would reject, or would silently run in float, fails here with the reasons."""
    paths = CachePaths.of(onnx_sha256, device, settings, cache_dir)
    if paths.engine.is_file():
        return EngineBuild(
            paths.key, paths.engine, True, 0.0, settings.plan, paths.timing, paths.calibration
        )
    shapes = checked_shapes(onnx_path, settings)
    started = time.perf_counter()
    build = parse_network(trt, onnx_path, settings.plan, device)
    configure(trt, build, settings, shapes, paths.timing)
    if settings.plan.calibrate:
        attach_calibrator(trt, cuda, build, shapes, calibration, paths.calibration)
    serialized = build.builder.build_serialized_network(build.network, build.config)
    if serialized is None:
        raise BuildError(
            f"TensorRT could not build an engine from {onnx_path} "
            f"({settings.plan.mode}); see the TensorRT log above"
        )
    atomic_write(paths.engine, bytes(serialized))
    atomic_write(paths.timing, bytes(build.config.get_timing_cache().serialize()))
    return EngineBuild(
        paths.key,
        paths.engine,
        False,
        time.perf_counter() - started,
        settings.plan,
        paths.timing,
        paths.calibration,
    )


def checked_shapes(onnx_path: Path, settings: BuildSettings) -> dict[str, tuple]:
    """The optimization-profile shapes of the graph for the workload, after the
    explicit-quantization check of a graph built with its own Q/DQ (BuildError with the
    first reasons otherwise)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    problems = check_trt_qdq(model) if settings.plan.mode in EXPLICIT_QDQ_MODES else []
    if problems:
        raise BuildError(
            f"{onnx_path} does not meet TensorRT's explicit-quantization rules: "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else "")
        )
    return profile_shapes(onnx_input_dims(model), settings.batch, settings.seq_len)


def parse_network(trt, onnx_path: Path, plan: BuildPlan, device: DeviceIdentity) -> _Build:
    """A builder and the network TensorRT's ONNX parser made of the graph (BuildError with the
    parser's errors)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif trt_major(device.tensorrt) < 10:
        # TensorRT < 10 still has implicit-batch networks; ONNX needs explicit batch.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors[:5]))
    return _Build(builder, network, parser)


def configure(
    trt, build: _Build, settings: BuildSettings, shapes: dict[str, tuple], timing_path: Path
) -> None:
    """The builder config: workspace, optimization level, inspector verbosity, the plan's
    flags, one optimization profile for the workload's shape, and the timing cache."""
    config = build.builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT >= 8.6
        config.builder_optimization_level = settings.optimization_level
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, settings.profiling_verbosity)
    for flag in settings.plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = build.builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing_cache = config.create_timing_cache(blob)
    # ignore_mismatch=False: a cache from another device or version is refused, not used.
    config.set_timing_cache(timing_cache, False)
    build.config, build.optimization_profile, build.timing_cache = config, profile, timing_cache


def attach_calibrator(
    trt,
    cuda,
    build: _Build,
    shapes: dict[str, tuple],
    calibration: Calibration | None,
    calib_path: Path | None,
) -> None:
    """The entropy calibrator of an implicit INT8 build (TensorRT < 10), fed the calibration
    batches unless its cache file makes them unnecessary."""
    if calibration is None or cuda is None:
        raise BuildError("implicit INT8 calibration needs calibration batches and pycuda")
    assert calib_path is not None  # a calibrating plan always has a calibration cache path
    feeds = [] if calib_path.is_file() else calibration()
    if not feeds and not calib_path.is_file():
        raise BuildError("implicit INT8 calibration got no batches")
    build.calibrator = entropy_calibrator(trt, cuda, feeds or [_zeros_like(shapes)], calib_path)
    build.config.int8_calibrator = build.calibrator
    build.config.set_calibration_profile(build.optimization_profile)


def _zeros_like(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """A placeholder batch that only sizes the calibrator's device buffers when a
    calibration cache makes real batches unnecessary."""
    return {name: np.zeros(opt, dtype=np.int32) for name, (_, opt, _) in shapes.items()}
