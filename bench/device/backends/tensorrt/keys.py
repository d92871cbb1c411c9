"""Cache keys: what makes a built engine, or a timing cache, valid for reuse. The device and
its software stack (`DeviceIdentity`) and every builder setting that can change the engine
(`BuildSettings`) go into them. Pure: runs on any machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from .build_plan import BuildPlan


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
