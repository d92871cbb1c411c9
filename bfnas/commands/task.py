"""`bfnas task eval`: fine-tune one subnet of a supernet on a GLUE-format task and score it;
`bfnas task train`: the same fine-tune, written as a model folder to ship (HF checkpoint,
FP32 and INT8 ONNX, a card with the accuracy and the measured latency); `bfnas task predict`:
that folder's INT8 file run on texts, as an application runs it."""

from __future__ import annotations

import argparse
import sys

from bfnas.commands.common import (
    EXIT_OK,
    add_arch_arg,
    add_artifacts_arg,
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

    p = command(
        g,
        "train",
        "fine-tune one subnet (weights, and a task supernet's head, inherited) and write a "
        "model folder to ship: HF checkpoint, tokenizer, labels, model.onnx, model.int8.onnx "
        "(the profile's recipe) and a card with dev accuracy and latency measured on the profile",
        "bfnas task train --supernet tsn/ --task-dir task/ --hw local-cpu-int8 --out model/ \\\n"
        '      --arch \'{"layers": 4, "hidden": 256, "heads": 8, "qkv": 256, "ffn": 1024}\'',
        cmd_train,
    )
    p.add_argument(
        "--supernet",
        required=True,
        help="HF BERT folder: a task supernet (`bfnas supernet finetune --out`, its head is "
        "inherited), a supernet (`bfnas supernet train --out`) or 'minilm'",
    )
    p.add_argument("--task-dir", required=True, help="GLUE-format task folder, as task eval")
    add_arch_arg(p)
    p.add_argument(
        "--hw",
        default="local-cpu-int8",
        help="hardware profile whose INT8 recipe makes model.int8.onnx and whose harness "
        "measures both files (default local-cpu-int8)",
    )
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument(
        "--space", default="minilm-l6", help="search space the arch must belong to (minilm-l6)"
    )
    p.add_argument("--tokenizer", help="tokenizer.json, vocab.txt or a folder with one")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--max-len", type=int, default=128, help="tokens per example, [CLS] and [SEP]s included"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--int8-aware",
        action="store_true",
        help="fine-tune fake-quantized as the dynamic INT8 recipe runs the model, so "
        "model.int8.onnx keeps the FP32 accuracy",
    )
    add_artifacts_arg(p)
    p.add_argument("--json", action="store_true", help="print the card (model.json) as JSON")

    p = command(
        g,
        "predict",
        "classify texts with a model folder's INT8 file (ONNX Runtime and the folder's "
        "tokenizer): label and softmax score per text",
        'bfnas task predict --model model/ --text "Return the event loop." --json',
        cmd_predict,
    )
    p.add_argument("--model", required=True, help="a model folder (`bfnas task train --out`)")
    p.add_argument(
        "--text",
        action="append",
        default=[],
        help="a text to classify (repeat for more); a pair task's two parts separated by a tab",
    )
    p.add_argument("--file", help="a UTF-8 file of texts, one per line (blank lines skipped)")
    p.add_argument("--fp32", action="store_true", help="run model.onnx instead of the INT8 file")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    from bfnas.errors import InputError
    from bfnas.models.nn.checkpoint import (
        TASK_FILE,
        load_supernet,
        read_pooler,
        read_task_head,
        read_task_manifest,
        resolve_checkpoint,
    )
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.finetune import FinetuneSettings, finetune_subnet, prepare_task
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.task_supernet import check_task_labels

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
    head = read_task_head(folder)  # a task supernet's head is inherited, as task train does
    if head is not None:
        check_task_labels(read_task_manifest(folder) or {}, folder / TASK_FILE, task)
    supernet = load_supernet(folder)
    prepared = prepare_task(supernet, cfg, task, tokenizer, settings)
    out = console(stderr=args.json)
    with ProgressDisplay(out, "bfnas task eval", "fine-tuning") as progress:
        result = finetune_subnet(
            supernet,
            cfg,
            prepared,
            settings,
            head.pooler if head is not None else read_pooler(folder),
            lambda row: progress.update(
                total=row["total"],
                completed=row["step"],
                note=f"epoch {row['epoch']} loss {row['loss']:.4f}",
            ),
            head.classifier if head is not None else None,
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


def cmd_train(args: argparse.Namespace) -> int:
    from bfnas.bench.hardware_profile import load_profile
    from bfnas.models.deploy.classifier_package import check_package_dir
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.finetune import FinetuneSettings
    from bfnas.task_model import train_task_model

    check_package_dir(args.out, "--out")
    settings = FinetuneSettings(
        epochs=args.epochs,
        lr=args.lr,
        batch=args.batch,
        max_len=args.max_len,
        seed=args.seed,
        int8_aware=args.int8_aware,
    )
    cfg = parse_arch(args.arch)
    load_space(args.space).check(cfg, where=arch_where(args.arch))
    profile = load_profile(args.hw)
    out = console(stderr=args.json)
    with ProgressDisplay(out, "bfnas task train", "checking the input") as progress:
        card = train_task_model(
            args.supernet,
            cfg,
            args.task_dir,
            profile,
            args.out,
            settings=settings,
            space=args.space,
            tokenizer=args.tokenizer,
            artifacts=args.artifacts,
            on_step=lambda row: progress.update(
                total=row["total"],
                completed=row["step"],
                note=f"epoch {row['epoch']} loss {row['loss']:.4f}",
            ),
            on_stage=lambda stage: progress.update(description=stage),
        )
    if args.json:
        return print_json(card)
    a, lat = card["accuracy"], card["latency"]
    gap = a["int8_minus_fp32_points"]
    out.print(
        f"wrote {args.out}: dev accuracy FP32 {a['fp32_onnx']:.4f} (torch {a['fp32_torch']:.4f}), "
        f"INT8 {a['int8_onnx']:.4f} ({gap:+.2f} points); on {lat['profile']['name']} raw "
        f"median {_ms(lat['int8'])} INT8, {_ms(lat['fp32'])} FP32; "
        f"{card['params']['total']:,} parameters",
        soft_wrap=True,
        markup=False,
    )
    if gap < -1 and not card["training"]["int8_aware"]:
        out.print("INT8 lost more than 1 point: train again with --int8-aware", markup=False)
    return EXIT_OK


def _ms(measurement: dict) -> str:
    if measurement.get("median_ms") is None:
        return f"({measurement['status']}: {measurement.get('reason')})"
    return f"{measurement['median_ms']:.3f} ms [{measurement['status']}]"


def read_texts(args: argparse.Namespace) -> list[str]:
    """--text values, then --file's lines (one text each, blank ones skipped)."""
    from bfnas.errors import InputError, read_text_input

    texts = list(args.text)
    if args.file is not None:
        lines = read_text_input(args.file).splitlines()
        from_file = [line for line in lines if line.strip()]
        if not from_file:
            raise InputError(args.file, None, "no texts in it (one per line)")
        texts.extend(from_file)
    if not texts:
        raise InputError("--text", None, "nothing to classify: give --text or --file")
    return texts


def cmd_predict(args: argparse.Namespace) -> int:
    from bfnas.models.deploy.text_classifier import load_classifier

    texts = read_texts(args)
    model = load_classifier(args.model, "fp32" if args.fp32 else "int8")
    predictions = model.predict(texts)
    if args.json:
        return print_json(
            {
                "model": str(args.model),
                "file": model.model_file.name,
                "predictions": [p.to_dict() for p in predictions],
            }
        )
    for p in predictions:
        sys.stdout.write(f"{p.label}\t{p.score:.4f}\t{p.text}\n")
    return EXIT_OK
