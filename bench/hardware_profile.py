"""`HardwareProfile`: one device, how to reach it, what it runs and how to measure on it.

A profile is a TOML file in `hw_profiles/` (shipped as the package `bfnas.hw_profiles`) or
anywhere, by path. It is validated with pydantic; a bad file fails with one line naming the
file, the field and the reason.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from bfnas.bench.device.backends import BACKENDS, registered_backends
from bfnas.bench.runners.registry import RUNNER_KINDS, registered_kinds
from bfnas.bench.runners.targets import LocalTarget, TargetSettings, hashed_target
from bfnas.bench.runtime_settings import OnnxRuntimeSettings, RuntimeSettings, hashed_runtime
from bfnas.errors import InputError, read_text_input
from bfnas.models.deploy.recipes import RECIPES

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Kind(_Strict):
    """A target's `kind`: one of the registered runner kinds (read when a profile is
    validated, so a kind registered later counts too)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    kind: str = "local"

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, value: str) -> str:
        if value not in RUNNER_KINDS:
            raise ValueError(f"should be one of the registered runner kinds: {registered_kinds()}")
        return value


class _Backend(_Strict):
    """A runtime's `backend`: one of the registered backends (read when a profile is
    validated, so a backend registered later counts too)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    backend: str = "onnxruntime"

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"should be one of the registered backends: {registered_backends()}")
        return value


# Measure fields that judge a measurement or say how long to wait, not how it is taken:
# changing them keeps a store's measurements (which keep every number the judgement used).
JUDGEMENT_POLICY = ("max_rel_ci", "max_anchor_rel_ci", "min_cpu_share", "busy_wait_s")
RETIRED_MEASURE_FIELDS = ("max_cov", "max_other_cpu")


class Quantization(_Strict):
    recipe: str = "dynamic"
    fuse: bool = False
    calibration_samples: PositiveInt = 16

    @model_validator(mode="after")
    def _known(self) -> Quantization:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r} (known: {', '.join(RECIPES)})")
        return self


class Workload(_Strict):
    batch: PositiveInt = 1
    seq_len: Annotated[int, Field(gt=0, le=512)] = 128


class Measure(_Strict):
    """The stopping rules and the trust rule (see docs/DESIGN.md, "Measuring honestly")."""

    warmup_runs: Annotated[int, Field(ge=0)] = 10
    warmup_seconds: Annotated[float, Field(ge=0)] = 0.2
    min_runs: PositiveInt = 50
    min_seconds: Annotated[float, Field(ge=0)] = 0.3
    max_seconds: PositiveFloat = 10.0
    target_rel_ci: PositiveFloat = 0.01
    # Trust follows from what a measurement shows (bench.jobs.measurement.distrust): the 95 % CI of
    # the paired ratio's median (of the raw median without an anchor) and the anchor's own.
    # Chosen by measurement, quiet and beside a busy core (benchmarks/busy.py).
    max_rel_ci: PositiveFloat = 0.02
    max_anchor_rel_ci: PositiveFloat = 0.05
    # A CPU timing loop that got less than this share of the cores it needs was off its core
    # too long to be trusted (measured: below ~0.5 the paired ratio is biased, CI or not).
    min_cpu_share: Annotated[float, Field(ge=0, le=1)] = 0.6
    # A machine with no core free for the worker cannot be measured: wait this long for one,
    # measuring again now and then, before the job stops and says so.
    busy_wait_s: Annotated[float, Field(ge=0)] = 120.0
    timeout_s: PositiveFloat = 300.0
    # Time a fixed small "anchor" model right before every run and keep the ratio: it
    # cancels the machine's own speed changes (see bench.device.timing.time_runs).
    anchor: bool = True
    drift_every: Annotated[int, Field(ge=0)] = 25
    drift_threshold: PositiveFloat = 0.05

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: object) -> object:
        # Fields of earlier versions: named, so an old profile fails with a way forward.
        if isinstance(data, dict):
            for key in RETIRED_MEASURE_FIELDS:
                if key in data:
                    raise ValueError(
                        f"{key} is no longer used: trust is judged from the "
                        "measurement itself (max_rel_ci, max_anchor_rel_ci)"
                    )
        return data

    @model_validator(mode="after")
    def _order(self) -> Measure:
        if self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds is below min_seconds")
        if self.timeout_s <= self.max_seconds + self.warmup_seconds:
            raise ValueError("timeout_s must exceed max_seconds + warmup_seconds")
        return self


class HardwareProfile(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str = ""
    # The settings of the target's kind (`registry.RUNNER_KINDS` names each kind's class).
    target: SerializeAsAny[TargetSettings] = Field(default_factory=LocalTarget)
    # The settings of the runtime's backend (`device.backends.BACKENDS` names each backend's).
    runtime: SerializeAsAny[RuntimeSettings] = Field(default_factory=OnnxRuntimeSettings)
    precision: Literal["fp32", "fp16", "int8"] = "int8"
    quantization: Quantization = Field(default_factory=Quantization)
    workload: Workload = Field(default_factory=Workload)
    measure: Measure = Field(default_factory=Measure)
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object) -> object:
        """A `[target]` table validated by its kind's own settings class (without `kind`:
        this machine, as it always was); their errors keep their field (target.host)."""
        if not isinstance(value, dict):
            return value
        kind = _Kind.model_validate(value).kind
        return RUNNER_KINDS[kind].load_settings().model_validate({**value, "kind": kind})

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, value: object) -> object:
        """A `[runtime]` table validated by its backend's own settings class (without
        `backend`: ONNX Runtime, as it always was); their errors keep their field
        (runtime.workspace_mb)."""
        if not isinstance(value, dict):
            return value
        backend = _Backend.model_validate(value).backend
        settings = BACKENDS[backend].load_settings()
        return settings.model_validate({**value, "backend": backend})

    @model_validator(mode="after")
    def _coherent(self) -> HardwareProfile:
        problem = self.runtime.unsupported(self.precision, self.quantization.recipe)
        if problem:
            raise ValueError(problem)
        return self

    def resolved(self) -> dict:
        """Every setting, defaults filled in: what a measurement was taken under, and what a
        device reads (`device.settings`): the runtime has its backend's settings only."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Identity of the measurement conditions: anything that can change a number counts,
        and so does the name (two devices with the same settings are still two devices);
        the description does not."""
        d = self.resolved()
        d.pop("description")
        # Read over the flat table every target once was (targets.LEGACY_TARGET), without how
        # a device is reached (that does not change its numbers).
        d["target"] = hashed_target(self.target)
        d["runtime"] = hashed_runtime(self.runtime)  # likewise (runtime_settings.LEGACY_RUNTIME)
        for key in JUDGEMENT_POLICY:  # nor does how its numbers are judged
            d["measure"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def at_seq_len(self, seq_len: int) -> HardwareProfile:
        """This profile timing inputs of `seq_len` tokens: the workload of a model fine-tuned
        at that length. Renamed `<name>-seq<seq_len>` (a store keeps profiles apart by name
        too), so its measurements never mix with the original's; itself when it already
        times that length."""
        if seq_len == self.workload.seq_len:
            return self
        if not 0 < seq_len <= 512:  # Workload's own bounds
            raise InputError.bad_setting(
                "seq_len", f"{seq_len} tokens: a profile times 1 to 512 tokens an input"
            )
        workload = self.workload.model_copy(update={"seq_len": seq_len})
        return self.model_validate(
            {
                **self.model_dump(),
                "name": f"{self.name}-seq{seq_len}",
                "workload": workload.model_dump(),
            }
        )


def _error_line(source: str, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        msg = f"{msg} (got {err['input']!r})"
    return InputError(source, field, msg)


def parse_profile(data: dict, source: str) -> HardwareProfile:
    try:
        return HardwareProfile.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _error_line(source, exc) from None


PROFILES_PACKAGE = "bfnas.hw_profiles"


def profile_dir() -> Path:
    """Folder of the shipped profiles, the data package `bfnas.hw_profiles`: `hw_profiles/`
    of the repository (checkout or editable install), `bfnas/hw_profiles/` of a wheel."""
    # Wheels install unzipped, so the package is a real folder and a Path of it is safe.
    return Path(str(resources.files(PROFILES_PACKAGE)))


def shipped_profiles() -> dict[str, Path]:
    """Shipped profile names (file stems) and their files."""
    try:
        folder = profile_dir()
    except ModuleNotFoundError:  # an install without its data: no shipped names, no traceback
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    key = str(name_or_path)
    shipped = shipped_profiles()
    if key in shipped:
        path = shipped[key]
    elif key.endswith(".toml") or Path(key).is_file():
        path = Path(key)
    else:
        raise InputError.bad_setting(
            "hw",
            f"no profile named {key!r} (shipped: {', '.join(shipped)}; or give a .toml path)",
        )
    text = read_text_input(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), None, f"not valid TOML ({exc})") from None
    return parse_profile(data, str(path))
