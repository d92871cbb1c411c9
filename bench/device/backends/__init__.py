"""Inference backends a worker times a model with, by `runtime.backend`: ONNX Runtime (`ort`,
with its provider options in `ort_options`) and TensorRT (`tensorrt/`).

`BACKENDS` is the one place a backend is registered. Its code is named as "module:function"
relative to this package and imported when a profile uses it, so a device with only ONNX
Runtime never imports tensorrt or pycuda. This module imports nothing outside the device
package: the profile schema (`bench.hardware_profile`) reads the registered names from here
to validate a profile, and the device package is shipped to devices without bfnas. Each
backend's `[runtime]` settings class is the host's (`bench.runtime_settings`, pydantic): named
here as an absolute "module:Class" string that only the host loads, never imported here.

A backend's `make_infer(model_path, profile)` returns (its inference function, what really
runs it, details). The inference function takes no argument and runs the model once on
inputs it prepared; the timing loop (`bench.device.timing.time_runs`) times it, or takes the
`DeviceTime` it returns when the backend clocks itself on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..lazy_import import load_entry, registered

# typing.Callable, not collections.abc's: subscripted at run time, and a device may run 3.8.
Infer = Callable[[], object]


@dataclass(frozen=True)
class Backend:
    """How a worker uses one backend. Its code entries are ".module:function", relative to
    this package (`backends`); `preload` names modules the same way, or absolute ones;
    `settings` is an absolute entry on the host."""

    # (model_path: str, profile) -> (Infer, what really runs it, details)
    make_infer: str
    # (profile) -> list of `bench.device.probe.Check`: can this machine run the profile?
    checks: str
    # "bfnas.module:Class": the backend's `[runtime]` settings, a
    # `bench.runtime_settings.RuntimeSettings` that validates a profile. Loaded on the host
    # only: a device reads the settings it is sent, resolved (`device.settings`).
    settings: str
    # Modules the fork server imports once, before it forks workers (`device.forkserver`).
    # Only what is safe to hold across a fork: nothing that starts CUDA.
    preload: tuple[str, ...] = ()
    # With a name, the checks of `runtime.backend` that fail are refused together, as
    # "<name> is not available (every missing piece)": one fix-it list, not the first gap.
    unavailable_as: str | None = None

    def load_make_infer(self) -> Callable[..., tuple[Infer, str, dict]]:
        return load_entry(self.make_infer, __name__)

    def load_checks(self) -> Callable[..., list[Any]]:
        return load_entry(self.checks, __name__)

    def load_settings(self) -> type:
        return load_entry(self.settings)


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend(
        make_infer=".ort:make_infer",
        checks="..probe:onnxruntime_checks",
        settings="bfnas.bench.runtime_settings:OnnxRuntimeSettings",
        preload=("onnxruntime", ".ort"),
    ),
    "tensorrt": Backend(
        make_infer=".tensorrt.harness:make_infer",
        checks="..probe:tensorrt_checks",
        settings="bfnas.bench.runtime_settings:TensorRTSettings",
        unavailable_as="TensorRT",
    ),
}


def registered_backends() -> str:
    """The registered names, for the line that refuses an unknown one."""
    return ", ".join(BACKENDS)


def backend_named(name: str) -> Backend:
    """The backend registered as `name`; ValueError naming the registered ones."""
    return registered(BACKENDS, name, "backend")
