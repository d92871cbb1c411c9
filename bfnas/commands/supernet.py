"""`bfnas supernet train`: elastic training of the supernet by distillation (stage 1);
`bfnas supernet finetune`: the whole supernet fine-tuned on a classification task (a task
supernet, scored by the search's `task` objective).

On several processes: `torchrun --standalone --nproc_per_node=N -m bfnas.cli supernet train
...` (or `... supernet finetune ...`; data-parallel; `--batch` stays the global batch; see
`bfnas.models.train.parallel`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bfnas.commands.common import EXIT_OK, command, console, group, print_json
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir


def register(sub) -> None:
    g = group(
        sub,
        "supernet",
        "stage 1: train the elastic supernet",
        "bfnas supernet train --teacher minilm --data data/ --space minilm-l6 --out sn/ --steps "
        "200",
    )
    p = command(
        g,
        "train",
        "sandwich-rule distillation of the supernet's subnets from a teacher "
        "(checkpoints; a rerun resumes; data-parallel under torchrun)",
        "bfnas supernet train --teacher minilm --data data/ --space minilm-l6 --out sn/ --steps "
        "200 --json\n"
        "  torchrun --standalone --nproc_per_node=2 -m bfnas.cli supernet train --data data/ "
        "--out sn/ "
        "--batch 16",
        cmd_train,
    )
    p.add_argument("--teacher", default="minilm", help="HF BERT folder, or 'minilm' (default)")
    p.add_argument(
        "--init", help="supernet to start from (HF folder); default: the teacher's weights"
    )
    p.add_argument(
        "--data", required=True, help="`bfnas data build` output (its last shard is held out)"
    )
    p.add_argument("--space", default="minilm-l6", help="search space whose subnets are trained")
    p.add_argument("--out", required=True, help="checkpoint folder (loadable with --checkpoint)")
    p.add_argument(
        "--loss",
        default="kd",
        help="kd: hidden-state and attention distillation from the "
        "teacher (default); mlm: masked-LM on the data's masks",
    )
    p.add_argument("--steps", type=int, default=100)
    p.add_argument(
        "--batch",
        type=int,
        default=8,
        help="sequences per step, over all processes "
        "under torchrun (must divide by their number; default 8)",
    )
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument(
        "--random-subnets",
        type=int,
        default=2,
        help="random members per step besides the largest and the smallest (default 2)",
    )
    p.add_argument(
        "--int8-aware",
        action="store_true",
        help="train the subnets fake-quantized as the dynamic INT8 recipe runs them",
    )
    p.add_argument("--checkpoint-every", type=int, default=50)
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    register_finetune(g)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: CUDA when torch sees it, else CPU; under torchrun each process takes "
        "CUDA device LOCAL_RANK (default auto)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from bfnas.models.nn.checkpoint import load_supernet, read_config, resolve_checkpoint
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.distill import SupernetTrainer, TrainSettings
    from bfnas.models.train.parallel import (
        Distributed,
        init_distributed,
        launched_world,
        pick_device,
        shutdown_distributed,
    )
    from bfnas.models.train.pretraining_data import data_tokenizer, shard_files

    settings = TrainSettings(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        random_subnets=args.random_subnets,
        checkpoint_every=args.checkpoint_every,
        loss=args.loss,
        int8_aware=args.int8_aware,
        seed=args.seed,
    )
    space = load_space(args.space)
    check_output_dir(
        args.out,
        "--out",
        holds=("config.json", "model.safetensors", "optimizer.pt", "trainer.json"),
    )
    shard_files(args.data, at_least=2)  # bad input is refused before the models load
    teacher = load_supernet(args.teacher)
    _, _, raw = read_config(resolve_checkpoint(args.teacher))
    student = load_supernet(args.init or args.teacher)
    teacher_cfg = space.largest()
    try:
        teacher.check_fits(teacher_cfg)
    except InputError as exc:
        raise InputError(
            "--space", exc.field, f"space {space.name} does not fit the teacher: {exc.reason}"
        ) from None
    # Refused before any process group forms (a lone failing rank would leave the others waiting).
    pick_device(args.device)
    Distributed(world=launched_world()).shard(settings.batch)
    # Every rank has run the same checks on the same input, so they all fail or all get here.
    dist = init_distributed(args.device)
    if dist.world == 1:  # under torchrun the processes share the cores as launched
        from bfnas.threads import fit_torch_threads

        fit_torch_threads()
    try:
        trainer = SupernetTrainer(
            student,
            teacher,
            teacher_cfg,
            space,
            args.data,
            args.out,
            settings,
            raw,
            dist,
            data_tokenizer(args.data),
        )
        if not dist.main:  # the other ranks train in silence
            trainer.train()
            return EXIT_OK
        out = console(stderr=args.json)
        with ProgressDisplay(
            out, "bfnas supernet train", "training", total=settings.steps, completed=trainer.step
        ) as progress:
            result = trainer.train(
                lambda row: progress.update(
                    completed=row["step"],
                    note=f"loss largest {row['largest']:.4f} smallest {row['smallest']:.4f}",
                )
            )
    finally:
        shutdown_distributed()
    if args.json:
        return print_json(result)
    out.print(
        f"{result['steps']} steps ({result['new_steps']} now, "
        f"{result['steps_per_s'] or 0:.2f} steps/s, {result['world_size']} process(es) on "
        f"{result['device']}); checkpoint in {result['out']} "
        f"(use it with --checkpoint {result['out']})"
    )
    return EXIT_OK


@dataclass(frozen=True)
class FinetuneDefaults:
    """`supernet finetune`'s defaults, those of `task_supernet.TaskTrainSettings` (written
    out here: building the parser must not import torch; tests/test_task_supernet.py checks
    that the two agree)."""

    steps: int = 400
    batch: int = 32
    lr: float = 5e-4
    warmup_steps: int = 20
    random_subnets: int = 2
    max_len: int = 64
    kd: str = "inplace"
    kd_weight: float = 0.5
    temperature: float = 2.0
    checkpoint_every: int = 50


def register_finetune(g) -> None:
    d = FinetuneDefaults()
    p = command(
        g,
        "finetune",
        "fine-tune the whole supernet on a GLUE-format classification task by the sandwich "
        "rule, with an elastic classifier head: every subnet's dev accuracy with inherited "
        "weights is then the search's `task` objective (a rerun resumes; data-parallel under "
        "torchrun)",
        "bfnas supernet finetune --supernet sn/ --task-dir task/ --out tsn/ --steps 300 --json\n"
        "  bfnas search --objective task --task-supernet tsn/ --hw local-cpu-int8 "
        "--space minilm-l6 --db lat.db --max-latency-ms 2 --out found/",
        cmd_finetune,
    )
    p.add_argument(
        "--supernet",
        required=True,
        help="the supernet to start from: `bfnas supernet train --out`, any HF BERT folder, "
        "or 'minilm'",
    )
    p.add_argument(
        "--task-dir",
        required=True,
        help="folder with train.tsv and dev.tsv (or MNLI's dev_matched.tsv), header row, "
        "a sentence or a sentence pair and a label column",
    )
    p.add_argument("--out", required=True, help="the task supernet folder (with task.json)")
    p.add_argument("--space", default="minilm-l6", help="search space whose subnets are trained")
    p.add_argument(
        "--tokenizer",
        help="tokenizer.json, vocab.txt or a folder with one (default: the supernet "
        "folder's; 'minilm' for the packaged one)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"default {d.steps}")
    p.add_argument(
        "--batch",
        type=int,
        default=d.batch,
        help=f"examples per step, over all processes under torchrun (default {d.batch})",
    )
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=d.warmup_steps,
        help=f"steps of linearly rising learning rate, then constant (default {d.warmup_steps})",
    )
    p.add_argument(
        "--random-subnets",
        type=int,
        default=d.random_subnets,
        help=f"random members per step besides the largest and the smallest "
        f"(default {d.random_subnets})",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=d.max_len,
        help=f"tokens per example, [CLS] and [SEP]s included (default {d.max_len}); the "
        "`task` objective scores at the same length",
    )
    p.add_argument(
        "--kd",
        default=d.kd,
        help="what the smaller members learn from besides the labels: inplace: the largest "
        f"member's softened predictions on the same batch; none: the labels alone "
        f"(default {d.kd})",
    )
    p.add_argument(
        "--kd-weight",
        type=float,
        default=d.kd_weight,
        help=f"share of the distillation term in a smaller member's loss (default {d.kd_weight})",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"softening of the largest member's predictions (default {d.temperature})",
    )
    p.add_argument(
        "--int8-aware",
        action="store_true",
        help="train the subnets fake-quantized as the dynamic INT8 recipe runs them",
    )
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_finetune(args: argparse.Namespace) -> int:
    from bfnas.models.nn.checkpoint import (
        resolve_checkpoint,
    )
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.parallel import (
        Distributed,
        init_distributed,
        launched_world,
        pick_device,
        shutdown_distributed,
    )
    from bfnas.models.train.task_supernet import (
        TASK_FILE,
        TaskSupernetTrainer,
        TaskTrainSettings,
        task_supernet_start,
    )
    from bfnas.models.train.trainer_checkpoint import CHECKPOINT_FILES

    # Everything cheap is checked before the weights load, and all of it before any
    # process group forms (a lone failing rank would leave the others waiting).
    settings = TaskTrainSettings(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        random_subnets=args.random_subnets,
        max_len=args.max_len,
        kd=args.kd,
        kd_weight=args.kd_weight,
        temperature=args.temperature,
        warmup_steps=args.warmup_steps,
        checkpoint_every=args.checkpoint_every,
        int8_aware=args.int8_aware,
        seed=args.seed,
    )
    space = load_space(args.space)
    check_output_dir(args.out, "--out", holds=(*CHECKPOINT_FILES, TASK_FILE, "tokenizer.json"))
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
    pick_device(args.device)
    Distributed(world=launched_world()).shard(settings.batch)
    supernet, head, data, raw = task_supernet_start(folder, task, tokenizer, space, settings)
    dist = init_distributed(args.device)
    if dist.world == 1:  # under torchrun the processes share the cores as launched
        from bfnas.threads import fit_torch_threads

        fit_torch_threads()
    try:
        trainer = TaskSupernetTrainer(
            supernet, head, space, data, args.out, settings, raw, dist=dist
        )
        if not dist.main:  # the other ranks train in silence
            trainer.train()
            return EXIT_OK
        out = console(stderr=args.json)
        with ProgressDisplay(
            out,
            "bfnas supernet finetune",
            "fine-tuning",
            total=settings.steps,
            completed=trainer.step,
        ) as progress:
            result = trainer.train(
                lambda row: progress.update(
                    completed=row["step"],
                    note=f"loss largest {row['largest']:.4f} smallest {row['smallest']:.4f}",
                )
            )
    finally:
        shutdown_distributed()
    result["dev_accuracy"] = trainer.dev_accuracy()
    result["task"] = trainer.task
    if args.json:
        return print_json(result)
    acc = result["dev_accuracy"]
    out.print(
        f"{result['steps']} steps ({result['new_steps']} now, "
        f"{result['steps_per_s'] or 0:.2f} steps/s, {result['world_size']} process(es) on "
        f"{result['device']}); dev accuracy: largest {acc['largest']:.4f}, smallest "
        f"{acc['smallest']:.4f} ({len(result['labels'])} labels); task supernet in "
        f"{result['out']} (search it with --objective task --task-supernet {result['out']})"
    )
    return EXIT_OK
