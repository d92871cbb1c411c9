"""How well do the cheap fitness scores rank subnets by what they are after a real fine-tune?

    python benchmarks/task_ranking.py [--subnets 12] [--supernet-steps 400] [--kd none,inplace]

Task: the offline task `bfnas data task` writes (`task_data.build_task`: standard-library
docstring sentences labelled by the module they document), or `--task-dir` (any GLUE-format
folder).
Subnets: `--subnets` of the `minilm-l6` space, stratified by size (3,000 random members
sorted by encoder parameters, cut into equal bins, one drawn from each).

Ground truth: each subnet fine-tuned stand-alone from all-MiniLM-L6-v2's inherited weights
(`finetune_subnet`: `--finetune-epochs` over `--finetune-examples` train examples, max_len
64, seed 0), its dev accuracy. Scores ranked against it (Kendall tau):

- one-shot task accuracy (the `task` objective) from a task supernet fine-tuned from the
  MiniLM checkpoint by `bfnas supernet finetune`'s trainer, once per `--kd` value (what the
  smaller members learn from besides the labels: `none`, or `inplace` distillation from the
  largest member): the measurement that picks the default; each scored as the objective
  scores (the classifier refitted per subnet, `oneshot.HeadRefit`) and with the inherited
  head as it is;
- one-shot CKA to the teacher (the `oneshot` objective: MiniLM itself as the supernet,
  its largest member the teacher, the first 64 dev sentences as the held-out text);
- encoder parameters (the `params` objective).

The stand-alone fine-tune is 3 epochs over all of train at 3e-4: narrow slices of MiniLM
are slow to leave chance (results/task_supernet_lr.md has the sweep), and one epoch over
3,072 examples at 1e-3 left three of the 12 at or below chance, a ground truth made of
failed fine-tunes. 23 minutes on a 2-core Xeon with AMX (stand-alone fine-tunes 14, the task
supernet 6). Writes benchmarks/results/task_ranking.{md,json}.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_io import publish
from scipy.stats import kendalltau

from bfnas.models.nn.checkpoint import load_supernet, minilm_dir, read_config, read_pooler
from bfnas.models.nn.task_head import ElasticClassifier
from bfnas.models.space.search_space import SearchSpace, load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings, prepare_task
from bfnas.models.train.finetune_fitness import FinetuneFitness, FitnessSettings, FitnessSource
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.oneshot import TASK_REFIT, OneShotScorer, TaskAccuracyScorer
from bfnas.models.train.task_data import TaskDataSettings, build_task
from bfnas.models.train.task_supernet import TaskSupernetTrainer, TaskTrainSettings

MAX_LEN = 64


def offline_task(out: Path) -> tuple[Path, str]:
    build_task(out, TaskDataSettings())
    return out, "the offline task (`bfnas data task`, default settings)"


def stratified(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    rng = random.Random(seed)
    pool = sorted(
        {c.key(): c for c in (space.sample(rng) for _ in range(3000))}.values(),
        key=lambda c: c.params(embeddings=False),
    )
    bins = np.array_split(np.arange(len(pool)), n)
    return [pool[int(rng.choice(list(b)))] for b in bins]


def cka_batch(dev_ids: list[list[int]], pad: int, rows: int = 64) -> dict[str, np.ndarray]:
    chosen = dev_ids[:rows]
    longest = max(len(r) for r in chosen)
    ids = np.full((len(chosen), longest), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(chosen):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def tau(a: list[float], b: list[float]) -> float:
    return float(kendalltau(a, b).statistic)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task-dir", help="a GLUE-format task (default: the offline task)")
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--seed", type=int, default=17, help="which subnets (default 17)")
    ap.add_argument("--supernet-steps", type=int, default=400)
    ap.add_argument("--supernet-batch", type=int, default=32)
    ap.add_argument("--supernet-lr", type=float, default=5e-4)
    ap.add_argument("--random-subnets", type=int, default=2)
    ap.add_argument("--kd", default="inplace", help="comma-separated, e.g. none,inplace")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument(
        "--finetune-examples", type=int, default=None, help="a seeded subset (default: all)"
    )
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    space = load_space("minilm-l6")
    cfgs = stratified(space, args.subnets, args.seed)
    params = [float(c.params(embeddings=False)) for c in cfgs]
    with tempfile.TemporaryDirectory(prefix="bfnas-task-ranking-") as tmp:
        tmp = Path(tmp)
        if args.task_dir:
            task_dir, task_kind = Path(args.task_dir), f"the GLUE folder {args.task_dir}"
        else:
            task_dir, task_kind = offline_task(tmp / "task")
        task = read_task(task_dir)

        # Ground truth: stand-alone short fine-tunes from MiniLM's inherited weights.
        finetune = FinetuneSettings(
            epochs=args.finetune_epochs, lr=args.finetune_lr, batch=32, max_len=MAX_LEN
        )
        # The `task-finetune` objective's own code, without its cache file: the fitness the
        # one-shot scores stand in for.
        fitness = FinetuneFitness(
            FitnessSource("minilm", str(minilm_dir()), str(task_dir), inherit_head=False),
            # Two workers of one thread each: small models use two threads poorly.
            FitnessSettings(finetune=finetune, train_examples=args.finetune_examples, workers=2),
            threads=2,
        )
        with fitness:
            truth = fitness.many(
                cfgs,
                on_done=lambda cfg, r: print(
                    f"stand-alone {fitness.computed}/{len(cfgs)}: {cfg} {r['accuracy']:.4f}",
                    flush=True,
                ),
            )
        truth_seconds = [
            fitness.results[c.key()]["train_seconds"] + fitness.results[c.key()]["eval_seconds"]
            for c in cfgs
        ]

        # One-shot CKA to the teacher, MiniLM itself as the supernet.
        minilm = load_supernet("minilm")
        data = prepare_task(
            minilm, space.largest(), task, minilm_dir(), FinetuneSettings(max_len=MAX_LEN)
        )
        cka_scorer = OneShotScorer(minilm, space.largest(), cka_batch(data.dev.ids, data.pad))
        t0 = time.perf_counter()
        cka = cka_scorer.many(cfgs)
        cka_seconds = (time.perf_counter() - t0) / len(cfgs)

        # One-shot task accuracy from a task supernet, per KD choice.
        _, _, raw = read_config(minilm_dir())
        by_kd: dict[str, dict] = {}
        for kd in [k.strip() for k in args.kd.split(",") if k.strip()]:
            settings = TaskTrainSettings(
                steps=args.supernet_steps,
                batch=args.supernet_batch,
                lr=args.supernet_lr,
                random_subnets=args.random_subnets,
                max_len=MAX_LEN,
                kd=kd,
                warmup_steps=max(1, args.supernet_steps // 10),
                checkpoint_every=args.supernet_steps,
            )
            supernet = load_supernet("minilm")
            head = ElasticClassifier.fresh(
                supernet.dims.hidden, len(task.label_names), 0, read_pooler("minilm")
            )
            trainer = TaskSupernetTrainer(
                supernet, head, space, data, tmp / f"tsn-{kd}", settings, raw
            )

            def progress(row: dict, kd: str = kd) -> None:
                if row["step"] % 10 == 0:
                    print(f"task supernet ({kd}) step {row['step']}", flush=True)

            trained = trainer.train(progress)
            # The task objective's score (classifier refitted per subnet) and the score
            # with the inherited head as it is, from the same task supernet.
            scorers = {
                "refitted": TaskAccuracyScorer(
                    trainer.supernet,
                    trainer.head,
                    data.dev,
                    data.pad,
                    train=data.train,
                    refit=TASK_REFIT,
                ),
                "inherited head": TaskAccuracyScorer(
                    trainer.supernet, trainer.head, data.dev, data.pad
                ),
            }
            for head_kind, scorer in scorers.items():
                t0 = time.perf_counter()
                oneshot = scorer.many(cfgs)
                per_subnet = (time.perf_counter() - t0) / len(cfgs)
                by_kd[f"{kd}, {head_kind}"] = {
                    "accuracy": oneshot,
                    "tau": tau(oneshot, truth),
                    "seconds_per_subnet": per_subnet,
                    "train_seconds": trained["seconds"],
                    "steps_per_s": trained["steps_per_s"],
                    "largest": scorer(space.largest()),
                    "smallest": scorer(space.smallest()),
                }
    seconds = time.perf_counter() - t_start
    counts = np.bincount(np.asarray(task.dev.labels), minlength=len(task.label_names))
    majority = float(counts.max() / counts.sum())
    n = len(cfgs)
    null_sd = (2 * (2 * n + 5) / (9 * n * (n - 1))) ** 0.5
    ranked = {k: v["tau"] for k, v in by_kd.items() if not np.isnan(v["tau"])}
    best_kd = max(ranked, key=ranked.__getitem__) if ranked else None
    lines = [
        "# Ranking subnets by task accuracy: one-shot scores against stand-alone fine-tunes",
        "",
        f"Task: {task_kind}: {len(task.label_names)} classes, {len(task.train.a)} train and "
        f"{len(task.dev.a)} dev examples (majority class {majority:.3f}); max_len {MAX_LEN}.",
        f"{len(cfgs)} subnets of minilm-l6 stratified by encoder parameters (seed {args.seed}).",
        f"Stand-alone: each fine-tuned from all-MiniLM-L6-v2's inherited weights, "
        f"{args.finetune_epochs} epoch(s) over {args.finetune_examples or 'all'} train "
        f"examples, batch 32, lr {args.finetune_lr:g}; "
        f"mean {statistics.mean(truth_seconds):.0f} s a subnet.",
        f"Task supernets: {args.supernet_steps} steps x (largest + smallest + "
        f"{args.random_subnets} random), batch {args.supernet_batch}, lr {args.supernet_lr:g}, "
        "from all-MiniLM-L6-v2.",
        "",
        "| subnet | encoder params | stand-alone acc | CKA | "
        + " | ".join(f"one-shot acc (kd {k})" for k in by_kd)
        + " |",
        "|---|---|---|---|" + "---|" * len(by_kd),
        *(
            f"| {c} | {p / 1e6:.2f} M | {t:.4f} | {k:.3f} | "
            + " | ".join(f"{by_kd[kd]['accuracy'][i]:.4f}" for kd in by_kd)
            + " |"
            for i, (c, p, t, k) in enumerate(zip(cfgs, params, truth, cka, strict=True))
        ),
        "",
        "Kendall tau against the stand-alone accuracy:",
        "",
        "| score | tau | seconds a subnet |",
        "|---|---|---|",
        *(
            f"| one-shot task accuracy, kd {k} | {v['tau']:.3f} | {v['seconds_per_subnet']:.2f} |"
            for k, v in by_kd.items()
        ),
        f"| one-shot CKA to the teacher | {tau(cka, truth):.3f} | {cka_seconds:.2f} |",
        "| encoder parameters | " + f"{tau(params, truth):.3f} | 0 |",
        "",
        *(
            f"Task supernet kd {k}: trained in {v['train_seconds']:.0f} s "
            f"({v['steps_per_s']:.2f} steps/s); dev accuracy largest {v['largest']:.4f}, "
            f"smallest {v['smallest']:.4f}."
            for k, v in by_kd.items()
        ),
        "",
        f"Best ranking: kd {best_kd}." if best_kd else "",
        f"Whole run: {seconds / 60:.1f} min on {torch.get_num_threads()} threads.",
        "",
        f"One task, one seed of each fine-tune, {len(cfgs)} subnets: with no relation at all, "
        f"tau would scatter around 0 with a standard deviation of {null_sd:.2f} at this "
        "size; the table checks that the scores rank, it is not a precise comparison of them.",
    ]
    publish(
        args.out,
        "task_ranking",
        lines,
        {
            "task": task_kind,
            "labels": list(task.label_names),
            "train_examples": len(task.train.a),
            "dev_examples": len(task.dev.a),
            "majority_accuracy": majority,
            "subnets": [c.to_dict() for c in cfgs],
            "params": params,
            "standalone_accuracy": truth,
            "standalone_seconds": truth_seconds,
            "cka": cka,
            "cka_seconds_per_subnet": cka_seconds,
            "tau": {
                **{f"task_{k}": v["tau"] for k, v in by_kd.items()},
                "cka": tau(cka, truth),
                "params": tau(params, truth),
            },
            "task_supernets": by_kd,
            "settings": vars(args),
            "seconds": seconds,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
