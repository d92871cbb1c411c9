"""`bfnas task eval`: fine-tune one subnet of a supernet on a GLUE-format task and score it."""

from __future__ import annotations

import argparse

from bfnas.commands.common import (
    EXIT_OK,
    add_arch_arg,
    arch_where,
    command,
    console,
    group,
    parse_arch,
    print_json,
)
from bfnas.commands.progress import ProgressDisplay


def register(sub) -> None:
    g = group(
        sub,
        "task",
        "downstream tasks: how good a subnet is after fine-tuning",
        "bfnas task eval --supernet minilm --task-dir glue/SST-2 --arch '{...}' --json",
    )
    p = command(
        g,
        "eval",
        "fine-tune one subnet (weights inherited from the supernet) on a GLUE-format "
        "TSV classification task and report dev accuracy (writes nothing)",
        "bfnas task eval --supernet sn/ --task-dir glue/MNLI --epochs 3 \\\n"
        '      --arch \'{"layers": 4, "hidden": 384, "heads": 12, "qkv": 384, "ffn": 1024}\' '
        "--json",
        cmd_eval,
    )
    p.add_argument(
        "--supernet",
        required=True,
        help="HF BERT folder (e.g. `bfnas supernet train --out`), or 'minilm'",
    )
    p.add_argument(
        "--task-dir",
        required=True,
        help="folder with train.tsv and dev.tsv (or MNLI's dev_matched.tsv), header row, "
        "a sentence or a sentence pair and a label column",
    )
    add_arch_arg(p)
    p.add_argument(
        "--space",
        default="minilm-l6",
        help="search space the arch must belong to (default minilm-l6)",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer.json, vocab.txt or a folder with one "
        "(default: the supernet folder's; 'minilm' for the packaged one)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--max-len", type=int, default=128, help="tokens per example, [CLS] and [SEP]s included"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    from bfnas.errors import InputError
    from bfnas.models.nn.checkpoint import load_supernet, read_pooler, resolve_checkpoint
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.finetune import (
        FinetuneSettings,
        finetune_subnet,
        prepare_task,
        read_task,
    )

    # Everything cheap is checked before the weights load.
    settings = FinetuneSettings(
        epochs=args.epochs, lr=args.lr, batch=args.batch, max_len=args.max_len, seed=args.seed
    )
    cfg = parse_arch(args.arch)
    load_space(args.space).check(cfg, where=arch_where(args.arch))
    task = read_task(args.task_dir)
    folder = resolve_checkpoint(args.supernet)
    if not folder.is_dir():
        raise InputError("--supernet", None, f"{args.supernet}: not a directory")
    tokenizer = resolve_checkpoint(args.tokenizer) if args.tokenizer else folder
    if not args.tokenizer and not any(
        (folder / n).is_file() for n in ("tokenizer.json", "vocab.txt")
    ):
        raise InputError(
            "--supernet", None, f"{folder} holds no tokenizer.json or vocab.txt: pass --tokenizer"
        )
    supernet = load_supernet(folder)
    prepared = prepare_task(supernet, cfg, task, tokenizer, settings)
    out = console(stderr=args.json)
    with ProgressDisplay(out, "bfnas task eval", "fine-tuning") as progress:
        result = finetune_subnet(
            supernet,
            cfg,
            prepared,
            settings,
            read_pooler(folder),
            lambda row: progress.update(
                total=row["total"],
                completed=row["step"],
                note=f"epoch {row['epoch']} loss {row['loss']:.4f}",
            ),
        )
    if args.json:
        return print_json(result)
    extra = f", macro-F1 {result['macro_f1']:.4f}" + (
        f", MCC {result['mcc']:.4f}" if result["mcc"] is not None else ""
    )
    out.print(
        f"dev accuracy {result['accuracy']:.4f}{extra} on {result['dev_examples']} examples "
        f"(majority class {result['majority_accuracy']:.4f}); {result['train_examples']} train "
        "examples, "
        f"{result['steps']} steps in {result['train_seconds']:.1f} s; arch {result['arch_key']}"
    )
    return EXIT_OK
