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
    """Is the profile usable? Local targets are checked here; SSH devices run this same
    check on the device (through the device's Python); Ray devices in one of their actors."""
    kind = profile.target.kind
    if kind == "ssh":
        from bfnas.bench.ssh_runner import SshRunner, remote_probe

        runner = SshRunner(profile.target, retries=0)
        try:
            return [Check(**c) for c in remote_probe(runner, profile)]
        finally:
            runner.close()
    if kind == "ray":
        if not _has("ray"):
            return [Check("ray", False, "python package ray is not installed (pip install 'bfnas[ray]')")]
        from bfnas.bench.ray_runner import ray_probe

        return [Check(**c) for c in ray_probe(profile)]
    return local_checks(profile)


def local_checks(profile: HardwareProfile) -> list[Check]:
    """The checks of a profile on this machine, whatever its target says."""
    checks: list[Check] = []
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


def main(argv: list[str] | None = None) -> int:
    """`python -m bfnas.bench.probe --json -`: what a remote runner calls on the device; the
    profile (resolved JSON) on stdin, the local checks as one JSON line on stdout."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from bfnas import __version__

    p = argparse.ArgumentParser(prog="python -m bfnas.bench.probe",
                                description="Check a profile on this machine (what a device runs for "
                                            "`bfnas hw check`).",
                                epilog="example:\n  bfnas hw show local-cpu-int8 --json | "
                                       "python -m bfnas.bench.probe --json -",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", required=True, help="print one JSON line")
    p.add_argument("profile", help="resolved profile JSON file, or - for standard input")
    a = p.parse_args(argv)
    text = sys.stdin.read() if a.profile == "-" else Path(a.profile).read_text()
    data = {k: v for k, v in json.loads(text).items() if k not in ("hash", "source")}
    profile = HardwareProfile.model_validate(data)
    print(json.dumps({"bfnas": __version__, "checks": [c.to_dict() for c in local_checks(profile)]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
