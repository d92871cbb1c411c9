"""What a device runs a model with: the `[runtime]` table of a profile, one settings class per
backend.

`backend` picks the class (`device.backends.BACKENDS` names each backend's), so an ONNX Runtime
profile has ONNX Runtime's settings and nothing of TensorRT's, and a new backend brings its own
class rather than fields in a shared one. Defaults are written here, once.

A profile's hash (`HardwareProfile.hash`) reads a runtime through `LEGACY_RUNTIME`: the flat
table every runtime was before each backend had its own, so a profile measured then keeps its
hash, and its store its measurements (a golden test holds profiles to theirs).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bfnas.bench.device.backends.ort_options import check_provider_options

PositiveInt = Annotated[int, Field(gt=0)]
CpuId = Annotated[int, Field(ge=0)]


class RuntimeSettings(BaseModel):
    """What every backend's settings are: strict (unknown keys refused), frozen, and what the
    worker reads whatever the backend (`device.worker`, `device.probe`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    # The threads the worker runs a model with (ONNX Runtime's intra-op pool): its result
    # reports them, the probe refuses more than the cores, and a busy machine's wait and the
    # CPU-share trust rule count the cores they need.
    intra_op_threads: PositiveInt = 1
    # CPU ids the worker pins itself to before it loads the model.
    cpu_affinity: list[CpuId] | None = None

    @property
    def runs_on(self) -> str:
        """What the profile asks to run a model on, before a measurement says what really
        did: the backend."""
        return self.backend

    def unsupported(self, precision: str, recipe: str) -> str | None:
        """Why this backend cannot time a model of `precision` quantized by `recipe`, or None
        (the profile's schema refuses the profile with this line)."""
        return None


class OnnxRuntimeSettings(RuntimeSettings):
    """ONNX Runtime (`device.backends.ort`): its execution providers in order, with one
    options table each."""

    backend: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    provider_options: list[dict[str, str | int | float | bool]] = Field(default_factory=list)
    inter_op_threads: PositiveInt = 1
    # A GPU provider: include host<->device copies in the timed region (without them the
    # inputs are bound on the GPU once); recorded either way.
    include_copies: bool = False

    @property
    def runs_on(self) -> str:
        # The first provider is the one that must really run (the probe checks it).
        return self.providers[0]

    @model_validator(mode="after")
    def _options_match(self) -> OnnxRuntimeSettings:
        if self.provider_options and len(self.provider_options) != len(self.providers):
            raise ValueError("provider_options needs one table per provider")
        for provider, options in zip(self.providers, self.provider_options, strict=False):
            problems = check_provider_options(provider, options)
            if problems:
                raise ValueError(problems[0])
        return self

    def unsupported(self, precision: str, recipe: str) -> str | None:
        if precision == "fp16" and self.providers[0] == "CPUExecutionProvider":
            return "precision fp16 on ONNX Runtime's CPU provider is not supported"
        return None


class TensorRTOptions(BaseModel):
    """`[runtime.tensorrt]`: how TensorRT builds and runs an engine
    (`device.backends.tensorrt.harness`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: Annotated[int, Field(ge=0)] = 0
    # TensorRT's builder optimization level (0-5, its default 3): higher searches more tactics.
    builder_optimization_level: Annotated[int, Field(ge=0, le=5)] = 3
    # Also time an FP16 engine of the same network as a baseline in the details: one more
    # engine build per subnet, so off unless asked for.
    fp16_baseline: bool = False


class TensorRTSettings(RuntimeSettings):
    """TensorRT (`device.backends.tensorrt`): an engine built from the ONNX file, timed by
    CUDA events on the device."""

    backend: Literal["tensorrt"] = "tensorrt"
    # Include host<->device copies in the timed region (recorded either way).
    include_copies: bool = False
    # The builder's workspace.
    workspace_mb: PositiveInt = 1024
    # Always present, defaults filled in: a measurement records the engine it was built with.
    tensorrt: TensorRTOptions = Field(default_factory=TensorRTOptions)

    def unsupported(self, precision: str, recipe: str) -> str | None:
        if precision == "int8" and recipe != "qdq-symmetric":
            # TensorRT >= 10 takes INT8 only as explicit, symmetric Q/DQ
            # (device.backends.tensorrt.build_plan).
            return (
                "backend tensorrt runs INT8 from explicit Q/DQ: quantization.recipe "
                "must be qdq-symmetric"
            )
        return None


# Every runtime before each backend had its own settings: one flat table, these defaults (its
# `tensorrt` table there only for backend tensorrt). The hash of a profile reads its runtime
# over these, so it is what it was then. Tuples: dumped as the lists they were, never shared.
LEGACY_RUNTIME: dict[str, object] = {
    "backend": "onnxruntime",
    "providers": ("CPUExecutionProvider",),
    "provider_options": (),
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "cpu_affinity": None,
    "include_copies": False,
    "workspace_mb": 1024,
}


def hashed_runtime(runtime: RuntimeSettings) -> dict:
    """The runtime as a profile's hash reads it: over the legacy flat table."""
    return {**LEGACY_RUNTIME, **runtime.model_dump(mode="json")}
