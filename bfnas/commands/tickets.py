"""`bfnas tickets find`: lottery tickets of the checkpoint on a task (iterative magnitude
pruning with rewinding to the pre-trained weights), each written as a model folder and
measured on a hardware profile like a searched subnet (`bfnas.tickets`)."""

from __future__ import annotations

import argparse

from bfnas.commands.common import (
    EXIT_OK,
    add_artifacts_arg,
    command,
    console,
    group,
    print_json,
)
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError


def register(sub) -> None:
    g = group(
        sub,
        "tickets",
        "lottery tickets of the pre-trained BERT (BERT-Tickets), measured by the same harness",
        "bfnas tickets find --task-dir task/ --sparsity 0.5,0.7,0.9 --out tickets/",
    )
    p = command(
        g,
        "find",
        "iterative magnitude pruning on a task: fine-tune, prune a fraction of the surviving "
        "encoder linear weights by global magnitude, rewind the survivors to the pre-trained "
        "values, repeat to each sparsity; each ticket fine-tuned with its mask held, written as "
        "a model folder (as `task train`) and measured on --hw",
        "bfnas tickets find --checkpoint minilm --task-dir task/ --sparsity 0.5,0.7,0.9 \\\n"
        "      --prune-fraction 0.2 --epochs 3 --max-len 64 --control random --out tickets/ "
        "--json",
        cmd_find,
    )
    p.add_argument(
        "--checkpoint",
        default="minilm",
        help="HF BERT folder to prune, or 'minilm' (the packaged all-MiniLM-L6-v2; default)",
    )
    p.add_argument("--task-dir", required=True, help="GLUE-format task folder, as task eval")
    p.add_argument(
        "--sparsity",
        default="0.5,0.7,0.9",
        help="the sparsities to stop at, fractions in (0, 1), comma-separated (0.5,0.7,0.9)",
    )
    p.add_argument(
        "--prune-fraction",
        type=float,
        default=0.2,
        help="share of the surviving weights each IMP round prunes (default 0.2, the paper's)",
    )
    p.add_argument(
        "--protocol",
        default="standard",
        help="fine-tune protocol (`bfnas accuracy protocols`; default standard)",
    )
    p.add_argument("--epochs", type=int, help="epochs of every fine-tune (default: the protocol's)")
    p.add_argument("--max-len", type=int, help="tokens per example (default: the protocol's)")
    p.add_argument("--seed", type=int, default=0, help="one seed for every round (the rewind)")
    p.add_argument(
        "--control",
        choices=["random"],
        help="also fine-tune a random mask at each sparsity (does the IMP mask matter?)",
    )
    p.add_argument(
        "--structured",
        action="store_true",
        help="prune whole attention heads and FFN neurons instead of single weights: each "
        "ticket is a dense smaller model (a subnet with its own weights)",
    )
    p.add_argument(
        "--hw",
        default="local-cpu-int8",
        help="hardware profile whose recipe makes model.int8.onnx and whose harness measures "
        "each ticket, at the fine-tune's length (default local-cpu-int8)",
    )
    p.add_argument("--db", help="latency store the measurements go to (default OUT/latency.db)")
    p.add_argument("--out", required=True, help="the run's folder (a rerun continues it)")
    add_artifacts_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_sparsity(text: str) -> tuple[float, ...]:
    out = []
    for i, part in enumerate(text.split(",")):
        try:
            out.append(float(part))
        except ValueError:
            raise InputError.bad_setting(
                "sparsity", f"not a number: {part.strip()!r}", field=f"[{i}]"
            ) from None
    return tuple(out)


def cmd_find(args: argparse.Namespace) -> int:
    from bfnas.tickets import TicketRun, TicketSettings

    settings = TicketSettings(
        task_dir=args.task_dir,
        out=args.out,
        checkpoint=args.checkpoint,
        sparsity=parse_sparsity(args.sparsity),
        prune_fraction=args.prune_fraction,
        protocol=args.protocol,
        epochs=args.epochs,
        max_len=args.max_len,
        seed=args.seed,
        hw=args.hw,
        control=args.control,
        structured=args.structured,
        db=args.db,
        artifacts=args.artifacts,
    )
    out = console(stderr=args.json)
    with (
        TicketRun(settings) as run,  # every input checked, in one line, before any display
        ProgressDisplay(out, "bfnas tickets find", "IMP round 0") as progress,
    ):

        def on_event(e) -> None:
            if e.kind == "step":
                progress.update(total=e.total, completed=e.done, note=e.message)
            elif e.kind in ("round", "stage"):
                progress.update(description=e.message)
            elif e.kind == "done":
                progress.message(e.message)

        result = run.run(on_event)
    if args.json:
        return print_json(result)
    _print(out, result)
    return EXIT_OK


def _print(out, r: dict) -> None:
    from rich.markup import escape

    d = r["dense"]
    out.print(
        escape(
            f"{r['checkpoint']} on {r['task']}: dense fine-tune dev accuracy FP32 "
            f"{d['accuracy_fp32']:.2%}, INT8 {d['accuracy_int8']:.2%}, INT8 raw median "
            f"{_ms(d['latency_ms'])} on {r['profile']}"
        )
    )
    for t in r["tickets"]:
        out.print(
            escape(
                f"  {t['name']:<10} sparsity {t['sparsity']:.1%} (exported weights): dev "
                f"accuracy FP32 {t['accuracy_fp32']:.2%}, INT8 {t['accuracy_int8']:.2%}, "
                f"INT8 raw median {_ms(t['latency_ms'])}; {t['path']}"
            )
        )
    if r.get("speed"):
        out.print(escape(r["speed"]))


def _ms(ms: float | None) -> str:
    return "not measured" if ms is None else f"{ms:.3f} ms"
