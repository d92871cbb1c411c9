"""What this machine has for NVIDIA GPU work, read without needing any of it.

`bfnas hw check` and the TensorRT harness both ask the same questions: is there an NVIDIA
device, which driver runs it, can `tensorrt` and `pycuda` be imported. Each answer names
exactly what is missing, so a user on a CPU-only host reads "no /dev/nvidia0", not an
import traceback. Nothing here imports tensorrt or pycuda unless asked to, and a failed
import is reported, never raised.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEVICE_NODE = Path("/dev/nvidia0")
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class Module:
    """Whether a Python module can be imported here, and if not, why."""

    name: str
    ok: bool
    version: str | None
    detail: str


def gpu_device(node: Path = DEVICE_NODE) -> tuple[bool, str]:
    """(found, what was found or what is missing). The device node is what the CUDA driver
    opens; without it no library can reach a GPU, whatever is installed."""
    if node.exists():
        return True, f"found {node}"
    return False, f"no NVIDIA GPU: {node} missing"


def gpu_count(dev: Path = DEVICE_NODE.parent) -> int:
    """How many NVIDIA GPUs CUDA would number here: one /dev/nvidiaN node each, fewer when
    CUDA_VISIBLE_DEVICES names fewer (0: none, or nothing tells)."""
    import os
    import re

    try:
        nodes = sum(1 for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        nodes = min(nodes, len([v for v in visible.split(",") if v.strip()]))
    return nodes


def driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """The kernel driver's version ("NVRM version: ... 550.54.14 ..."), or None.

    Read from /proc so that it works before (and without) any CUDA library."""
    try:
        first = path.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    for token in first.split():
        parts = token.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return token
    return first.strip() or None


def module_status(name: str, import_name: str | None = None, pip_name: str | None = None) -> Module:
    """Try to import a module. tensorrt and pycuda can be installed and still fail to import
    (no libcuda.so, no GPU driver), so "installed" is not enough: this really imports."""
    import_name = import_name or name
    pip_name = pip_name or name
    if importlib.util.find_spec(import_name.split(".")[0]) is None:
        return Module(
            name,
            False,
            None,
            f"{name} not importable: python package {pip_name} is not installed "
            "(pip install 'bfnas[tensorrt]')",
        )
    try:
        module = importlib.import_module(import_name)
    except Exception as exc:  # ImportError, OSError from a missing shared library, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Module(name, False, None, f"{name} installed but not importable: {first}")
    version = getattr(module, "__version__", None)
    if version is None:
        top = importlib.import_module(import_name.split(".")[0])
        version = getattr(top, "VERSION_TEXT", None) or getattr(top, "__version__", None)
    return Module(
        name,
        True,
        str(version) if version else None,
        f"{name} {version}" if version else f"{name} importable",
    )


def tensorrt_missing() -> list[str]:
    """What the TensorRT harness needs and this machine lacks, one line each (empty: usable).

    The GPU is checked first and the modules are still tried without it: a user fixing a
    machine wants the whole list at once."""
    missing = []
    ok, detail = gpu_device()
    if not ok:
        missing.append(detail)
    for name, import_name in (("tensorrt", "tensorrt"), ("pycuda", "pycuda.driver")):
        status = module_status(name, import_name)
        if not status.ok:
            missing.append(status.detail)
    return missing


def gpu_checks(need_modules: bool) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) rows for `bfnas hw check`: the GPU device, its kernel driver when
    there is a GPU, and, for the TensorRT backend (`need_modules`), tensorrt and pycuda."""
    rows = []
    ok, detail = gpu_device()
    rows.append(("nvidia gpu", ok, detail))
    if ok:
        version = driver_version()
        rows.append(
            (
                "cuda driver",
                version is not None,
                f"NVIDIA driver {version}"
                if version
                else "GPU device present but no NVIDIA kernel driver "
                f"({DRIVER_VERSION_FILE} missing)",
            )
        )
    if need_modules:
        for name, import_name in (("tensorrt", "tensorrt"), ("pycuda", "pycuda.driver")):
            status = module_status(name, import_name)
            rows.append((name, status.ok, status.detail))
    return rows
