"""`bfnas data build|corpus|task`: stage-1 pretraining data from raw text, and the offline
classification task."""

from __future__ import annotations

import argparse

from bfnas.commands.common import EXIT_OK, command, console, group, print_json
from bfnas.commands.progress import ProgressDisplay
from bfnas.models.outputs import check_output_dir, check_output_file


def register(sub) -> None:
    g = group(
        sub,
        "data",
        "stage-1 pretraining data: token shards with whole-word masking",
        "bfnas data build --corpus corpus.txt --tokenizer minilm --out data/ --json",
    )
    p = command(
        g,
        "build",
        "tokenize, pack, mask and shard a corpus (streaming; a rerun resumes)",
        "bfnas data build --corpus texts/ --tokenizer minilm --out data/ --seq-len 128 --json",
        cmd_build,
    )
    p.add_argument(
        "--corpus",
        required=True,
        help="a text file, or a folder of .txt files (blank line = new document)",
    )
    p.add_argument(
        "--tokenizer",
        required=True,
        help="HF tokenizer.json, BERT vocab.txt, a folder with one, or 'minilm'",
    )
    p.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument(
        "--shard-size", type=int, default=4096, help="sequences per shard (default 4096)"
    )
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cased", action="store_true", help="with a bare vocab.txt: do not lowercase")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")

    p = command(
        g,
        "corpus",
        "write an offline corpus of real English prose",
        "bfnas data corpus --stdlib --out corpus.txt --json",
        cmd_corpus,
    )
    p.add_argument(
        "--stdlib",
        action="store_true",
        required=True,
        help="the docstrings of this Python's standard library (read, never imported)",
    )
    p.add_argument("--out", required=True, help="text file to write")
    p.add_argument("--min-words", type=int, default=20, help="skip shorter docstrings (default 20)")
    p.add_argument("--json", action="store_true", help="print counts as JSON")

    p = command(
        g,
        "task",
        "write an offline GLUE-format classification task (SST-2 layout) from the standard "
        "library's docstrings: which module does a sentence document?",
        "bfnas data task --out task/ --json",
        cmd_task,
    )
    p.add_argument("--out", required=True, help="folder for train.tsv, dev.tsv and task.json")
    p.add_argument(
        "--classes", type=int, default=12, help="modules to tell apart, most documented first"
    )
    p.add_argument(
        "--max-per-class", type=int, default=800, help="sentences kept per module (default 800)"
    )
    p.add_argument("--dev-fraction", type=float, default=0.22)
    p.add_argument("--min-words", type=int, default=6, help="shortest sentence kept (words)")
    p.add_argument("--max-words", type=int, default=60, help="longest sentence kept (words)")
    p.add_argument(
        "--near-duplicate",
        type=float,
        default=0.5,
        help="drop a dev sentence when this share of its word trigrams is in train",
    )
    p.add_argument("--seed", type=int, default=0, help="which groups go to dev")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def cmd_build(args: argparse.Namespace) -> int:
    from bfnas.models.nn.checkpoint import minilm_dir
    from bfnas.models.train.pretraining_data import (
        MANIFEST,
        DataSettings,
        build_data,
        check_corpus,
        corpus_files,
        load_tokenizer,
    )

    settings = DataSettings(
        seq_len=args.seq_len,
        shard_size=args.shard_size,
        mask_prob=args.mask_prob,
        seed=args.seed,
        lowercase=not args.cased,
    )
    tokenizer = minilm_dir() if args.tokenizer == "minilm" else args.tokenizer
    # Bad input is refused before anything is written.
    files = corpus_files(args.corpus)
    tok, _, _ = load_tokenizer(tokenizer, settings.lowercase)
    check_output_dir(args.out, "--out", holds=(MANIFEST,))
    check_corpus(args.corpus, files, tok)
    out = console(stderr=args.json)
    columns = ("spinner", "description", "note", "elapsed")
    with ProgressDisplay(
        out, "bfnas data build", "reading the corpus", columns=columns, transient=True
    ) as progress:
        result = build_data(
            args.corpus,
            tokenizer,
            args.out,
            settings,
            on_progress=lambda p: progress.update(
                note=f"{p['shards']} shards, {p['sequences']} sequences, {p['lines']} lines read"
            ),
        )
    summary = {
        k: result[k] for k in ("out", "sequences", "tokens", "complete", "resumed", "new_shards")
    }
    summary["shards"] = len(result["shards"])
    summary["seq_len"] = settings.seq_len
    summary["tokenizer"] = result["tokenizer"]["path"]
    if args.json:
        return print_json(summary)
    out.print(
        f"{summary['sequences']} sequences of {settings.seq_len} tokens in {summary['shards']} "
        "shards "
        f"({summary['tokens']} tokens) in {summary['out']}"
        + (" (resumed)" if summary["resumed"] else "")
    )
    return EXIT_OK


def cmd_corpus(args: argparse.Namespace) -> int:
    from bfnas.models.train.pretraining_data import stdlib_docstrings

    check_output_file(args.out, "--out")
    counts = stdlib_docstrings(args.out, args.min_words)
    if args.json:
        return print_json({"out": args.out, **counts})
    console().print(
        f"{counts['documents']} docstrings, {counts['words']} words written to {args.out}"
    )
    return EXIT_OK


def cmd_task(args: argparse.Namespace) -> int:
    from bfnas.models.train.task_data import MANIFEST, TaskDataSettings, build_task

    settings = TaskDataSettings(
        classes=args.classes,
        max_per_class=args.max_per_class,
        dev_fraction=args.dev_fraction,
        min_words=args.min_words,
        max_words=args.max_words,
        near_duplicate=args.near_duplicate,
        seed=args.seed,
    )
    check_output_dir(args.out, "--out", holds=("train.tsv", "dev.tsv", MANIFEST))
    manifest = build_task(args.out, settings)
    if args.json:
        return print_json({"out": args.out, **manifest})
    console().print(
        f"{manifest['train_examples']} train and {manifest['dev_examples']} dev sentences of "
        f"{len(manifest['labels'])} modules ({', '.join(manifest['labels'])}) in {args.out}"
    )
    return EXIT_OK
