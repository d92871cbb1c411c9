"""Export benchmark: per-step cost, INT8/FP32 latency per recipe, and INT8 MAC rate vs this
machine's INT8 GEMM ceiling.

    python benchmarks/export.py [--runs 100] [--repeats 3] [--out benchmarks/results]

Every latency is the median of >= 100 timed runs at one thread in a fresh worker process,
taken `--repeats` times interleaved across models; the table shows the median of those.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import publish

from bfnas.bench.device.environment import cpu_model
from bfnas.bench.hardware_profile import HardwareProfile, parse_profile
from bfnas.bench.runners.local import LocalRunner
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.deploy.recipes import RECIPES, get_recipe
from bfnas.models.nn.supernet import SuperBert, SupernetDims
from bfnas.models.space.subnet import SubnetConfig

SHAPES = [  # (layers, hidden, ffn); head size 64 as in BERT
    (2, 128, 512),
    (4, 384, 1536),
    (8, 768, 3072),
]
VARIANTS = [(name, fuse) for fuse in (False, True) for name in RECIPES]


def timing_profile(runs: int) -> HardwareProfile:
    """One thread, exactly `runs` timed runs after 10 warm-up runs, no anchor: the table
    compares models measured back to back, interleaved, so the ratio needs no anchor."""
    return parse_profile(
        {
            "name": "export-benchmark",
            "precision": "fp32",
            "runtime": {"intra_op_threads": 1, "inter_op_threads": 1},
            "measure": {
                "warmup_runs": 10,
                "warmup_seconds": 0,
                "min_runs": runs,
                "min_seconds": 0,
                "max_seconds": 1e-3,
                "anchor": False,
                "timeout_s": 900,
            },
        },
        "<benchmarks/export.py>",
    )


def gemm_ceiling(threads: int = 1, n: int = 1024, runs: int = 30) -> dict:
    """GMAC/s of one large u8 x s8 -> s32 MatMulInteger and of one FP32 MatMul in ORT."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def rate(
        op: str, a_type: int, b_type: int, out_type: int, a: np.ndarray, b: np.ndarray
    ) -> float:
        graph = helper.make_graph(
            [helper.make_node(op, ["A", "B"], ["Y"])],
            "gemm",
            [helper.make_tensor_value_info("A", a_type, [n, n])],
            [helper.make_tensor_value_info("Y", out_type, [n, n])],
            [helper.make_tensor("B", b_type, [n, n], b.tobytes(), raw=True)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        for _ in range(3):
            sess.run(None, {"A": a})
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"A": a})
            samples.append(time.perf_counter() - t)
        return n**3 / statistics.median(samples) / 1e9

    rng = np.random.default_rng(0)
    del onnx
    return {
        "int8_gmacs": rate(
            "MatMulInteger",
            TensorProto.UINT8,
            TensorProto.INT8,
            TensorProto.INT32,
            rng.integers(0, 255, (n, n), dtype=np.uint8),
            rng.integers(-127, 127, (n, n), dtype=np.int8),
        ),
        "fp32_gmacs": rate(
            "MatMul",
            TensorProto.FLOAT,
            TensorProto.FLOAT,
            TensorProto.FLOAT,
            rng.standard_normal((n, n), dtype=np.float32),
            rng.standard_normal((n, n), dtype=np.float32),
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--shapes", default="all", help="comma-separated indexes into 2x128,4x384,8x768"
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]

    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    model_name, isa = cpu_model()
    cpu = {"model": model_name, "machine": platform.machine(), "isa": isa}
    runner, profile = LocalRunner(), timing_profile(args.runs)
    console.print(
        f"CPU: {cpu['model']} ({cpu['machine']}), ISA: {', '.join(cpu['isa']) or 'none listed'}"
    )
    ceiling = gemm_ceiling()
    console.print(
        f"GEMM ceiling, 1 thread: int8 {ceiling['int8_gmacs']:.1f} GMAC/s, "
        f"fp32 {ceiling['fp32_gmacs']:.1f} GMAC/s"
    )
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bfnas-bench-") as tmp,
        Progress(console=console) as progress,
    ):
        cache = ArtifactCache(Path(tmp))
        total = len(shapes) * (len(VARIANTS) + 1) * (1 + args.repeats)
        task = progress.add_task("export + time", total=total)
        for layers, hidden, ffn in shapes:
            cfg = SubnetConfig.uniform(layers, hidden, hidden // 64, hidden, ffn)
            supernet = SuperBert.random(SupernetDims(layers, hidden, hidden, ffn), seed=0)
            arts = {("fp32", False): cache.build(supernet, cfg, "fp32")}
            progress.advance(task)
            for name, fuse in VARIANTS:
                progress.update(
                    task, description=f"{layers}x{hidden} {name}{' fused' if fuse else ''}"
                )
                arts[(name, fuse)] = cache.build(supernet, cfg, "int8", get_recipe(name, fuse))
                progress.advance(task)
            medians: dict = {k: [] for k in arts}
            session_ms: dict = {k: [] for k in arts}
            for _ in range(args.repeats):  # interleaved, so slow drift hits every model alike
                for k, art in arts.items():
                    progress.update(task, description=f"{layers}x{hidden} timing {k[0]}")
                    m = runner.run(str(art.path), art.sha256, profile)
                    if not m.ok:
                        console.print(f"[red]{k}: {m.reason}")
                        continue
                    medians[k].append(m.median_ms)
                    session_ms[k].append(m.session_ms)
                    progress.advance(task)
            fp32_ms = statistics.median(medians[("fp32", False)])
            macs = cfg.total_macs(128)
            for k, art in arts.items():
                ms = statistics.median(medians[k])
                rows.append(
                    {
                        "shape": f"{layers}x{hidden}",
                        "ffn": ffn,
                        "variant": k[0] + (" +fuse" if k[1] else ""),
                        "recipe": k[0],
                        "fuse": k[1],
                        "median_ms": ms,
                        "repeat_medians_ms": medians[k],
                        "speedup_vs_fp32": fp32_ms / ms,
                        "cosine": art.fidelity["cosine"],
                        "fidelity_passed": art.fidelity["passed"],
                        "seconds": {
                            **art.seconds,
                            "session": statistics.median(session_ms[k]) / 1e3,
                        },
                        "gmacs": macs / (ms / 1e3) / 1e9,
                        "fraction_of_ceiling": macs
                        / (ms / 1e3)
                        / 1e9
                        / (ceiling["fp32_gmacs"] if k[0] == "fp32" else ceiling["int8_gmacs"]),
                    }
                )

    lines = [
        f"CPU: {cpu['model']} ({cpu['machine']}; {', '.join(cpu['isa'])}); 1 thread, batch 1, seq "
        "128; "
        f"median of {args.repeats} fresh-process medians of {args.runs} runs",
        f"GEMM ceiling (ORT, 1024^3, 1 thread): int8 {ceiling['int8_gmacs']:.1f} GMAC/s, "
        f"fp32 {ceiling['fp32_gmacs']:.1f} GMAC/s",
        "",
        "| shape | variant | median ms | vs FP32 | cosine | GMAC/s | of ceiling | export s | "
        "optimize s | quantize s | session s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['shape']} | {r['variant']} | {r['median_ms']:.2f} | "
            f"{r['speedup_vs_fp32']:.2f}x | "
            f"{r['cosine']:.5f} | {r['gmacs']:.1f} | {r['fraction_of_ceiling']:.0%} | "
            f"{s.get('export', 0):.2f} | {s.get('optimize', 0):.2f} | {s.get('quantize', 0):.2f} | "
            f"{s['session']:.2f} |"
        )
    # The default CPU recipe is the fastest INT8 variant that keeps fidelity at the largest shape.
    largest = rows[-1]["shape"]
    ok = [
        r for r in rows if r["shape"] == largest and r["recipe"] != "fp32" and r["fidelity_passed"]
    ]
    best = max(ok, key=lambda r: r["speedup_vs_fp32"])
    lines += [
        "",
        f"Fastest INT8 recipe keeping fidelity at {largest}: {best['variant']} "
        f"({best['speedup_vs_fp32']:.2f}x vs FP32)",
    ]
    publish(args.out, "export", lines, {"cpu": cpu, "ceiling": ceiling, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
