"""`bfnas demo`: all of stage 2 on this machine, with a report at the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from bfnas.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_artifacts_arg,
    add_model_args,
    artifact_cache,
    command,
    console,
    print_json,
    space_and_supernet,
)
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir


def register(sub) -> None:
    p = command(
        sub,
        "demo",
        "both stages here: briefly distil the supernet, then profile subnets, fit the "
        "predictor, search under a budget for one-shot fidelity, verify on the device, write a "
        "report (what `make demo` runs)",
        "bfnas demo --checkpoint minilm --out bfnas-demo",
        cmd_demo,
    )
    add_model_args(p, default_space="minilm-l6")
    p.add_argument(
        "--hw", default="local-cpu-int8", help="INT8 profile to search for (default local-cpu-int8)"
    )
    p.add_argument(
        "--fp32-hw", default="local-cpu-fp32", help="FP32 profile the winner is compared on"
    )
    p.add_argument("--samples", type=int, default=60, help="subnets to profile (default 60)")
    p.add_argument(
        "--max-latency-ms", type=float, help="budget (default: the median measured latency)"
    )
    p.add_argument(
        "--verify", type=int, default=3, help="winners to measure on the device (default 3)"
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="stage 1: distillation steps of the supernet from --checkpoint before the search, "
        "which then maximizes one-shot fidelity to it (default 60 with --checkpoint; "
        "0, the default without: skip stage 1 and search for encoder params)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bfnas-demo", help="folder for the store, results and report")
    add_artifacts_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from bfnas.bench.hardware_profile import load_profile
    from bfnas.pipeline import DemoSettings, run_demo

    check_output_dir(args.out, "--out", holds=("demo.db",))
    check_output_dir(args.artifacts, "--artifacts")
    int8_profile, fp32_profile = load_profile(args.hw), load_profile(args.fp32_hw)
    for flag, prof, want in (("--hw", int8_profile, "int8"), ("--fp32-hw", fp32_profile, "fp32")):
        if prof.precision != want:
            raise InputError(
                flag, "precision", f"profile {prof.name} is {prof.precision}, not {want}"
            )
        if prof.target.kind != "local" or prof.runtime.backend != "onnxruntime":
            raise InputError(
                flag,
                "target",
                f"the demo runs ONNX Runtime on this machine; "
                f"{prof.name} is {prof.target.kind}/{prof.runtime.backend}",
            )
    if args.samples < 30:
        raise InputError("--samples", None, "the predictor needs at least 30 measured subnets")
    if args.verify < 1:
        raise InputError("--verify", None, "must be at least 1")
    if args.train_steps is None:
        args.train_steps = 60 if args.checkpoint else 0
    if args.train_steps < 0:
        raise InputError("--train-steps", None, "must be 0 or more")
    if args.train_steps and not args.checkpoint:
        raise InputError(
            "--train-steps",
            None,
            "stage 1 distils from a teacher: give --checkpoint (e.g. minilm), or --train-steps 0",
        )
    space, supernet = space_and_supernet(args)
    out = console(stderr=args.json)
    settings = DemoSettings(
        samples=args.samples, max_latency_ms=args.max_latency_ms, verify=args.verify, seed=args.seed
    )
    cache = artifact_cache(args.artifacts, seq_len=int8_profile.workload.seq_len)
    with ProgressDisplay(
        out,
        "bfnas demo",
        "starting",
        total=1.0,
        columns=("description", "bar", "elapsed"),
        transient=True,
    ) as progress:
        objective, stage1 = None, None
        if args.train_steps:
            from bfnas.pipeline import Stage1Settings, run_stage1

            # Stage 1 takes the first fifth of the bar, stage 2 the rest.
            s1 = run_stage1(
                args.checkpoint,
                space,
                Path(args.out) / "stage1",
                Stage1Settings(steps=args.train_steps, seed=args.seed),
                on_step=lambda step, f: progress.update(description=step, completed=f),
            )
            supernet, stage1 = s1["supernet"], s1["summary"]
            objective = ("oneshot", s1["scorer"])
        result = run_demo(
            space,
            supernet,
            cache,
            int8_profile,
            fp32_profile,
            Path(args.out),
            settings,
            on_step=lambda step, f: progress.update(
                description=step, completed=(0.2 + 0.8 * f) if stage1 else f
            ),
            objective=objective,
            on_message=lambda text: progress.message(f"[yellow]{escape(text)}[/]"),
        )
        result["stage1"] = stage1
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    return EXIT_OK if result["status"] == "ok" else EXIT_FAILED


def arch_text(arch: dict) -> str:
    from bfnas.models.space.subnet import SubnetConfig

    return str(SubnetConfig.from_dict(arch))


def _profiled_line(r: dict) -> str:
    c = r["profiled"]
    line = (
        f"profiled {c['measured']} subnets of {r['space']} on {r['profile']}: {c['trusted']} "
        f"trusted"
    )
    if c["not_trusted_because"]:
        line += (
            " (not: "
            + ", ".join(f"{n} {label}" for label, n in c["not_trusted_because"].items())
            + ")"
        )
    if c["rounds"] > 1:
        line += f", in {c['rounds']} rounds"
    if c["other_cores_median"] is not None:
        line += f"; other processes used {c['other_cores_median']:.1f} cores meanwhile"
    return line


def _print(out, r: dict) -> None:
    from rich.markup import escape

    s1 = r.get("stage1")
    if s1:
        before, after = s1["oneshot_before"], s1["oneshot_after"]
        out.print(
            f"stage 1: {s1['steps']} distillation steps ({s1['steps_per_s'] or 0:.2f} steps/s) "
            "into "
            f"{s1['checkpoint']}; one-shot fidelity of {len(before)} subnets "
            f"{sum(before) / len(before):.3f} -> {sum(after) / len(after):.3f}"
        )
        t = s1.get("torch_threads") or {}
        if t.get("default") and t["threads"] < t["default"]:
            out.print(
                f"  (trained on {t['threads']} of {t['default']} threads: other processes kept "
                f"the rest busy, {t['free_cores']:.1f} cores were free)"
            )
    out.print(escape(_profiled_line(r)))
    if "predictor" not in r:
        out.print(f"[red]{escape(r['message'])}[/]")
        out.print(f"report of what was measured: {r['report']}")
        return
    p, unit = r["predictor"], r["unit_text"]
    out.print(
        f"latencies below are {unit} unless marked raw: the median of the ratios to a fixed "
        "anchor model timed beside each run, times the anchor's usual time here (steadier "
        "than a raw median on a busy machine)"
    )
    out.print(
        f"predictor ({p['folds']}-fold CV on {p['rows']} rows): {p['within_10pct']:.1%} within 10 "
        "%, "
        f"{p['within_5pct']:.1%} within 5 %, Kendall tau {p['kendall_tau']:.3f}"
    )
    for v in r["verified"]:
        measured = "failed" if v["measured_ms"] is None else f"{v['measured_ms']:.3f} ms"
        flag = "" if v["within_budget"] else "  [red]over budget[/]"
        score = (
            f"one-shot {v['objective']:.3f}"
            if r["objective"] == "oneshot"
            else f"{v['objective'] / 1e6:.2f} M params"
        )
        out.print(
            f"  verified {arch_text(v['arch'])}: {score}, predicted "
            f"{v['predicted_ms']:.3f} ms, measured {measured}{flag}"
        )
    best = r["best"]
    if best is None:
        out.print(f"[red]no subnet predicted under {r['budget_ms']:.3f} ms ({unit})[/]")
    else:
        state = "within budget" if best["within_budget"] else "[red]OVER BUDGET[/]"
        score = (
            f"one-shot fidelity {best['objective']:.3f}"
            if r["objective"] == "oneshot"
            else f"{best['objective'] / 1e6:.2f} M encoder params"
        )
        used = (
            f", {best['measured_ms'] / r['budget_ms']:.0%} of the budget"
            if best["measured_ms"] is not None
            else ""
        )
        raw = f"; raw median {best['median_ms']:.3f} ms" if best.get("median_ms") else ""
        out.print(
            f"best under {r['budget_ms']:.3f} ms ({unit}): {arch_text(best['arch'])} ({score}), "
            f"measured {best['measured_ms']:.3f} ms{used} ({state}){raw}"
        )
    cmp = r.get("fp32_vs_int8")
    if cmp and cmp.get("speedup"):
        out.print(
            f"INT8 against FP32 ({cmp['fp32_profile']}), both raw medians on this device: "
            f"{cmp['int8_median_ms']:.3f} ms against {cmp['fp32_median_ms']:.3f} ms; INT8 is "
            f"{cmp['speedup']:.2f}x faster"
        )
    out.print(f"report: {r['report']}")
