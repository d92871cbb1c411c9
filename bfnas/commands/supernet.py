"""`bfnas supernet train`: elastic training of the supernet by distillation (stage 1).

On several processes: `torchrun --standalone --nproc_per_node=N -m bfnas.cli supernet train
...` (data-parallel; `--batch` stays the global batch; see `bfnas.models.train.parallel`)."""

from __future__ import annotations

import argparse

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
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: CUDA when torch sees it, else CPU; under torchrun each process takes "
        "CUDA device LOCAL_RANK (default auto)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


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
