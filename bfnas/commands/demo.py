"""`bfnas demo`: all of stage 2 on this machine, with a report at the end."""

from __future__ import annotations

import argparse
import dataclasses
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
        "both stages here: briefly distil the supernet and fine-tune it on the offline task, "
        "then profile subnets, fit the predictor, search under a budget for task accuracy, "
        "verify on the device, write a report and a model folder to ship (what `make demo` "
        "runs)",
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
    p.add_argument(
        "--task-steps",
        type=int,
        default=80,
        help="after stage 1: sandwich steps fine-tuning the supernet on the offline task, "
        "whose one-shot accuracy the search then maximizes; the winner is fine-tuned into a "
        "model folder (default 80; 0: search for one-shot fidelity, no model)",
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
    if args.task_steps < 0:
        raise InputError("--task-steps", None, "must be 0 or more")
    if not args.train_steps:
        args.task_steps = 0  # the task stage fine-tunes stage 1's supernet
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
    if args.task_steps:
        # One-shot task accuracy costs forward passes over dev per new subnet (CKA and params
        # cost next to nothing): a smaller search keeps the demo to minutes.
        settings = dataclasses.replace(settings, population=30, generations=10)
    cache = artifact_cache(args.artifacts, seq_len=int8_profile.workload.seq_len)
    with ProgressDisplay(
        out,
        "bfnas demo",
        "starting",
        total=1.0,
        columns=("description", "bar", "elapsed"),
        transient=True,
    ) as progress:
        objective, stage1, task_stage = None, None, None
        # Stage 1 takes the first fifth of the bar, the task stage the next tenth, stage 2
        # (and the model) the rest.
        start = 0.0
        if args.train_steps:
            from bfnas.pipeline import Stage1Settings, run_stage1

            s1 = run_stage1(
                args.checkpoint,
                space,
                Path(args.out) / "stage1",
                Stage1Settings(steps=args.train_steps, seed=args.seed),
                on_step=lambda step, f: progress.update(description=step, completed=0.2 * f),
            )
            supernet, stage1 = s1["supernet"], s1["summary"]
            objective, start = ("oneshot", s1["scorer"]), 0.2
        if args.task_steps:
            from bfnas.pipeline import TaskStageSettings, run_task_stage

            ts = run_task_stage(
                Path(args.out) / "stage1" / "supernet",
                space,
                Path(args.out),
                TaskStageSettings(steps=args.task_steps, seed=args.seed),
                on_step=lambda step, f: progress.update(
                    description=step, completed=start + 0.1 * f
                ),
            )
            task_stage = ts["summary"]
            objective, start = ("task", ts["scorer"]), start + 0.1
        end = 0.95 if task_stage else 1.0  # the model folder is the last step
        result = run_demo(
            space,
            supernet,
            cache,
            int8_profile,
            fp32_profile,
            Path(args.out),
            settings,
            on_step=lambda step, f: progress.update(
                description=step, completed=start + (end - start) * f
            ),
            objective=objective,
            on_message=lambda text: progress.message(f"[yellow]{escape(text)}[/]"),
        )
        result["stage1"], result["task_stage"] = stage1, task_stage
        if task_stage and result["status"] == "ok":
            progress.update(description="fine-tuning the winner into a model folder")
            result["model"] = _model_folder(args, result, task_stage, int8_profile)
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    return EXIT_OK if result["status"] == "ok" else EXIT_FAILED


def _model_folder(args: argparse.Namespace, result: dict, task_stage: dict, profile) -> dict:
    """The winner fine-tuned from the task supernet into `out/model` (what `bfnas task
    train` writes): the card's summary."""
    from bfnas.models.space.subnet import SubnetConfig
    from bfnas.models.train.finetune import FinetuneSettings
    from bfnas.task_model import train_task_model

    card = train_task_model(
        task_stage["task_supernet"],
        SubnetConfig.from_dict(result["best"]["arch"]),
        task_stage["task"],
        profile,
        Path(args.out) / "model",
        settings=FinetuneSettings(epochs=1, max_len=64, lr=2e-4, seed=args.seed),
        space=args.space,
        artifacts=args.artifacts,
    )
    return {"folder": str(Path(args.out) / "model"), "card": card}


# How the demo prints a subnet's score, by the objective the search maximized.
SCORE_TEXT = {
    "params": lambda v: f"{v / 1e6:.2f} M encoder params",
    "oneshot": lambda v: f"one-shot fidelity {v:.3f}",
    "task": lambda v: f"one-shot dev accuracy {v:.1%}",
}


def _model_line(folder: str, card: dict) -> str:
    a, int8 = card["accuracy"], card["latency"]["int8"]
    ms = f", INT8 raw median {int8['median_ms']:.3f} ms" if int8.get("median_ms") else ""
    return (
        f"model to ship in {folder}: dev accuracy FP32 {a['fp32_onnx']:.1%}, INT8 "
        f"{a['int8_onnx']:.1%} ({a['int8_minus_fp32_points']:+.1f} points){ms}; card "
        f"{folder}/README.md"
    )


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
        score = SCORE_TEXT[r["objective"]](v["objective"])
        out.print(
            f"  verified {arch_text(v['arch'])}: {score}, predicted "
            f"{v['predicted_ms']:.3f} ms, measured {measured}{flag}"
        )
    best = r["best"]
    if best is None:
        out.print(f"[red]no subnet predicted under {r['budget_ms']:.3f} ms ({unit})[/]")
    else:
        state = "within budget" if best["within_budget"] else "[red]OVER BUDGET[/]"
        score = SCORE_TEXT[r["objective"]](best["objective"])
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
    model = r.get("model")
    if model:
        card = model["card"]
        out.print(escape(_model_line(model["folder"], card)))
        out.print(
            f"  try it: bfnas task predict --model {model['folder']} --text 'Close the socket.'"
        )
