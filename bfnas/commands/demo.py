"""`bfnas demo`: all of stage 2 on this machine, with a report at the end."""

from __future__ import annotations

import argparse
import math
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
        "both stages here: briefly distil the supernet, profile subnets at the task's length, "
        "fine-tune a few into an accuracy predictor, search under a budget for the most "
        "accurate subnet, prove it on the device and by fine-tunes over seeds against the "
        "hand-scaled MiniLM and the params winner, write a report and a model folder to "
        "ship (what `make demo` runs)",
        "bfnas demo --checkpoint minilm --out bfnas-demo\n"
        "  bfnas demo --checkpoint minilm --task-dir my-glue-task/ --out my-demo --json",
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
        "--max-latency-ms",
        type=float,
        help="budget, in the latency predictor's unit (default: a third of the largest "
        "subnet's measured latency; the median measured latency without fine-tunes)",
    )
    p.add_argument(
        "--verify", type=int, default=2, help="winners to prove on the device (default 2)"
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="stage 1: distillation steps of the supernet from --checkpoint (default 60 with "
        "--checkpoint; 0, the default without: skip stage 1 and search for encoder params)",
    )
    p.add_argument(
        "--task-dir",
        help="GLUE-format task folder (train.tsv, dev.tsv) to search for (default: the "
        "offline task at a demo's size, made in OUT/task)",
    )
    p.add_argument(
        "--protocol",
        default="demo",
        help="fine-tune protocol of every accuracy (`bfnas accuracy protocols`; default demo)",
    )
    p.add_argument(
        "--finetunes",
        type=int,
        default=8,
        help="subnets fine-tuned (one seed each) for the accuracy predictor (default 8; 0: no "
        "accuracy half, search for one-shot fidelity to the teacher)",
    )
    p.add_argument(
        "--seeds", default="0,1,2", help="seeds of every proving fine-tune (default 0,1,2)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="fine-tunes at once, each its own process (default 2, at most the free cores)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bfnas-demo", help="folder for the stores, report and model")
    add_artifacts_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


BUDGET_SHARE = 1 / 3


def _check_profiles(args: argparse.Namespace):
    from bfnas.bench.hardware_profile import load_profile

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
    return int8_profile, fp32_profile


def _proven_settings(args: argparse.Namespace):
    """What the accuracy half runs with, checked before anything starts; None without one."""
    from bfnas.commands.accuracy import check_workers, parse_seeds
    from bfnas.proven_search import ProvenSearchSettings

    if args.finetunes < 0:
        raise InputError("--finetunes", None, "must be 0 or more")
    if not args.finetunes or not args.train_steps:
        if args.task_dir:
            raise InputError(
                "--task-dir",
                None,
                "a task is fine-tuned from stage 1's supernet: give --checkpoint and "
                "--finetunes of 8 or more",
            )
        return None
    check_workers(args.workers)
    return ProvenSearchSettings(
        protocol=args.protocol,
        finetunes=args.finetunes,
        seeds=tuple(parse_seeds(args.seeds)),
        verify=args.verify,
        workers=args.workers,
        seed=args.seed,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from bfnas.pipeline import DemoSettings, run_demo

    check_output_dir(args.out, "--out", holds=("demo.db",))
    check_output_dir(args.artifacts, "--artifacts")
    int8_profile, fp32_profile = _check_profiles(args)
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
    proven = _proven_settings(args)
    if args.task_dir:
        from bfnas.models.train.glue_task import read_task

        read_task(args.task_dir)  # a bad folder refused before anything runs
    if proven is not None:
        # Latency where the model will serve: at the length it is fine-tuned for.
        seq_len = proven.finetune_protocol.settings.max_len
        int8_profile, fp32_profile = (
            int8_profile.at_seq_len(seq_len),
            fp32_profile.at_seq_len(seq_len),
        )
    space, supernet = space_and_supernet(args)
    out = console(stderr=args.json)
    settings = DemoSettings(
        samples=args.samples,
        max_latency_ms=args.max_latency_ms,
        verify=args.verify,
        seed=args.seed,
        # Against the hand-scaled models, a budget some of them fit: a third of the largest's.
        budget_share=BUDGET_SHARE if proven is not None else None,
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
        objective, stage1, task = None, None, None
        start = 0.0  # stage 1 takes the bar's first tenth (a fifth without fine-tunes)
        if args.train_steps:
            from bfnas.pipeline import Stage1Settings, run_stage1

            share = 0.1 if proven else 0.2
            s1 = run_stage1(
                args.checkpoint,
                space,
                Path(args.out) / "stage1",
                Stage1Settings(steps=args.train_steps, seed=args.seed),
                on_step=lambda step, f: progress.update(description=step, completed=share * f),
            )
            supernet, stage1 = s1["supernet"], s1["summary"]
            objective, start = ("oneshot", s1["scorer"]), share
        proven_task = None
        if proven is not None:
            from bfnas.pipeline import ProvenTask, demo_task

            progress.update(description="making the offline task (stdlib docstrings)")
            task = demo_task(args.task_dir, Path(args.out))
            proven_task = ProvenTask(
                Path(args.out) / "stage1" / "supernet", Path(task["folder"]), proven
            )
        end = 0.93 if proven else 1.0  # the model folder is the last step
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
            proven=proven_task,
        )
        result["stage1"], result["task"] = stage1, task
        if proven is not None and result["status"] == "ok":
            progress.update(description="fine-tuning the model to ship into a model folder")
            result["model"] = _model_folder(args, result, proven_task, int8_profile)
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    return EXIT_OK if result["status"] == "ok" else EXIT_FAILED


def _model_folder(args: argparse.Namespace, result: dict, proven, profile) -> dict:
    """The model to ship (the search's winner, or a baseline that measured more accurate)
    fine-tuned under the protocol (its first seed) from stage 1's supernet into `out/model`
    (what `bfnas task train` writes): the card's summary."""
    from bfnas.models.space.subnet import SubnetConfig
    from bfnas.task_model import train_task_model

    protocol = proven.settings.finetune_protocol
    card = train_task_model(
        proven.supernet_dir,
        SubnetConfig.from_dict(result[result.get("ship") or "winner"]["arch"]),
        proven.task_dir,
        profile,
        Path(args.out) / "model",
        settings=protocol.for_seed(proven.settings.seeds[0]),
        space=args.space,
        artifacts=args.artifacts,
    )
    return {
        "folder": str(Path(args.out) / "model"),
        "ship": result.get("ship") or "winner",
        "card": card,
    }


# How the demo prints a subnet's score, by the objective the search maximized.
SCORE_TEXT = {
    "params": lambda v: f"{v / 1e6:.2f} M encoder params",
    "oneshot": lambda v: f"one-shot fidelity {v:.3f}",
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
        f"latency predictor ({p['folds']}-fold CV on {p['rows']} rows): "
        f"{p['within_10pct']:.1%} within 10 %, {p['within_5pct']:.1%} within 5 %, "
        f"Kendall tau {p['kendall_tau']:.3f}"
    )
    PRINTERS.get(r.get("objective"), _print_searched)(out, r)
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


def _print_searched(out, r: dict) -> None:
    """The winner of a search for one objective (params, one-shot fidelity)."""
    unit = r["unit_text"]
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
        return
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


def _print_proven(out, r: dict) -> None:
    """The accuracy half: the task, the accuracy predictor, the winner beside the baselines."""
    from rich.markup import escape

    from bfnas.commands.accuracy import print_proof

    t, c = r["task"], r["collect"]
    where = "the offline task at a demo's size" if t["offline"] else "your task"
    out.print(
        escape(
            f"task: {where} in {t['folder']}: {t['train_examples']} train / "
            f"{t['dev_examples']} dev, {len(t['labels'])} labels"
        )
    )
    m = c.get("metrics") or {}
    tau, params_tau = m.get("oof_kendall_tau"), m.get("params_kendall_tau")
    ranks = ""
    if tau is not None and math.isfinite(tau):
        ranks = f"; out-of-fold Kendall tau {tau:.2f}"
        if params_tau is not None and math.isfinite(params_tau):
            ranks += f" (encoder params alone {params_tau:.2f})"
        ranks += ", from a demo's few rows: a rough guide, which the proving fine-tunes check"
    elif m:
        ranks = "; every subnet fine-tuned to one accuracy: nothing to rank by"
    out.print(
        f"accuracy predictor: {c['subnets']} subnets fine-tuned near the budget "
        f"({c['minutes']:.1f} fine-tune min){ranks}"
    )
    b = r.get("budget_from")
    if b:
        out.print(
            escape(
                f"budget: {b['share']:.0%} of the largest subnet's measured latency "
                f"({b['arch_text']}, {b['latency_ms']:.3f} ms {r['unit_text']})"
            )
        )
    if "winner" not in r:
        out.print("[red]no accuracy predictor: too few fine-tunes succeeded[/]")
        return
    print_proof(out, r)


# How the demo prints what it found, by the objective it searched for.
PRINTERS = {"accuracy": _print_proven}
