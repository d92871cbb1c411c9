"""What could change a number: the machine, its load, and the software, read where it runs.

Nothing here imports torch: a worker on a device may not have it, and importing it would
start thread pools next to the session being timed.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "bfnas",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "numpy",
    "torch",
    "tensorrt",
    "pycuda",
)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


# Arm's own cores by their /proc/cpuinfo "CPU part" (implementer 0x41): an ARM kernel names no
# model, and these are the cores of the boards people measure (Pi 3/4/5, Jetson, phones).
ARM_CORES = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
}


def cpu_model() -> tuple[str, list[str]]:
    """CPU model name and the INT8-relevant ISA flags that /proc/cpuinfo lists. Read from
    files only: `platform.processor()` runs `uname`, which an emulated device (QEMU user
    mode) would take from the host."""
    model, flags, parts = platform.machine(), set(), []
    text = _read("/proc/cpuinfo") or ""
    arm = False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and value:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "CPU implementer":
            arm = value == "0x41"
        elif key == "CPU part" and arm and value in ARM_CORES and ARM_CORES[value] not in parts:
            parts.append(ARM_CORES[value])
    if parts and model == platform.machine():
        model = f"{' + '.join(parts)} ({model})"  # big.LITTLE boards list both kinds
    return model, [f for f in ISA_FLAGS if f in flags]


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment(threads: int | None = None, provider: str | None = None) -> dict:
    model, isa = cpu_model()
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": model,
        "isa": isa,
        "cores": os.cpu_count(),
        "affinity": affinity,
        "governor": governor,
        "cpu_khz": int(freq) if freq and freq.isdigit() else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions(),
        "threads": threads,
        "provider": provider,
    }


@dataclass
class _CpuSample:
    wall: float
    busy: float  # seconds of CPU the whole machine spent busy (all cores)
    steal: float
    own: float  # seconds of CPU this process spent


def _sample() -> _CpuSample:
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = steal = 0.0
    line = (_read("/proc/stat") or "").splitlines()[:1]
    if line and line[0].startswith("cpu "):
        v = [int(x) for x in line[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        steal = (v[7] if len(v) > 7 else 0) / hz
        busy = (sum(v[:8]) - idle) / hz - steal
    t = os.times()
    return _CpuSample(time.perf_counter(), busy, steal, t.user + t.system)


class CpuWatch:
    """How much CPU other processes (and the hypervisor, as steal) took while we measured.

    `other_cores` is the average number of cores other processes kept busy and `own_cores`
    the CPU this process got. They are recorded with every measurement; whether a
    measurement is trusted follows from its own numbers (`bench.jobs.measurement.distrust`), and
    `own_cores` below the threads asked for tells that the machine had no core free.
    """

    def __init__(self) -> None:
        self.start = _sample()

    def read(self) -> dict[str, float]:
        end = _sample()
        wall = max(end.wall - self.start.wall, 1e-9)
        other = (end.busy - self.start.busy) - (end.own - self.start.own)
        return {
            "other_cores": max(other, 0.0) / wall,
            # The CPU this process got: a CPU-bound timing loop that gets less than its
            # threads asked for was waiting for a core (the machine had none free).
            "own_cores": (end.own - self.start.own) / wall,
            "steal_cores": (end.steal - self.start.steal) / wall,
            "wall_s": wall,
        }
