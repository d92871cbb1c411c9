"""`bfnas accuracy ...`: accuracy as stored measurements -- subnets fine-tuned under a named
protocol into the accuracy store, and what the store holds."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

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
from bfnas.errors import InputError

DEFAULT_DB = "accuracy.db"


def register(sub) -> None:
    g = group(
        sub,
        "accuracy",
        "task accuracy as stored measurements: fine-tunes under a named protocol",
        "bfnas accuracy measure --supernet minilm --task-dir task/ --hand-scaled --json",
    )
    p = command(
        g,
        "measure",
        "fine-tune subnets on a GLUE-format task under a protocol, each seed once, into the "
        "accuracy store (a rerun fine-tunes only what the store lacks); print accuracy "
        "mean ± std over the seeds and the cost per fine-tune",
        "bfnas accuracy measure --supernet minilm --task-dir task/ --protocol standard \\\n"
        "      --seeds 0,1,2 --hand-scaled --db accuracy.db --json",
        cmd_measure,
    )
    add_finetune_args(p)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    add_arch_arg(p, required=False)
    p.add_argument(
        "--hand-scaled",
        action="store_true",
        help="the space's hand-scaled family: fewer layers at full width, and uniformly narrower",
    )
    p.add_argument("--samples", type=int, default=0, help="this many random subnets as well")
    p.add_argument("--sample-seed", type=int, default=0, help="which random subnets")
    p.add_argument("--tokenizer", help="default: the supernet folder's")
    add_db_arg(p)
    p.add_argument(
        "--teachers",
        help="folder for the protocol's teachers (default: beside --db, DB.teachers/)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fine-tunes at once, each in its own process with its share of the threads",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = command(
        g,
        "fit",
        "fit the accuracy predictor on the store's fine-tunes of one task, protocol and "
        "supernet: out-of-fold Kendall tau and error against ranking by encoder params, an "
        "uncertainty per prediction, saved as text",
        "bfnas accuracy fit --db accuracy.db --supernet minilm --task-dir task/ "
        "--out acc-model/ --json",
        cmd_fit,
    )
    add_db_arg(p)
    add_finetune_args(p)
    p.add_argument("--seed", type=int, default=0, help="the estimator's seed")
    p.add_argument("--out", required=True, help="folder for model.txt and predictor.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = command(
        g,
        "collect",
        "fine-tune subnets in rounds until the accuracy predictor ranks them well enough: "
        "random ones first, then where it is unsure and near the budgets asked; stop when a "
        "lower confidence bound on its out-of-fold Kendall tau reaches --until, or at a cap; "
        "save the predictor",
        "bfnas accuracy collect --supernet minilm --task-dir task/ --until 0.5 \\\n"
        "      --model lat-model/ --budgets 1.5,3 --max-minutes 60 --out acc-model/ --json",
        cmd_collect,
    )
    add_finetune_args(p)
    add_db_arg(p)
    p.add_argument(
        "--until",
        type=float,
        required=True,
        help="the Kendall tau its lower confidence bound must reach, in (0, 1)",
    )
    p.add_argument("--confidence", type=float, default=0.9, help="of the bound (default 0.9)")
    p.add_argument("--first", type=int, default=12, help="random subnets before the first fit")
    p.add_argument("--round-size", type=int, default=6, help="subnets a round (default 6)")
    p.add_argument("--max-finetunes", type=int, default=60, help="cap on subnets fine-tuned")
    p.add_argument("--max-minutes", type=float, help="cap on the fine-tunes' minutes")
    p.add_argument("--seeds", default="0", help="seeds each subnet is fine-tuned with (default 0)")
    p.add_argument(
        "--model",
        help="a latency predictor (`bfnas predictor fit --out`) at the protocol's sequence "
        "length: with --budgets, subnets near a budget are chosen first",
    )
    p.add_argument("--budgets", help="comma-separated latency budgets, in --model's unit")
    p.add_argument("--pool", type=int, default=2000, help="candidates sampled from the space")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="fine-tunes at once (processes)")
    p.add_argument("--teachers", help="folder for the protocol's teachers (default DB.teachers/)")
    p.add_argument("--out", required=True, help="folder for the accuracy predictor")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = command(
        g,
        "search",
        "the most accurate subnet under a latency budget, proven on both axes: search with "
        "the accuracy and latency predictors, verify the top ones on the device and by "
        "fine-tunes over the seeds, re-rank on the verified numbers, and hold the winner "
        "against the hand-scaled model and the params winner, fine-tuned the same way",
        "bfnas accuracy search --hw local-cpu-int8 --db lat.db --max-latency-ms 2 \\\n"
        "      --accuracy-model acc-model/ --supernet minilm --task-dir task/ --out found/ --json",
        cmd_search,
    )
    p.add_argument(
        "--hw",
        default="local-cpu-int8",
        help="hardware profile; measured at the protocol's sequence length (NAME-seqN: "
        "`bfnas profile --seq-len N` made its rows)",
    )
    p.add_argument("--db", required=True, help="the latency store with the profile's rows")
    p.add_argument(
        "--max-latency-ms",
        type=float,
        required=True,
        help="latency budget, in the latency predictor's unit (anchor-normalized ms for "
        "bfnas's own measurements)",
    )
    p.add_argument(
        "--accuracy-model", required=True, help="accuracy predictor (`bfnas accuracy fit`)"
    )
    add_db_arg(p, "--accuracy-db")
    add_finetune_args(p)
    p.add_argument("--seeds", default="0,1,2", help="seeds of every proving fine-tune")
    p.add_argument("--verify", type=int, default=3, help="candidates proven on both axes")
    p.add_argument("--population", type=int, default=60)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="fine-tunes at once (processes)")
    add_artifacts_arg(p)
    p.add_argument("--out", required=True, help="folder for accuracy-search.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = command(
        g,
        "show",
        "what an accuracy store holds: per task and protocol, each subnet's accuracy over "
        "its seeds",
        "bfnas accuracy show --db accuracy.db --json",
        cmd_show,
    )
    add_db_arg(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = command(
        g,
        "protocols",
        "the fine-tune protocols an accuracy can be measured by",
        "bfnas accuracy protocols --json",
        cmd_protocols,
    )
    p.add_argument("--json", action="store_true", help="print them as JSON")


def add_db_arg(p: argparse.ArgumentParser, flag: str = "--db") -> None:
    p.add_argument(flag, default=DEFAULT_DB, help=f"the accuracy store (default {DEFAULT_DB})")


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """What every fine-tune of a command starts from and how it runs: the flags that pick
    one task, protocol, supernet and space (the identity of the accuracies it reads)."""
    p.add_argument(
        "--supernet",
        required=True,
        help="HF BERT folder the subnets' weights come from (`bfnas supernet train --out`), "
        "or 'minilm'",
    )
    p.add_argument("--task-dir", required=True, help="GLUE-format task folder (train/dev TSV)")
    p.add_argument(
        "--protocol", default="standard", help="fine-tune protocol (`bfnas accuracy protocols`)"
    )
    p.add_argument("--space", default="minilm-l6", help="search space (default minilm-l6)")


def supernet_folder(name: str) -> Any:
    """`--supernet` as the folder it names ('minilm': the packaged one), refused in one line
    where it is no folder."""
    from bfnas.models.nn.checkpoint import resolve_checkpoint

    folder = resolve_checkpoint(name)
    if not folder.is_dir():
        raise InputError("--supernet", None, f"{name}: not a directory")
    return folder


def check_workers(workers: int) -> None:
    if workers < 1:
        raise InputError("--workers", None, f"must be at least 1, got {workers}")


def finetune_job(
    args: argparse.Namespace,
    store: Any,
    folder: Any,
    protocol: Any,
    space: Any,
    threads: dict,
    on_event: Any,
    teachers: str,
    tokenizer: str | None = None,
) -> Any:
    """The `FinetuneJob` every command runs its fine-tunes through: from `--supernet`'s
    folder, on `--task-dir`, `--workers` processes sharing the free threads."""
    from bfnas.bench.jobs.finetuning import FinetuneJob, FinetuneSource

    return FinetuneJob(
        store=store,
        source=FinetuneSource(str(folder), args.task_dir, teachers, tokenizer),
        protocol=protocol,
        space=space.name,
        teacher_cfg=space.largest(),
        workers=args.workers,
        threads=int(threads["threads"]),
        on_event=on_event,
    )


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError("--seeds", None, f"{text!r}: not comma-separated integers") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InputError("--seeds", None, f"{text!r}: give distinct seeds >= 0, e.g. 0,1,2")
    return seeds


def _subnets(args: argparse.Namespace, space: Any) -> list[tuple[str, Any]]:
    """(label, subnet) of everything asked for, in the order asked, each once."""
    import random

    from bfnas.search.baselines import hand_scaled

    chosen: list[tuple[str, Any]] = []
    if args.arch:
        cfg = parse_arch(args.arch)
        space.check(cfg, where=arch_where(args.arch))
        chosen.append(("arch", cfg))
    if args.hand_scaled:
        for family, members in hand_scaled(space).items():
            chosen += [(family, c) for c in members]
    if args.samples < 0:
        raise InputError("--samples", None, f"must be >= 0, got {args.samples}")
    rng = random.Random(args.sample_seed)
    chosen += [("random", space.sample(rng)) for _ in range(args.samples)]
    if not chosen:
        raise InputError(
            "--arch", None, "nothing to fine-tune: give --arch, --hand-scaled or --samples"
        )
    seen, unique = set(), []
    for label, cfg in chosen:
        if cfg.key() not in seen:
            seen.add(cfg.key())
            unique.append((label, cfg))
    return unique


def cmd_measure(args: argparse.Namespace) -> int:
    from bfnas.bench.jobs.finetuning import default_teachers
    from bfnas.bench.store.accuracy_store import AccuracyStore
    from bfnas.models.space.search_space import load_space
    from bfnas.models.space.subnet import SubnetConfig
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.protocols import get_protocol
    from bfnas.threads import fit_torch_threads

    # The cheap checks first: nothing loads or trains for input that is refused anyway.
    protocol = get_protocol(args.protocol)
    seeds = parse_seeds(args.seeds)
    check_workers(args.workers)
    space = load_space(args.space)
    subnets = _subnets(args, space)
    read_task(args.task_dir)
    folder = supernet_folder(args.supernet)
    AccuracyStore.check(args.db)
    threads = fit_torch_threads()
    out = console(stderr=args.json)
    work = [(cfg, s) for _, cfg in subnets for s in seeds]
    with (
        AccuracyStore(args.db) as store,
        ProgressDisplay(out, "bfnas accuracy measure", "fine-tuning", total=len(work)) as bar,
    ):

        def event(e) -> None:
            if e.kind == "teacher":
                bar.update(note=e.message)
            elif e.kind in ("stored", "finished"):
                r = e.record
                what = f"{r.accuracy:.1%}" if r.status == "ok" else f"failed: {r.reason}"
                bar.update(completed=e.done, note=f"{r.arch} seed {r.seed}: {what}")
            elif e.kind == "held":
                bar.message(f"{e.cfg} seed {e.seed}: another process is fine-tuning it")

        teachers = args.teachers or default_teachers(args.db)
        job = finetune_job(
            args, store, folder, protocol, space, threads, event, teachers, args.tokenizer
        )
        records = job.run(work)
        teacher = job.loaded().teacher_about
    rows = []
    by_key = {}
    for (cfg, _), r in zip(work, records, strict=True):
        by_key.setdefault(cfg.key(), []).append(r)
    for label, cfg in subnets:
        rs = [r for r in by_key[cfg.key()] if r is not None]
        ok = [r for r in rs if r.status == "ok"]
        acc = [100 * r.accuracy for r in ok]
        rows.append(
            {
                "label": label,
                "arch": cfg.to_dict(),
                "arch_text": str(cfg),
                "params": cfg.params(),
                "seeds": [r.seed for r in ok],
                "accuracy_per_seed": [a / 100 for a in acc],
                "accuracy_mean": statistics.fmean(acc) / 100 if acc else None,
                "accuracy_std": statistics.stdev(acc) / 100 if len(acc) > 1 else None,
                "failed": [r.seed for r in rs if r.status == "failed"],
                "pending": len(by_key[cfg.key()]) - len(rs),
                "train_seconds_mean": statistics.fmean(r.train_seconds for r in ok) if ok else None,
            }
        )
    result = {
        "task": args.task_dir,
        "protocol": protocol.name,
        "protocol_hash": protocol.hash(),
        "protocol_text": protocol.describe(),
        "store": args.db,
        "threads": threads,
        "teacher": teacher,
        "subnets": rows,
    }
    if args.json:
        return print_json(result)
    out.print(f"protocol {protocol.name}: {protocol.describe()}")
    if teacher:
        arch = SubnetConfig.from_dict(teacher["arch"])
        out.print(f"teacher {arch}: dev accuracy {teacher['dev_accuracy']:.1%}")
    for row in rows:
        if row["accuracy_mean"] is None:
            out.print(f"{row['arch_text']:<40} no accuracy ({row['label']})")
            continue
        std = row["accuracy_std"]
        spread = f" ± {100 * std:.2f}" if std is not None else ""
        out.print(
            f"{row['arch_text']:<40} {100 * row['accuracy_mean']:.2f}{spread} % dev accuracy "
            f"over seeds {','.join(map(str, row['seeds']))}; "
            f"{row['train_seconds_mean']:.0f} s a fine-tune ({row['label']})"
        )
    return EXIT_OK


def fine_tunes_of(args: argparse.Namespace):
    """The store's fine-tunes that `--task-dir`, `--protocol`, `--supernet` and `--space`
    name: (cfgs, mean accuracy, seeds, scope), checked before anything is fitted."""
    from bfnas.bench.store.accuracy_store import AccuracyStore, WeightsSource, task_sha256
    from bfnas.models.nn.checkpoint import load_supernet
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.protocols import get_protocol
    from bfnas.search.accuracy_predictor import MIN_ROWS, rows_from_store
    from bfnas.search.predictor_file import AccuracyScope

    protocol = get_protocol(args.protocol)
    space = load_space(args.space)
    task = read_task(args.task_dir)
    sha = task_sha256(task.train.path, task.dev.path)
    folder = supernet_folder(args.supernet)
    weights = str(load_supernet(folder).source.get("weights_sha256"))
    with AccuracyStore(args.db, read_only=True) as store:
        cfgs, acc, seeds = rows_from_store(
            store, sha, protocol.hash(), WeightsSource(weights), space.name
        )
    if len(cfgs) < MIN_ROWS:
        raise InputError(
            args.db,
            "finetunes",
            f"{len(cfgs)} fine-tuned subnets of this task, protocol {protocol.name}, "
            f"supernet and space; the accuracy predictor needs at least {MIN_ROWS}: "
            f"`bfnas accuracy measure --samples {MIN_ROWS} ...` first",
        )
    scope = AccuracyScope(
        task_sha256=sha,
        protocol_hash=protocol.hash(),
        protocol=protocol.name,
        space=space.name,
        weights_sha256=weights,
        seq_len=protocol.settings.max_len,
    )
    return cfgs, acc, seeds, scope


def cmd_fit(args: argparse.Namespace) -> int:
    from bfnas.models.outputs import check_output_dir
    from bfnas.search.accuracy_predictor import AccuracyPredictor
    from bfnas.search.predictor_file import META_FILE, MODEL_FILE, AccuracySettings

    check_output_dir(args.out, "--out", holds=(MODEL_FILE, META_FILE))
    cfgs, acc, seeds, scope = fine_tunes_of(args)
    model = AccuracyPredictor(scope, AccuracySettings(seed=args.seed)).fit(cfgs, acc, n_seeds=seeds)
    folder = model.save(args.out)
    m = model.metrics
    result = {"model": str(folder), "scope": scope.model_dump(), "metrics": m}
    if args.json:
        return print_json(result)
    out = console()
    out.print(
        f"accuracy predictor on {m['rows']} subnets ({m['seeds']} fine-tunes, protocol "
        f"{scope.protocol}): out-of-fold Kendall tau {m['oof_kendall_tau']:.3f} (ranking by "
        f"encoder params: {m['params_kendall_tau']:.3f}), mean error "
        f"{m['oof_mae_points']:.2f} points; saved to {folder}"
    )
    return EXIT_OK


def _near_budget(args: argparse.Namespace, seq_len: int, space: Any):
    """The weights of candidates by their predicted latency's distance to `--budgets`."""
    from bfnas.search.accuracy_until import near_budgets
    from bfnas.search.latency_predictor import LatencyPredictor

    if (args.model is None) != (args.budgets is None):
        raise InputError("--budgets", None, "give --model and --budgets together")
    if args.model is None:
        return None
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise InputError("--budgets", None, f"{args.budgets!r}: not numbers") from None
    if not budgets or min(budgets) <= 0:
        raise InputError("--budgets", None, f"{args.budgets!r}: give positive latencies")
    model = LatencyPredictor.load(args.model)
    if model.scope.seq_len != seq_len or model.scope.space != space.name:
        raise InputError(
            "--model",
            "scope",
            f"predicts {model.scope.space} at {model.scope.seq_len} tokens; the protocol "
            f"fine-tunes {space.name} at {seq_len}: profile at the task's length "
            "(the workload the model will serve) and fit on that",
        )
    return near_budgets(model.predict, budgets)


def cmd_collect(args: argparse.Namespace) -> int:
    import random

    from bfnas.bench.jobs.finetuning import default_teachers
    from bfnas.bench.store.accuracy_store import AccuracyStore
    from bfnas.models.outputs import check_output_dir
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.protocols import get_protocol
    from bfnas.search.accuracy_until import AccuracyUntil, AccuracyUntilSettings
    from bfnas.search.finetune_rounds import job_rounds, job_scope
    from bfnas.search.predictor_file import META_FILE, MODEL_FILE
    from bfnas.threads import fit_torch_threads

    protocol = get_protocol(args.protocol)
    settings = AccuracyUntilSettings(
        target_tau=args.until,
        confidence=args.confidence,
        first=args.first,
        round_size=args.round_size,
        max_finetunes=args.max_finetunes,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
    seeds = parse_seeds(args.seeds)
    check_workers(args.workers)
    if args.pool < settings.first:
        raise InputError("--pool", None, f"must be at least --first ({settings.first})")
    check_output_dir(args.out, "--out", holds=(MODEL_FILE, META_FILE))
    space = load_space(args.space)
    near = _near_budget(args, protocol.settings.max_len, space)
    read_task(args.task_dir)
    folder = supernet_folder(args.supernet)
    AccuracyStore.check(args.db)
    threads = fit_torch_threads()
    rng = random.Random(args.seed)
    pool = list({c.key(): c for c in (space.sample(rng) for _ in range(args.pool))}.values())
    out = console(stderr=args.json)
    with (
        AccuracyStore(args.db) as store,
        ProgressDisplay(
            out, "bfnas accuracy collect", "fine-tuning", total=settings.max_finetunes
        ) as bar,
    ):
        job = finetune_job(
            args,
            store,
            folder,
            protocol,
            space,
            threads,
            lambda e: bar.update(note=e.message) if e.kind == "teacher" else None,
            args.teachers or default_teachers(args.db),
        )
        done = 0

        def round_done(subnets: int) -> None:
            nonlocal done
            done += subnets
            bar.update(completed=done)

        result = AccuracyUntil(
            settings=settings,
            scope=job_scope(job),
            pool=pool,
            finetune=job_rounds(job, seeds, round_done),
            near_budget=near,
            on_round=lambda p: bar.message(
                f"round {p.round}: {p.rows} subnets ({p.audited} random), out-of-fold tau "
                f"{p.tau:.3f}, lower bound {p.lower_bound:.3f}, {p.minutes:.1f} fine-tune min"
            ),
        ).run()
        run_id = store.start_run("accuracy-collect", {"until": args.until, "seeds": seeds})
        store.finish_run(run_id, "finished", result.summary(settings))
    model_path = result.predictor.save(args.out) if result.predictor is not None else None
    payload = {
        "stop": result.stop,
        "minutes": result.minutes,
        "subnets": len(result.cfgs),
        "failed": len(result.failed),
        "curve": [p.to_dict() for p in result.curve],
        "model": None if model_path is None else str(model_path),
        "metrics": None if result.predictor is None else result.predictor.metrics,
    }
    if args.json:
        return print_json(payload)
    last = result.curve[-1] if result.curve else None
    out.print(
        f"stopped: {result.stop} after {len(result.cfgs)} subnets, {result.minutes:.1f} "
        "fine-tune minutes"
        + (f"; out-of-fold tau {last.tau:.3f} (lower bound {last.lower_bound:.3f})" if last else "")
        + (f"; predictor saved to {model_path}" if model_path else "")
    )
    return EXIT_OK


RESULT_FILE = "accuracy-search.json"


def cmd_search(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from bfnas.bench.hardware_profile import load_profile
    from bfnas.bench.jobs.context import open_setup
    from bfnas.bench.jobs.finetuning import default_teachers
    from bfnas.bench.store.accuracy_store import AccuracyStore, task_sha256
    from bfnas.bench.store.latency_store import LatencyStore
    from bfnas.models.nn.checkpoint import load_supernet
    from bfnas.models.outputs import check_output_dir, write_atomic
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.protocols import get_protocol
    from bfnas.search.accuracy_predictor import AccuracyPredictor
    from bfnas.search.accuracy_search import AccuracySearch, BaselineMeasurer, searches
    from bfnas.search.evolution import Budget, EvolutionSettings
    from bfnas.search.loop import MIN_ROWS, DeviceVerifier
    from bfnas.search.predictor_file import PredictorSettings
    from bfnas.search.training import load_rows
    from bfnas.threads import fit_torch_threads

    # The cheap checks first: nothing loads, trains or measures for refused input.
    protocol = get_protocol(args.protocol)
    seeds = parse_seeds(args.seeds)
    if args.verify < 1:
        raise InputError("--verify", None, f"must be at least 1, got {args.verify}")
    check_workers(args.workers)
    check_output_dir(args.out, "--out", holds=(RESULT_FILE,))
    check_output_dir(args.artifacts, "--artifacts")
    # Latency at the length the model is fine-tuned for: the workload it will serve.
    profile = load_profile(args.hw).at_seq_len(protocol.settings.max_len)
    Budget(args.max_latency_ms)  # a bad budget refused before anything loads
    space = load_space(args.space)
    task = read_task(args.task_dir)
    folder = supernet_folder(args.supernet)
    if not Path(args.db).is_file():
        raise InputError(args.db, None, "no such store")
    model = AccuracyPredictor.load(
        args.accuracy_model,
        task_sha256=task_sha256(task.train.path, task.dev.path),
        protocol_hash=protocol.hash(),
        space=space.name,
    )
    AccuracyStore.check(args.accuracy_db)
    supernet = load_supernet(folder)
    if model.scope.weights_sha256 != supernet.source.get("weights_sha256"):
        raise InputError(
            args.accuracy_model,
            "scope.weights_sha256",
            f"learned fine-tunes from other weights than {folder}'s",
        )
    with LatencyStore(args.db) as store:
        rows = load_rows(store, profile.hash(), space.name) if store.profiles() else None
    if rows is None or len(rows.cfgs) < MIN_ROWS:
        raise InputError(
            args.db,
            "measurements",
            f"{0 if rows is None else len(rows.cfgs)} trusted rows of {profile.name}; the "
            f"search needs {MIN_ROWS}: `bfnas profile --hw {args.hw} --seq-len "
            f"{profile.workload.seq_len} --space {space.name} --samples 60 --db {args.db}`",
        )
    threads = fit_torch_threads()
    out = console(stderr=args.json)
    setup = open_setup(profile, space, artifacts=args.artifacts, supernet=supernet)
    latency = rows.fit(PredictorSettings(seed=args.seed))
    settings = EvolutionSettings(
        population=args.population,
        parents=max(2, args.population // 4),
        generations=args.generations,
        seed=args.seed,
    )
    with (
        LatencyStore(args.db) as store,
        AccuracyStore(args.accuracy_db) as accuracy_store,
        ProgressDisplay(out, "bfnas accuracy search", "searching") as bar,
    ):
        verifier = DeviceVerifier(setup=setup, store=store)
        measure = BaselineMeasurer(store, profile, verifier, args.max_latency_ms)
        search = searches(
            store=store,
            profile=profile,
            space=space,
            budget_ms=args.max_latency_ms,
            settings=settings,
            verify=args.verify,
            verifier=verifier,
            predictor=latency,
        )
        job = finetune_job(
            args,
            accuracy_store,
            folder,
            protocol,
            space,
            threads,
            lambda e: bar.update(note=e.message or str(e.cfg or "")),
            default_teachers(args.accuracy_db),
        )
        try:
            result = AccuracySearch(
                search=search,
                space=space,
                accuracy=model,
                finetunes=job,
                budget_ms=args.max_latency_ms,
                unit=rows.label,
                verify=measure,
                seeds=tuple(seeds),
                on_event=lambda kind, d: bar.update(description=kind),
            ).run()
        finally:
            setup.close()
            measure.close()
    result["profile"] = profile.name
    write_atomic(Path(args.out) / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    if args.json:
        return print_json(result)
    print_proof(out, result)
    return EXIT_OK


def proven_line(label: str, row: dict | None, unit: str) -> str:
    """One proven model the way the terminal, the report and the card show it."""
    if row is None:
        return f"{label}: none fits the budget"
    acc = "no accuracy"
    if row["accuracy_mean"] is not None:
        std = row["accuracy_std"]
        acc = (
            f"{100 * row['accuracy_mean']:.2f}"
            + (f" ± {100 * std:.2f}" if std is not None else "")
            + " %"
        )
    ms = "not measured" if row["latency_ms"] is None else f"{row['latency_ms']:.3f} ms"
    used = "" if row["budget_used"] is None else f", {row['budget_used']:.0%} of the budget"
    return f"{label}: {row['arch_text']}, {ms} ({unit}){used}, dev accuracy {acc}"


def print_proof(out: Any, r: dict) -> None:
    from rich.markup import escape

    from bfnas.search.ship_report import SHIP_TEXT

    seeds = ",".join(map(str, r["seeds"]))
    out.print(
        escape(
            f"under {r['budget_ms']:.3f} ms ({r['unit_text']}); dev accuracy mean ± std over "
            f"seeds {seeds}, protocol {r['protocol']} ({r['protocol_text']})"
        )
    )
    base = r["baseline"]
    family = f"hand-scaled, {base['role']}" if base else "hand-scaled"
    for label, row in (("winner", r["winner"]), (family, base), ("params", r["params_winner"])):
        out.print(escape(proven_line(label, row, r["unit_text"])))
    for name, m in r["margins"].items():
        if m is not None:
            apart = "apart" if m["separated"] else "overlapping"
            out.print(
                f"winner - {name}: {m['points']:+.2f} ± {m['spread_points']:.2f} points "
                f"(±std ranges {apart})"
            )
    ship = r.get("ship")
    if ship and ship != "winner":
        out.print(escape(f"to ship: the {SHIP_TEXT[ship]}, which measured more accurate"))


def cmd_show(args: argparse.Namespace) -> int:
    from bfnas.bench.store.accuracy_store import AccuracyStore

    with AccuracyStore(args.db, read_only=True) as store:
        summary = store.summary()
        records = store.finetunes()
    if args.json:
        return print_json(summary)
    out = console()
    groups: dict[tuple, dict[str, list]] = {}
    for r in records:
        per = groups.setdefault((r.task_folder, r.protocol), {})
        per.setdefault(str(r.arch), []).append(r)
    if not groups:
        out.print(f"{args.db}: no fine-tunes yet")
    for (task, protocol), per in groups.items():
        out.print(f"task {task}, protocol {protocol}:")
        for arch, rs in per.items():
            acc = [100 * r.accuracy for r in rs if r.status == "ok"]
            failed = sum(r.status == "failed" for r in rs)
            mean = f"{statistics.fmean(acc):.2f}" if acc else "-"
            std = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
            out.print(
                f"  {arch:<40} {mean}{std} % over {len(acc)} seed(s)"
                + (f", {failed} failed" if failed else "")
            )
    return EXIT_OK


def cmd_protocols(args: argparse.Namespace) -> int:
    from bfnas.models.train.protocols import PROTOCOLS

    listed = [
        {"name": p.name, "hash": p.hash(), "describe": p.describe(), "about": p.about}
        for p in PROTOCOLS.values()
    ]
    if args.json:
        return print_json(listed)
    out = console()
    for p in listed:
        out.print(f"{p['name']} ({p['hash']}): {p['describe']}; {p['about']}")
    return EXIT_OK
