"""`bfnas hw ...`, `bfnas bench`, `bfnas profile`, `bfnas worker`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bfnas.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    add_arch_arg,
    add_artifacts_arg,
    add_model_args,
    add_seq_len_arg,
    arch_where,
    artifact_cache,
    command,
    console,
    group,
    on_ray,
    parse_arch,
    print_json,
    profile_at,
    runner_for,
    space_and_supernet,
)
from bfnas.commands.progress import ProgressDisplay
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir
from bfnas.search.until_settings import UntilSettings, until_defaults

DEFAULT_DB = "bfnas.db"


def register(sub) -> None:
    hw = group(sub, "hw", "hardware profiles: list, show, check", "bfnas hw check local-cpu-int8")
    p = command(
        hw, "list", "list the profiles in hw_profiles/", "bfnas hw list --json", cmd_hw_list
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        hw,
        "show",
        "a profile with every default filled in",
        "bfnas hw show local-cpu-int8 --json",
        cmd_hw_show,
    )
    p.add_argument("profile", help="a profile name or a .toml path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        hw,
        "check",
        "validate a profile and probe its target (here, over SSH or on Ray devices); "
        "exit 2 if unusable",
        "bfnas hw check x86-trt-int8",
        cmd_hw_check,
    )
    p.add_argument("profile", help="a profile name or a .toml path")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="probe the devices of this Ray cluster (nodes "
        "advertising a resource named after the profile); e.g. 127.0.0.1:6379 or auto",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        sub,
        "bench",
        "export (cached) and measure one subnet on a device",
        "bfnas bench --hw local-cpu-int8 --space bigger-faster "
        '--arch \'{"layers": 2, "hidden": 264, "heads": 12, "qkv": 264, "ffn": 512}\' --json',
        cmd_bench,
    )
    p.add_argument(
        "--hw", default="local-cpu-int8", help="hardware profile (default local-cpu-int8)"
    )
    add_model_args(p)
    add_arch_arg(p)
    p.add_argument("--db", default=None, help="also store the measurement in this SQLite file")
    add_artifacts_arg(p)
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="measure on the devices of this Ray cluster (nodes "
        "advertising a resource named after the profile); e.g. 127.0.0.1:6379 or auto",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        sub,
        "profile",
        "sample, export, measure and store many subnets (resumable)",
        "bfnas profile --hw local-cpu-int8 --space bigger-faster --samples 100 --db lat.db\n"
        "  bfnas profile --hw local-cpu-int8 --space minilm-l6 --until 0.95 --db lat.db --json",
        cmd_profile,
    )
    p.add_argument(
        "--hw", default="local-cpu-int8", help="hardware profile (default local-cpu-int8)"
    )
    add_seq_len_arg(p)
    add_model_args(p)
    how_many = p.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--samples", type=int, help="how many subnets to measure")
    how_many.add_argument(
        "--until",
        type=float,
        metavar="SHARE",
        help="measure in rounds until, at 95 %% confidence, this share of the latency "
        "predictor's held-out predictions is within --tolerance (e.g. 0.95); each round's "
        "subnets are chosen where the predictor is least sure",
    )
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite latency store (default {DEFAULT_DB})")
    p.add_argument("--strategy", default="random", help="random | stratified (even over log-MACs)")
    until = p.add_argument_group("with --until")
    d = until_defaults()
    until.add_argument(
        "--tolerance",
        type=float,
        default=d["tolerance"],
        help="what counts as within (default %(default)s: ±5 %%)",
    )
    until.add_argument(
        "--max-subnets",
        type=int,
        default=d["max_subnets"],
        help="stop at this many measured subnets of the profile in the space, earlier jobs' "
        "included (default %(default)s)",
    )
    until.add_argument(
        "--max-device-minutes",
        type=float,
        help="stop once the profile's measurements in the space took this much device time",
    )
    until.add_argument(
        "--round-size",
        type=int,
        default=d["round_size"],
        help="subnets measured between refits (default %(default)s)",
    )
    until.add_argument(
        "--choose",
        default=d["choose"],
        help="how a round's chosen subnets are picked: design (where the per-op costs under "
        "the predictor are least pinned down, the default), disagreement (where the fold "
        "models disagree), coverage (farthest from what is measured) or random",
    )
    until.add_argument(
        "--confidence",
        type=float,
        default=d["confidence"],
        help="of the lower bound (default %(default)s)",
    )
    until.add_argument(
        "--first",
        type=int,
        default=d["first"],
        help="random subnets before the first fit (default %(default)s)",
    )
    until.add_argument(
        "--audit",
        type=float,
        default=d["audit"],
        help="share of each round drawn at random while the estimate is below the target, "
        "what the estimate is made on; above it, every row is (default %(default)s)",
    )
    until.add_argument(
        "--pool",
        type=int,
        default=d["pool"],
        help="random candidates a round chooses from (default %(default)s)",
    )
    until.add_argument(
        "--prior",
        metavar="MODEL_DIR",
        help="a predictor of another profile in the same space and workload (`bfnas predictor "
        "fit --out`): the new profile's predictor starts from it and needs fewer rows",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--retry",
        default="",
        help="stored statuses to measure again, e.g. unstable,failed (the earlier "
        "rows are kept as 'superseded')",
    )
    p.add_argument(
        "--discard-artifacts",
        action="store_true",
        help="delete each subnet's ONNX file once measured (its record stays in the store); "
        "for long jobs: an INT8 BERT is ~10 MB",
    )
    add_artifacts_arg(p)
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="measure on the devices of this Ray cluster (nodes "
        "advertising a resource named after the profile); e.g. 127.0.0.1:6379 or auto",
    )
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")

    p = command(
        sub,
        "worker",
        "measure one job (what runs on a device); prints one JSON line",
        "bfnas worker --job job.json",
    )
    p.add_argument("--job", required=True, help="job JSON file, or - for standard input")
    p.set_defaults(handler=cmd_worker)


def cmd_hw_list(args: argparse.Namespace) -> int:
    from bfnas.bench.hardware_profile import load_profile, shipped_profiles

    rows = []
    for name, path in shipped_profiles().items():
        try:
            p = load_profile(name)
            rows.append(
                {
                    "name": p.name,
                    "target": p.target.kind,
                    "backend": p.runtime.backend,
                    "precision": p.precision,
                    "threads": p.runtime.intra_op_threads,
                    "description": p.description,
                    "path": str(path),
                }
            )
        except InputError as exc:
            rows.append({"name": name, "error": exc.line(), "path": str(path)})
    if args.json:
        return print_json(rows)
    from rich.markup import escape
    from rich.table import Table

    table = Table("profile", "target", "backend", "precision", "threads")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "[red]invalid[/]", escape(r["error"]), "", "")
        else:
            table.add_row(r["name"], r["target"], r["backend"], r["precision"], str(r["threads"]))
    console().print(table)
    return EXIT_OK


def cmd_hw_show(args: argparse.Namespace) -> int:
    from bfnas.bench.hardware_profile import load_profile

    p = load_profile(args.profile)
    data = {**p.resolved(), "hash": p.hash(), "source": p.source}
    if args.json:
        return print_json(data)
    import json

    console().print_json(json.dumps(data))
    return EXIT_OK


def cmd_hw_check(args: argparse.Namespace) -> int:
    from bfnas.bench.hardware_profile import load_profile
    from bfnas.bench.runners.usable import probe, refusal

    p = on_ray(load_profile(args.profile), args.ray)
    checks = probe(p)
    usable = all(c.ok for c in checks)
    if args.json:
        print_json({"profile": p.name, "usable": usable, "checks": [c.to_dict() for c in checks]})
    else:
        from rich.markup import escape

        out = console()
        for c in checks:
            out.print(
                f"{'[green]ok  ' if c.ok else '[red]FAIL'}[/] {escape(c.name)}: {escape(c.detail)}"
            )
    error = refusal(p, checks)
    if error is not None:
        # The line a job refuses the profile with (`require_usable`); the check reports any
        # unusable profile as exit 2, a device it could not reach included.
        sys.stderr.write(
            f"bfnas: error: {error.line() if isinstance(error, InputError) else error}\n"
        )
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from bfnas.bench.hardware_profile import load_profile
    from bfnas.bench.jobs.measurement import measure_artifact
    from bfnas.bench.jobs.profiling import anchor_artifact, artifact_for, artifact_record
    from bfnas.bench.runners.base import DeviceUnreachable
    from bfnas.bench.runners.usable import require_usable
    from bfnas.bench.store.latency_store import LatencyStore

    check_output_dir(args.artifacts, "--artifacts")
    profile = on_ray(load_profile(args.hw), args.ray)
    cfg = parse_arch(args.arch)  # before the checkpoint's weights load (cheap checks first)
    space, supernet = space_and_supernet(args)
    space.check(cfg, where=arch_where(args.arch))
    cache = artifact_cache(args.artifacts, seq_len=profile.workload.seq_len)
    if args.db:
        # A --db the write after the measurement would refuse is refused before the export
        # and the measurement, not after them with the result lost; nothing is made yet.
        LatencyStore.check(args.db)
    runner = runner_for(profile)
    try:
        require_usable(profile, runner)  # before the export: nothing built for a device that
        # cannot run it
        art = artifact_for(cache, supernet, cfg, profile)
        result = measure_artifact(
            runner,
            str(art.path),
            art.sha256,
            profile,
            anchor_artifact(cache, profile, cfg),
            on_wait=lambda w: console(stderr=True).print(w.message()),
        )
    except DeviceUnreachable as exc:
        sys.stderr.write(f"bfnas: error: device unreachable: {exc}\n")
        return EXIT_FAILED
    finally:
        runner.close()
    if args.db:
        with LatencyStore(args.db) as store:
            phash = store.add_profile(profile.name, profile.resolved(), profile.hash())
            run_id = store.start_run(phash, "bench", {"space": space.name, "arch": cfg.to_dict()})
            store.add_measurement(
                phash, cfg, space.name, result, run_id, role="bench", artifact=artifact_record(art)
            )
            store.finish_run(run_id, "finished", {"status": result.status.value})
    out = {
        k: v
        for k, v in result.to_dict().items()
        if k not in ("samples_ms", "anchor_samples_ms", "environment")
    }
    out.update(
        {
            "profile": profile.name,
            "profile_hash": profile.hash(),
            "arch": cfg.to_dict(),
            "arch_key": cfg.key(),
            "artifact": str(art.path),
            "fidelity": art.fidelity,
        }
    )
    if args.json:
        print_json(out)
    elif result.failed:
        console().print(f"[red]failed[/]: {result.reason}")
    else:
        paired = (
            f"; paired ratio to the anchor {result.ratio:.4f} ±{result.ratio_rel_ci:.1%} (95 % CI)"
            if result.ratio
            else ""
        )
        cpu = result.cpu or {}
        load = (
            f"; other processes used {cpu['other_cores']:.1f} cores"
            if cpu.get("other_cores") is not None
            else ""
        )
        r = result
        reason = f" ({r.reason})" if r.reason else ""
        console().print(
            escape(
                f"{cfg} on {profile.name}: raw median {r.median_ms:.3f} ms on this device "
                f"(p90 {r.p90_ms:.3f}, CoV {r.cov:.1%}, {r.runs} runs, "
                f"±{r.median_rel_ci:.1%} CI){paired}{load} [{r.status.value}]{reason}"
            )
        )
    return EXIT_OK if not result.failed else EXIT_FAILED


def cmd_profile(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from bfnas.bench.hardware_profile import load_profile
    from bfnas.bench.jobs.context import open_setup
    from bfnas.bench.jobs.profiling import STRATEGIES, ProfileEvent, ProfileJob
    from bfnas.bench.runners.base import DeviceUnreachable
    from bfnas.bench.store.latency_store import LatencyStore

    check_output_dir(args.artifacts, "--artifacts")
    profile = on_ray(profile_at(load_profile(args.hw), args.seq_len), args.ray)
    if args.samples is not None and args.samples < 1:
        raise InputError("--samples", None, "must be at least 1")
    until = _until_settings(args) if args.until is not None else None
    if args.strategy not in STRATEGIES:
        raise InputError(
            "--strategy", None, f"unknown {args.strategy!r} (known: {', '.join(STRATEGIES)})"
        )
    retry = tuple(s for s in args.retry.split(",") if s)
    if set(retry) - {"unstable", "failed"}:
        raise InputError(
            "--retry", None, f"{args.retry!r}: only unstable and failed can be retried"
        )
    out = console(stderr=args.json)
    setup = open_setup(
        profile,
        args.space,
        artifacts=args.artifacts,
        supernet=args.checkpoint,
        supernet_seed=args.supernet_seed,
    )
    try:
        prior = _prior(args.prior, profile, setup.space.name) if args.prior else None
        # The device's checks before the store is opened (opening creates it): a profile the
        # device cannot run is refused with nothing written.
        setup.check_device()
        store = LatencyStore(Path(args.db))
    except DeviceUnreachable as exc:
        setup.close()
        sys.stderr.write(
            f"bfnas: error: device unreachable: {exc}; nothing was written "
            "(rerun the same command once it answers)\n"
        )
        return EXIT_FAILED
    except BaseException:
        setup.close()
        raise
    # The default columns: description, bar, count, time left, and the last measurement.
    progress = ProgressDisplay(
        out, "bfnas profile", f"profiling {profile.name}", total=args.samples
    )

    def on_event(e: ProfileEvent) -> None:
        if e.kind == "plan":
            if until is None:
                progress.update(total=e.todo)
        elif e.kind in ("measured", "skipped"):
            r = e.result
            if r is None:
                last = "last: skipped"
            elif r.median_ms is not None:
                last = f"last: raw {r.median_ms:.2f} ms ({r.status.value})"
            else:
                last = f"last: {r.status.value}"
            progress.update(advance=1, note=last)
        elif e.kind == "drift":
            progress.message(f"[yellow]drift:[/] {escape(e.message)}")
        elif e.kind == "busy":
            progress.message(f"[yellow]{escape(e.message)}[/]")

    common = {
        "setup": setup,
        "store": store,
        "strategy": args.strategy,
        "on_event": on_event,
        "retry": retry,
        "keep_artifacts": not args.discard_artifacts,
        "check_device": False,  # checked above, before the store was opened
    }
    if until is None:
        job = ProfileJob(samples=args.samples, seed=args.seed, **common)
    else:
        from bfnas.search.until_trusted import UntilTrustedJob

        def on_round(p) -> None:
            progress.message(
                f"round {p.round}: {p.rows} trusted subnets; within ±{until.tolerance:.0%}: "
                f"{p.within:.1%} out of fold, at least {p.lower_bound:.1%} at "
                f"{until.confidence:.0%} confidence (target {until.target:.0%}); "
                f"device time {p.device_s / 60:.1f} min"
            )

        job = UntilTrustedJob(settings=until, prior=prior, on_round=on_round, **common)
    try:
        with progress:
            summary = job.run()
    except KeyboardInterrupt:
        sys.stderr.write(
            "bfnas: interrupted; every finished measurement is stored "
            "(rerun the same command to resume)\n"
        )
        return 130
    except DeviceUnreachable as exc:
        sys.stderr.write(
            f"bfnas: error: device unreachable: {exc}; every finished measurement "
            "is stored (rerun the same command to resume)\n"
        )
        return EXIT_FAILED
    finally:
        store.close()
        setup.close()
    if args.json:
        print_json(summary)
    else:
        if until is not None:
            out.print(escape(_until_verdict(summary["until"])))
        out.print(
            f"{summary['ok']} ok, {summary['unstable']} unstable, {summary['failed']} failed, "
            f"{summary['skipped']} already stored, {summary['taken_by_other']} taken by another "
            f"process; reference subnet (raw medians): "
            f"{', '.join(f'{x:.2f}' for x in summary['reference_ms'] if x)} ms"
        )
    return EXIT_OK


def _until_settings(args: argparse.Namespace) -> UntilSettings:
    if not 0 < args.until < 1:
        raise InputError("--until", None, f"a share between 0 and 1 (e.g. 0.95), got {args.until}")
    if args.max_device_minutes is not None and not args.max_device_minutes > 0:
        raise InputError(
            "--max-device-minutes", None, f"must be positive, got {args.max_device_minutes}"
        )
    return UntilSettings(
        target=args.until,
        tolerance=args.tolerance,
        max_subnets=args.max_subnets,
        max_device_s=None if args.max_device_minutes is None else args.max_device_minutes * 60,
        round_size=args.round_size,
        choose=args.choose,
        seed=args.seed,
        first=args.first,
        confidence=args.confidence,
        audit=args.audit,
        pool=args.pool,
    )


def _prior(folder: str, profile, space: str):
    """`--prior`: another profile's predictor for this space and workload."""
    from bfnas.search.latency_predictor import load_prior

    w = profile.workload
    return load_prior(folder, space, w.seq_len, w.batch)


def _until_verdict(until: dict) -> str:
    curve = until["curve"]
    last = curve[-1] if curve else None
    why = {
        "trusted": "trusted",
        "max-subnets": "stopped at --max-subnets before the target",
        "max-device-time": "stopped at --max-device-minutes before the target",
        "pool-exhausted": "stopped: no unmeasured candidate left",
        None: "interrupted",
    }[until["stop"]]
    if last is None:
        return f"{why}: too few trusted subnets to fit a predictor"
    return (
        f"{why}: {last['rows']} trusted subnets, within ±{until['tolerance']:.0%}: "
        f"{last['within']:.1%} out of fold, at least {last['lower_bound']:.1%} at "
        f"{until['confidence']:.0%} confidence (target {until['target']:.0%}); "
        f"device time {last['device_s'] / 60:.1f} min"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    import json

    from bfnas.bench.device.worker import failed_line, run_job_text
    from bfnas.bench.runners.base import resolved_job

    # A failure is the worker's JSON line, as on a device: a runner reads it as data.
    try:
        text = sys.stdin.read() if args.job == "-" else Path(args.job).read_text()
        code, out = run_job_text(json.dumps(resolved_job(json.loads(text))))
    except (OSError, ValueError, InputError) as exc:
        code, out = 1, failed_line(exc)
    print(out)
    return code
