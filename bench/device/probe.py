"""`bfnas hw check` on the device itself: is a profile usable here? Each check names exactly
what is missing. `bench.runners.usable` runs these checks wherever a runner measures (here,
over SSH, in a Ray actor) and turns a failure into the one error a job raises."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass

from .backends import backend_named
from .backends.ort_options import GPU_PROVIDERS
from .environment import cpu_model
from .gpu import gpu_checks, gpu_count
from .settings import DeviceSettings

# The oldest Python the device package runs on (JetPack 5's is 3.8); a test parses every
# file of the package at this version.
OLDEST_PYTHON = (3, 8)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # The profile field a failure blames (None: not the profile's fault, e.g. a connection).
    field: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Check:
        """A check as a device sent it (over SSH or from a Ray actor); a device running
        another bfnas version may send fewer or more keys."""
        return cls(
            str(data.get("name", "?")),
            bool(data.get("ok")),
            str(data.get("detail", "")),
            data.get("field"),
        )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def python_check() -> Check:
    """This Python, and whether the device package runs on it."""
    ok = sys.version_info[:2] >= OLDEST_PYTHON
    version = ".".join(map(str, sys.version_info[:3]))
    oldest = ".".join(map(str, OLDEST_PYTHON))
    return Check(
        "python",
        ok,
        f"Python {version} ({sys.executable or 'no executable path'})"
        + ("" if ok else f": bfnas's device code needs Python {oldest} or newer"),
        "target.python",
    )


def module_check(name: str, pip_name: str | None = None) -> Check:
    """Whether `name` is installed for this Python (not imported: a check stays cheap)."""
    if not _has(name):
        return Check(
            name,
            False,
            f"{name} is not installed for this Python (pip install {pip_name or name})",
            "target.python",
        )
    from importlib import metadata

    try:
        version = metadata.version(pip_name or name)
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    return Check(name, True, f"{name} {version}")


def local_checks(profile: DeviceSettings) -> list[Check]:
    """The checks of a profile on this machine, whatever its target says: the CPU, the
    cores and threads asked for, then the checks its backend registers
    (`bench.device.backends`)."""
    checks = [python_check(), module_check("numpy")]
    model, isa = cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    checks.append(
        Check("cpu", True, f"{model}; {cores} usable cores; ISA: {', '.join(isa) or 'n/a'}")
    )
    rt = profile.runtime
    threads = rt.intra_op_threads
    if rt.cpu_affinity:
        usable = set(os.sched_getaffinity(0))
        bad = [c for c in rt.cpu_affinity if c not in usable]
        checks.append(
            Check(
                "affinity",
                not bad,
                f"cores {bad} are not among this machine's usable cores ({_cores(usable)})"
                if bad
                else f"cores {rt.cpu_affinity}",
                "runtime.cpu_affinity",
            )
        )
        cores = len(rt.cpu_affinity)
    checks.append(
        Check(
            "threads",
            threads <= (cores or 1),
            f"{threads} intra-op threads on {cores} cores"
            + ("" if threads <= (cores or 1) else ": oversubscribed, timings would be wrong"),
            "runtime.intra_op_threads",
        )
    )
    checks.extend(backend_named(rt.backend).load_checks()(profile))
    return checks


def onnxruntime_checks(profile: DeviceSettings) -> list[Check]:
    """ONNX Runtime's part of the checks: installed, every provider in this build, and the
    GPU (with the device ids asked for) when a provider runs on one."""
    if not _has("onnxruntime"):
        return [
            Check(
                "onnxruntime",
                False,
                "onnxruntime is not installed for this Python (pip install onnxruntime)",
                "runtime.backend",
            )
        ]
    import onnxruntime as ort

    rt = profile.runtime
    available = ort.get_available_providers()
    checks = [
        Check(
            "onnxruntime",
            True,
            f"onnxruntime {ort.__version__}; providers: {', '.join(available)}",
        )
    ]
    for p in rt.providers:
        checks.append(
            Check(
                f"provider {p}",
                p in available,
                "available"
                if p in available
                else f"not in this onnxruntime build (has {', '.join(available)})",
                "runtime.providers",
            )
        )
    gpu = [i for i, p in enumerate(rt.providers) if p in GPU_PROVIDERS]
    if gpu:
        checks.extend(Check(*row, "runtime.providers") for row in gpu_checks(need_modules=False))
        for i in gpu:
            options = rt.provider_options[i] if rt.provider_options else {}
            checks.extend(
                _device_id(
                    int(options.get("device_id", 0)), f"runtime.provider_options.{i}.device_id"
                )
            )
    return checks


def tensorrt_checks(profile: DeviceSettings) -> list[Check]:
    """TensorRT's part of the checks: a GPU with its driver, the tensorrt and pycuda modules,
    and the device id asked for."""
    rt = profile.runtime
    checks = [Check(*row, "runtime.backend") for row in gpu_checks(need_modules=True)]
    # The harness reads the ONNX graph (its Q/DQ nodes, shapes) before TensorRT parses it.
    onnx = module_check("onnx")
    checks.append(Check(onnx.name, onnx.ok, onnx.detail, "runtime.backend"))
    # Always sent for this backend, defaults filled in (bench.runtime_settings).
    checks.extend(_device_id(rt.tensorrt.device_id, "runtime.tensorrt.device_id"))
    return checks


def _device_id(device_id: int, field: str) -> list[Check]:
    """A GPU index the machine has (CUDA numbers the visible GPUs 0, 1, ...); nothing to say
    without a GPU (the GPU check fails already)."""
    count = gpu_count()
    if not count:
        return []
    ok = device_id < count
    return [
        Check(
            "gpu device_id",
            ok,
            f"device {device_id} of {count} visible GPU(s)"
            + ("" if ok else f": there is no GPU {device_id} here (0-{count - 1})"),
            field,
        )
    ]


def _cores(cores: set[int]) -> str:
    """{0, 1, 2, 5} -> "0-2, 5": a 128-core machine's list stays short."""
    spans: list[str] = []
    for c in sorted(cores):
        if spans and spans[-1].split("-")[-1] == str(c - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{c}"
        else:
            spans.append(str(c))
    return ", ".join(spans)


def main(argv: list[str] | None = None) -> int:
    """`probe --json -`: what a remote runner calls on the device (through the shipped device
    package, or `python -m bfnas.bench.device probe` where bfnas is installed); the profile
    (resolved JSON) on stdin, the local checks as one JSON line on stdout."""
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(
        prog="probe",
        description="Check a profile on this machine (what a device runs for `bfnas hw check`).",
        epilog="example:\n  bfnas hw show local-cpu-int8 --json | "
        "python -m bfnas.bench.device probe --json -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", required=True, help="print one JSON line")
    p.add_argument("profile", help="resolved profile JSON file, or - for standard input")
    a = p.parse_args(argv)
    text = sys.stdin.read() if a.profile == "-" else Path(a.profile).read_text()
    profile = DeviceSettings(json.loads(text))
    print(json.dumps({"checks": [c.to_dict() for c in local_checks(profile)]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
