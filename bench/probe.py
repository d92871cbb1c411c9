"""`bfnas hw check`: is a profile usable here? Each check names exactly what is missing."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass

from bfnas.bench.environment import cpu_model
from bfnas.bench.gpu import gpu_checks
from bfnas.bench.profile import HardwareProfile
from bfnas.bench.provider_options import GPU_PROVIDERS


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def probe(profile: HardwareProfile) -> list[Check]:
    checks: list[Check] = []
    target = profile.target
    if target.kind != "local":
        checks.append(Check("target", False,
                            f"{target.kind} targets are probed by the remote runners, which this "
                            "version does not have yet"))
        return checks
    model, isa = cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    checks.append(Check("cpu", True, f"{model}; {cores} usable cores; ISA: {', '.join(isa) or 'n/a'}"))
    rt = profile.runtime
    threads = rt.intra_op_threads
    if rt.cpu_affinity:
        usable = set(os.sched_getaffinity(0))
        bad = [c for c in rt.cpu_affinity if c not in usable]
        checks.append(Check("affinity", not bad,
                            f"cores {bad} are not usable here" if bad else f"cores {rt.cpu_affinity}"))
        cores = len(rt.cpu_affinity)
    checks.append(Check("threads", threads <= (cores or 1),
                        f"{threads} intra-op threads on {cores} cores"
                        + ("" if threads <= (cores or 1) else ": oversubscribed, timings would be wrong")))
    if rt.backend == "onnxruntime":
        if not _has("onnxruntime"):
            checks.append(Check("onnxruntime", False, "onnxruntime is not installed"))
            return checks
        import onnxruntime as ort

        available = ort.get_available_providers()
        checks.append(Check("onnxruntime", True, f"onnxruntime {ort.__version__}; providers: "
                                                 f"{', '.join(available)}"))
        for p in rt.providers:
            checks.append(Check(f"provider {p}", p in available,
                                "available" if p in available else
                                f"not in this onnxruntime build (has {', '.join(available)})"))
        if any(p in GPU_PROVIDERS for p in rt.providers):
            checks.extend(Check(*row) for row in gpu_checks(need_modules=False))
    else:
        checks.extend(Check(*row) for row in gpu_checks(need_modules=True))
    return checks
