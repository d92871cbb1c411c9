"""Lottery tickets of all-MiniLM-L6-v2 on the demo's task, measured by the same harness as
the searched subnets: IMP with rewinding to 50, 70 and 90 % sparsity and the random-mask
control at each, once pruning single weights and once whole heads and FFN neurons
(`--structured`), every ticket fine-tuned under the `demo` protocol, written as a model folder,
scored FP32 and INT8 on dev and its INT8 file measured on `local-cpu-int8` at 64 tokens.

    python benchmarks/tickets.py [--sparsity 0.5,0.7,0.9] [--prune-fraction 0.2]
        [--work scratch/tickets]

It is `bfnas tickets find` with those settings (`bfnas.tickets.find_tickets`); the runs live
in `--work/unstructured` and `--work/structured` (a rerun continues them). Writes
benchmarks/results/tickets.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from results_io import publish

from bfnas.pipeline import demo_task
from bfnas.tickets import TicketSettings, find_tickets


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sparsity", default="0.5,0.7,0.9")
    ap.add_argument("--prune-fraction", type=float, default=0.2)
    ap.add_argument("--protocol", default="demo")
    ap.add_argument("--hw", default="local-cpu-int8")
    ap.add_argument("--task-dir", help="GLUE-format task (default: the demo's offline task)")
    ap.add_argument("--work", default="scratch/tickets")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    task = demo_task(args.task_dir, work)
    t0 = time.perf_counter()

    def say(e) -> None:
        if e.kind != "step":
            print(f"[{time.strftime('%H:%M:%S')}] {e.message}", flush=True)

    results = {}
    for structured in (False, True):
        start = time.perf_counter()
        r = find_tickets(
            TicketSettings(
                task_dir=str(task["folder"]),
                out=str(work / ("structured" if structured else "unstructured")),
                sparsity=tuple(float(s) for s in args.sparsity.split(",")),
                prune_fraction=args.prune_fraction,
                protocol=args.protocol,
                hw=args.hw,
                control="random",
                structured=structured,
                artifacts=str(work / "artifacts"),
            ),
            say,
        )
        r["minutes"] = (time.perf_counter() - start) / 60  # this invocation only
        results["structured" if structured else "unstructured"] = r
    payload = {"task": task, "runs": results, "minutes": (time.perf_counter() - t0) / 60}
    publish(args.out, "tickets", report_lines(payload), payload)
    return 0


def report_lines(p: dict) -> list[str]:
    task = p["task"]
    first = next(iter(p["runs"].values()))
    ft = first["finetune"]
    lines = [
        f"all-MiniLM-L6-v2 on {task['train_examples']} train / {task['dev_examples']} dev "
        f"sentences, {len(task['labels'])} labels (the offline task at a demo's size). IMP with "
        f"rewinding: each round prunes {first['prune_fraction']:.0%} of what survives by "
        "magnitude of the fine-tuned weights and rewinds the rest to the pre-trained values; "
        "unstructured: single encoder linear weights, globally (embeddings, biases, LayerNorms, "
        "pooler and classifier dense); structured: whole heads and FFN neurons, each ticket "
        "then a dense smaller model. The random control prunes the same way on random scores. "
        f"Every fine-tune: {ft['epochs']} epochs, lr {ft['lr']}, batch {ft['batch']}, max_len "
        f"{ft['max_len']}, seed {ft['seed']} (one seed: the rewind's). Latency: INT8 raw median "
        f"on {first['profile']} (dynamic recipe, 1 thread, batch 1, {ft['max_len']} tokens), "
        f"this 2-core VM. The last invocation took {p['minutes']:.0f} minutes (a rerun reads "
        "finished work back).",
    ]
    for name, r in p["runs"].items():
        d = r["dense"]
        lines += [
            "",
            f"{name} ({r['seconds'] / 60:.0f} min of work over every invocation, "
            f"{r['minutes']:.0f} in the last):",
            "",
            "| model | arch | sparsity (exported weights) | dev accuracy FP32 | INT8 | "
            "INT8 raw median |",
            "|---|---|---|---|---|---|",
        ]
        for t in [d, *r["tickets"]]:
            ms = "-" if t["latency_ms"] is None else f"{t['latency_ms']:.3f} ms"
            arch = _arch(t["arch"]) if t.get("arch") else "-"
            lines.append(
                f"| {t['name']} | {arch} | {t['sparsity']:.1%} | "
                f"{100 * t['accuracy_fp32']:.2f} % | {100 * t['accuracy_int8']:.2f} % | {ms} |"
            )
        lines += [
            "",
            "IMP rounds (sparsity: dev accuracy of that round's fine-tune, FP32 torch): "
            + ", ".join(f"{x['sparsity']:.1%}: {100 * x['accuracy']:.1f} %" for x in r["rounds"]),
        ]
        if r.get("speed"):
            lines += ["", f"Speed: {r['speed']}."]
    lines += [
        "",
        "What this does not show: one seed per ticket (the rewind fixes it), so a difference of "
        "a few points between two tickets is within what seeds move a fine-tune on this task "
        "(see bigger_faster.md); one small offline task, not GLUE; one machine's CPU.",
    ]
    return lines


def _arch(arch: dict) -> str:
    from bfnas.models.space.subnet import SubnetConfig

    return f"`{SubnetConfig.from_dict(arch)}`"


if __name__ == "__main__":
    raise SystemExit(main())
