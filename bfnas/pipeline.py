"""The jobs that tie the stages together. For now: the demo (sample, export, quantize, time)."""

from __future__ import annotations

import random
from typing import Any

from bfnas.bench.measure import measure_artifact
from bfnas.bench.profile import HardwareProfile
from bfnas.bench.runner import LocalRunner
from bfnas.models.artifact import ArtifactCache
from bfnas.models.quantize import get_recipe
from bfnas.models.space import SearchSpace
from bfnas.models.supernet import SuperBert


def run_demo(
    space: SearchSpace,
    supernet: SuperBert,
    cache: ArtifactCache,
    seed: int,
    int8_profile: HardwareProfile,
    fp32_profile: HardwareProfile,
    console: Any | None = None,
) -> dict[str, Any]:
    """Sample one subnet, export it as FP32 and INT8, time each under its profile in a
    fresh worker process, and report the speed-up and the INT8 model's fidelity."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    q = int8_profile.quantization
    recipe = get_recipe(q.recipe, q.fuse, q.calibration_samples)
    cfg = space.sample(random.Random(seed))
    steps = [
        "export FP32",
        f"quantize INT8 ({recipe.name})",
        f"time FP32 ({fp32_profile.name})",
        f"time INT8 ({int8_profile.name})",
    ]
    out: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, disable=console is None, transient=True,
    ) as progress:
        task = progress.add_task(steps[0], total=len(steps))
        fp32 = cache.build(supernet, cfg, "fp32")
        progress.update(task, advance=1, description=steps[1])
        int8 = cache.build(supernet, cfg, "int8", recipe)
        progress.update(task, advance=1, description=steps[2])
        runner = LocalRunner()
        out["fp32"] = measure_artifact(runner, str(fp32.path), fp32.sha256, fp32_profile)
        progress.update(task, advance=1, description=steps[3])
        out["int8"] = measure_artifact(runner, str(int8.path), int8.sha256, int8_profile)
        progress.update(task, advance=1)
    ok = all(out[k]["status"] in ("ok", "unstable") for k in ("fp32", "int8"))
    result: dict[str, Any] = {
        "status": "ok" if ok else "failed",
        "space": space.name,
        "supernet": supernet.source,
        "arch": cfg.to_dict(),
        "arch_key": cfg.key(),
        "params": cfg.params(),
        "macs": cfg.total_macs(128),
        "recipe": recipe.name,
        "profiles": {"fp32": fp32_profile.name, "int8": int8_profile.name},
        "fidelity": int8.fidelity,
        "artifacts": {"fp32": str(fp32.path), "int8": str(int8.path)},
    }
    for name in ("fp32", "int8"):
        m = out[name]
        result[name] = {k: m.get(k) for k in ("status", "median_ms", "p90_ms", "cov", "runs",
                                                   "median_rel_ci", "reason")
                        if k in m}
    if ok:
        result["speedup"] = out["fp32"]["median_ms"] / out["int8"]["median_ms"]
    if console is not None:
        _print_demo(console, result)
    return result


def _print_demo(console: Any, r: dict[str, Any]) -> None:
    from rich.table import Table

    src = r["supernet"]
    weights = src.get("path", f"random (seed {src.get('seed')})")
    table = Table(title=f"{r['space']} subnet {r['arch_key']}", show_header=False)
    table.add_row("weights", str(weights))
    table.add_row("architecture", str(r["arch"]))
    table.add_row("params / MACs@128", f"{r['params'] / 1e6:.2f} M / {r['macs'] / 1e9:.3f} G")
    for name in ("fp32", "int8"):
        m = r[name]
        if m["status"] != "failed":
            flag = "" if m["status"] == "ok" else f" [{m['status']}: {m.get('reason')}]"
            table.add_row(f"{name} median ({r['profiles'][name]})",
                          f"{m['median_ms']:.2f} ms (95% CI ±{m['median_rel_ci']:.1%}, "
                          f"{m['runs']} runs){flag}")
        else:
            table.add_row(f"{name}", f"failed: {m.get('reason')}")
    if "speedup" in r:
        table.add_row(f"INT8 speed-up ({r['recipe']})", f"{r['speedup']:.2f}x")
    f = r["fidelity"]
    table.add_row("INT8 fidelity", f"cosine {f['cosine']:.5f} ({'ok' if f['passed'] else 'FAILED'})")
    console.print(table)
