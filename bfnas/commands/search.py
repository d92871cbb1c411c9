"""`bfnas search`: the best architecture under a latency budget on a device."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bfnas.commands.common import (
    EXIT_OK,
    add_artifacts_arg,
    add_model_args,
    command,
    console,
    print_json,
    space_and_supernet,
    unit_warnings,
)
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir, check_output_file, write_atomic
from bfnas.search.objectives import OBJECTIVES

RESULT_FILES = ("best.json", "pareto.json", "history.json")


def register(sub) -> None:
    p = command(
        sub,
        "report",
        "a self-contained HTML report of a store: coverage, predictor accuracy, searches; "
        "with --accuracy-db, the model to ship",
        "bfnas report --db lat.db --accuracy-db accuracy.db --out report/",
        cmd_report,
    )
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument(
        "--accuracy-db",
        help="accuracy store: the report opens with its latest accuracy search's model to ship "
        "(winner, hand-scaled baseline and params winner, proven on latency and accuracy)",
    )
    p.add_argument("--out", required=True, help="folder for report.html and its PNGs")
    p.add_argument("--json", action="store_true", help="print where the report is as JSON")

    p = command(
        sub,
        "search",
        "latency-constrained evolutionary search, verified on the device",
        "bfnas search --hw local-cpu-int8 --space bigger-faster --db lat.db "
        "--max-latency-ms 5 --verify 3 --rounds 2 --out search/ --json",
        cmd_search,
    )
    p.add_argument(
        "--hw", default="local-cpu-int8", help="hardware profile (default local-cpu-int8)"
    )
    add_model_args(p)
    p.add_argument(
        "--db", required=True, help="SQLite latency store with the profile's measurements"
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        required=True,
        help="latency budget, in the predictor's unit: anchor-normalized ms where the "
        "store's rows have an anchor (bfnas's own), else raw median ms (imported)",
    )
    p.add_argument("--min-latency-ms", type=float, help="optional latency floor (same unit)")
    p.add_argument(
        "--max-memory-mb",
        type=float,
        help="peak resident memory a subnet may take on the device while it runs, above the "
        "runtime's own (MB): predicted from the store's rows, held to as measured",
    )
    p.add_argument(
        "--max-size-mb", type=float, help="model file size a subnet may have (MB), likewise"
    )
    p.add_argument(
        "--objective",
        default="params",
        # The registered objectives, read from the registry: a new one shows up here.
        help=f"{' | '.join(OBJECTIVES)} | module:function (default: params)",
    )
    p.add_argument(
        "--data",
        help="for --objective oneshot: `bfnas data build` output (its last shard is held out)",
    )
    add_task_objective_args(p)
    p.add_argument(
        "--mode",
        default="best",
        choices=("best", "pareto"),
        help="best: one winner; pareto: the latency/objective front (NSGA-II selection)",
    )
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--parents", type=int, default=25)
    p.add_argument("--generations", type=int, default=30)
    p.add_argument(
        "--no-margin",
        action="store_true",
        help="constrain the predicted latency itself, not the top of its spread",
    )
    p.add_argument(
        "--model", help="a saved predictor (`predictor fit`); default: fit one from the store"
    )
    p.add_argument(
        "--verify", type=int, default=3, help="measure the top K on the device (default 3)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="search, verify, add to the store, refit, search again (default 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_artifacts_arg(p)
    p.add_argument("--out", required=True, help="folder for best.json, pareto.json, history.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_task_objective_args(p: argparse.ArgumentParser) -> None:
    """The flags of the `task` and `task-finetune` objectives."""
    p.add_argument(
        "--task-supernet",
        help="for --objective task (needed) and task-finetune (its weights and head are "
        "inherited): a folder made by `bfnas supernet finetune`",
    )
    p.add_argument(
        "--task-dir",
        help="for the task objectives: the task folder (default: the one the task "
        "supernet's task.json names)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=1,
        help="task-finetune: epochs of each candidate's fine-tune (default 1)",
    )
    p.add_argument(
        "--finetune-examples",
        type=int,
        help="task-finetune: fine-tune on this many train examples (a fixed seeded subset; "
        "default all)",
    )
    p.add_argument("--finetune-lr", type=float, default=2e-4, help="task-finetune (default 2e-4)")
    p.add_argument("--finetune-batch", type=int, default=32, help="task-finetune (default 32)")
    p.add_argument(
        "--finetune-max-len",
        type=int,
        default=64,
        help="task-finetune: tokens per example (default 64)",
    )
    p.add_argument(
        "--finetune-workers",
        type=int,
        default=2,
        help="task-finetune: candidates fine-tuned at once, each in its own process with "
        "its share of torch's threads; on a Ray profile, actors on its cluster (default 2)",
    )
    p.add_argument(
        "--task-cache",
        help="task-finetune: JSON file of finished fine-tunes, by arch key and settings "
        "(default task-finetune.json beside the artifact cache)",
    )
    p.add_argument(
        "--accuracy-model",
        help="for --objective accuracy: an accuracy predictor (`bfnas accuracy fit --out`), "
        "fitted at the profile's sequence length",
    )


def task_objective_fields(args: argparse.Namespace, profile, space) -> dict:
    """What the task objectives are made from (`ObjectiveSettings`), from the flags."""
    from bfnas.models.train.finetune import FinetuneSettings
    from bfnas.models.train.finetune_fitness import FitnessSettings, default_cache_file

    fields: dict = {
        "task_supernet": args.task_supernet,
        "task_dir": args.task_dir,
        "checkpoint": args.checkpoint,
        "space": space,
        "accuracy_model": args.accuracy_model,
    }
    if args.objective == "task-finetune":
        ray = profile.target.kind == "ray"  # the search's device fleet runs the fine-tunes too
        fields["fitness"] = FitnessSettings(
            finetune=FinetuneSettings(
                epochs=args.finetune_epochs,
                lr=args.finetune_lr,
                batch=args.finetune_batch,
                max_len=args.finetune_max_len,
            ),
            train_examples=args.finetune_examples,
            workers=args.finetune_workers,
            pool="ray" if ray else "local",
            ray_address=profile.target.address if ray else None,  # a ray target has one
            cache_file=args.task_cache or default_cache_file(),
        )
    return fields


def cmd_search(args: argparse.Namespace) -> int:
    from bfnas.bench.hardware_profile import load_profile
    from bfnas.models.space.search_space import load_space
    from bfnas.search.evolution import Budget, EvolutionSettings
    from bfnas.search.latency_predictor import LatencyPredictor
    from bfnas.search.objectives import load_objective
    from bfnas.search.resources import ResourceLimits

    # Everything a user can get wrong is checked before anything runs or is written.
    check_output_dir(args.out, "--out", holds=RESULT_FILES)
    if args.verify:
        check_output_dir(args.artifacts, "--artifacts")
    profile = load_profile(args.hw)
    budget = Budget(args.max_latency_ms, args.min_latency_ms)
    limits = ResourceLimits(args.max_memory_mb, args.max_size_mb)
    settings = EvolutionSettings(
        population=args.population,
        parents=args.parents,
        generations=args.generations,
        margin=not args.no_margin,
        mode=args.mode,
        seed=args.seed,
    )
    if not Path(args.db).is_file():
        raise InputError(
            args.db,
            None,
            f"no such store: run `bfnas profile --hw {profile.name} "
            f"--space {args.space} --samples 300 --db {args.db}` first",
        )
    # The predictor folder is checked before the checkpoint's weights load (cheap checks first).
    predictor = (
        LatencyPredictor.load(args.model, profile.hash(), load_space(args.space).name)
        if args.model
        else None
    )
    space, supernet = space_and_supernet(args)
    scorer = None
    if args.objective == "oneshot" and args.data:
        from bfnas.models.train.oneshot import OneShotScorer, held_out_batch

        # The teacher is the supernet's largest member: the checkpoint it was loaded from.
        scorer = OneShotScorer(supernet, space.largest(), held_out_batch(args.data))
    if args.task_cache:
        check_output_file(args.task_cache, "--task-cache")
    objective = load_objective(
        args.objective,
        profile.workload.seq_len,
        profile.workload.batch,
        oneshot=scorer,
        **task_objective_fields(args, profile, space),
    )
    with closing_objective(objective):
        return _search(
            args, profile, space, supernet, budget, settings, predictor, objective, limits
        )


@contextmanager
def closing_objective(objective) -> Iterator[None]:
    """An objective that holds processes (task-finetune's workers) is closed at the end."""
    try:
        yield
    finally:
        close = getattr(objective, "close", None)
        if close is not None:
            close()


def _search(args, profile, space, supernet, budget, settings, predictor, objective, limits) -> int:
    from bfnas.bench.jobs.context import open_setup
    from bfnas.bench.store.latency_store import LatencyStore
    from bfnas.search.loop import DeviceVerifier, SearchJob
    from bfnas.search.objectives import objective_unit

    # The space and supernet loaded above are the setup's: the objective needed them first.
    setup = (
        open_setup(profile, space, artifacts=args.artifacts, supernet=supernet)
        if args.verify
        else None
    )
    out = console(stderr=args.json)
    # The store records its run; the setup, when verifying, closes its runner at the end.
    with LatencyStore(Path(args.db), create=False) as store, setup or nullcontext():
        verifier = None if setup is None else DeviceVerifier(setup=setup, store=store)
        progress = ProgressDisplay(
            out,
            "bfnas search",
            "searching",
            total=args.generations + 1,
            columns=("description", "bar", "count", "note"),
            transient=True,
        )

        def on_event(kind: str, data: dict) -> None:
            if kind == "fitted":
                progress.update(
                    description=f"round {data['round']}: searching",
                    completed=0,
                    total=args.generations + 1,
                    note=f"predictor fitted on {data['rows']} rows",
                )
            elif kind == "generation":
                best = data["best_predicted_ms"]
                progress.update(
                    completed=data["generation"] + 1,
                    note=""
                    if best is None
                    else f"best {data['best_objective']:.4g} at {best:.3f} ms predicted",
                )
            elif kind == "verifying":
                progress.update(
                    description=f"round {data['round']}: verifying "
                    f"{data['index'] + 1}/{data['of']}",
                    note=data["arch"],
                )

        job = SearchJob(
            store=store,
            profile=profile,
            space=space,
            objective=objective,
            budget=budget,
            settings=settings,
            verify=args.verify,
            rounds=args.rounds,
            verifier=verifier,
            predictor=predictor,
            on_event=on_event,
            objective_name=args.objective,
            objective_unit=objective_unit(args.objective),
            limits=limits,
        )
        here = {k: ms for (h, k), ms in store.anchor_baselines().items() if h == profile.hash()}
        warnings = unit_warnings(predictor, here, args.db)
        for line in warnings:
            out.print(f"warning: {line}", markup=False)
        with progress:
            result = job.run()
        result["warnings"] = warnings
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(
        RESULT_FILES, (result["best"], result["rounds"][-1]["front"], result), strict=True
    ):
        write_atomic(folder / name, json.dumps(data, indent=2) + "\n")
    if args.json:
        summary = {k: v for k, v in result.items() if k != "rounds"}
        summary["rounds"] = [
            {k: v for k, v in r.items() if k not in ("front", "history")} for r in result["rounds"]
        ]
        summary["out"] = str(folder)
        return print_json(summary)
    _print(out, result, folder)
    return EXIT_OK


def _print(out, result: dict, folder: Path) -> None:
    best = result["best"]
    if best is None:
        out.print(
            f"no subnet of {result['space']} is predicted under {result['budget']['max_ms']} ms "
            f"({result['unit_text']}) on {result['profile']}"
        )
        return
    out.print(
        f"latencies in {result['unit_text']}; raw medians marked raw; objective "
        f"{result['objective_name']}: {result['objective_unit']}"
    )
    for r in result["rounds"]:
        for v in r["verified"]:
            measured = "failed" if v["measured_ms"] is None else f"{v['measured_ms']:.3f} ms"
            flag = "" if v["within_budget"] else "  [red]over budget[/]"
            out.print(
                f"round {r['round']}: {v['arch']} objective {v['objective']:.4g}: predicted "
                f"{v['predicted_ms']:.3f} ms, measured {measured}{resource_text(v)}{flag}"
            )
    state = {True: "within budget", False: "[red]OVER BUDGET[/]", None: "not verified"}[
        best["within_budget"]
    ]
    measured = (
        "-"
        if best["measured_ms"] is None
        else (
            f"{best['measured_ms']:.3f} ms, "
            f"{best['measured_ms'] / result['budget']['max_ms']:.0%} of the "
            f"budget (raw median {best['median_ms']:.3f} ms)"
        )
    )
    out.print(
        f"best: {best['arch']} objective {best['objective']:.4g}, predicted "
        f"{best['predicted_ms']:.3f} ms, "
        f"measured {measured}{resource_text(best)} ({state})"
    )
    limits = result.get("limits") or {}
    if limits:
        fitted = result.get("resource_predictors") or {}
        out.print(
            "limits: "
            + ", ".join(f"{k.removeprefix('max_')} {v:g}" for k, v in limits.items())
            + "; predicted by "
            + ", ".join(
                f"{name} ({m['rows']} rows, {m['within_10pct']:.0%} within 10 % out of fold)"
                for name, m in fitted.items()
            )
        )
    out.print(f"written to {folder}")


def resource_text(v: dict) -> str:
    """`, 41.2 MB memory, 9.8 MB file` where measured, else nothing."""
    parts = [
        f"{v[key]:.1f} MB {what}"
        for key, what in (("memory_mb", "memory"), ("size_mb", "file"))
        if v.get(key) is not None
    ]
    return "".join(f", {p}" for p in parts)


def cmd_report(args: argparse.Namespace) -> int:
    from bfnas.search.report import build_report, report_facts
    from bfnas.search.ship_report import load_accuracy_search

    check_output_dir(args.out, "--out", holds=("report.html",))
    if args.accuracy_db is not None:
        # Refused before the progress line starts: the refusal is the one line printed. It is
        # read again while the report is built (a moment's work).
        load_accuracy_search(args.accuracy_db)
    out = console(stderr=args.json)
    with ProgressDisplay(
        out,
        "bfnas report",
        "building the report",
        columns=("spinner", "description"),
        transient=True,
    ) as status:
        page = build_report(
            args.db,
            args.out,
            on_step=lambda step: status.update(description=step),
            accuracy_db=args.accuracy_db,
        )
    if args.json:
        return print_json(report_facts(page))
    out.print(f"report written to {page}")
    return EXIT_OK
