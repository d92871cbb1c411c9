"""The jobs that tie the stages together: the demo runs both stages on this machine.

Stage 1 (`run_stage1`, briefly): a corpus of real prose made offline (stdlib docstrings) ->
pretraining shards -> a few hundred sandwich-rule distillation steps of the supernet from
its teacher -> the one-shot scorer (fidelity to the teacher on the held-out shard).
Stage 2 (`run_demo`): profile N subnets -> fit the latency predictor (5-fold CV) -> with a
task (`ProvenTask`), the accuracy half (`proven_search`: fine-tunes for an accuracy
predictor, the most accurate subnet under a budget proven on both axes against the
hand-scaled model); without one, a search for one-shot fidelity after stage 1, else encoder
params, its top K verified on the device -> time the winner in FP32 too (what INT8 bought)
-> write the HTML report.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.jobs.context import MeasurementSetup, open_setup
from bfnas.bench.jobs.measurement import distrust_label, measure_artifact
from bfnas.bench.jobs.profiling import ProfileJob
from bfnas.bench.store.latency_store import LATENCY_UNITS, LatencyStore
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.outputs import write_atomic
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.evolution import Budget, EvolutionSettings
from bfnas.search.loop import MIN_ROWS, DeviceVerifier, SearchJob
from bfnas.search.objectives import load_objective, objective_unit
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.report import build_report
from bfnas.search.training import cross_validate, load_rows


@dataclass(frozen=True)
class Stage1Settings:
    steps: int = 60
    batch: int = 8
    seq_len: int = 64  # training text length (latency is still timed at the profile's length)
    corpus_lines: int = 3000  # docstrings: enough shards for training plus a held-out one
    lr: float = 1e-4
    seed: int = 0


def stage1_data(
    teacher_dir: str,
    out: Path,
    settings: Stage1Settings = Stage1Settings(),
    on_step: Callable[[str, float], None] = lambda step, fraction: None,
) -> dict[str, Any]:
    """Pretraining shards in `out/data` from the first `corpus_lines` stdlib docstrings,
    tokenized with the teacher's tokenizer (both steps resume from what `out` holds); the
    build's summary."""
    from bfnas.models.nn.checkpoint import resolve_checkpoint
    from bfnas.models.train.pretraining_data import DataSettings, build_data, stdlib_docstrings

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    if not corpus.is_file():
        on_step("stage 1: writing a corpus of stdlib docstrings", 0.0)
        stdlib_docstrings(out / "docstrings.txt")
        lines = (out / "docstrings.txt").read_text().splitlines()[: settings.corpus_lines]
        write_atomic(corpus, "\n".join(lines) + "\n")
    on_step("stage 1: tokenizing, masking, sharding", 0.1)
    return build_data(
        corpus,
        resolve_checkpoint(teacher_dir),
        out / "data",
        DataSettings(seq_len=settings.seq_len, shard_size=512, seed=settings.seed),
    )


def run_stage1(
    teacher_dir: str,
    space: SearchSpace,
    out: Path,
    settings: Stage1Settings = Stage1Settings(),
    on_step: Callable[[str, float], None] = lambda step, fraction: None,
) -> dict[str, Any]:
    """A briefly trained supernet in `out/supernet` and its one-shot scorer. Every step
    resumes from what `out` holds, so a rerun costs little. `on_step` gets each step's
    text and the fraction of stage 1 done (0 to 1)."""
    from bfnas.models.nn.checkpoint import load_supernet, read_config, resolve_checkpoint
    from bfnas.models.train.distill import SupernetTrainer, TrainSettings
    from bfnas.models.train.oneshot import OneShotScorer, held_out_batch
    from bfnas.models.train.pretraining_data import data_tokenizer
    from bfnas.threads import fit_torch_threads

    data = stage1_data(teacher_dir, out, settings, on_step)
    threads = fit_torch_threads()  # a busy core would slow every op of the training ~2.5x
    folder = resolve_checkpoint(teacher_dir)
    teacher = load_supernet(teacher_dir)
    _, _, raw = read_config(folder)
    trainer = SupernetTrainer(
        load_supernet(teacher_dir),
        teacher,
        space.largest(),
        space,
        out / "data",
        out / "supernet",
        TrainSettings(
            steps=settings.steps,
            batch=settings.batch,
            lr=settings.lr,
            seed=settings.seed,
            checkpoint_every=settings.steps,
        ),
        raw,
        # Copied beside the weights: the task stage tokenizes with what the data was made with.
        tokenizer=data_tokenizer(out / "data"),
    )
    trained = trainer.train(
        lambda row: on_step(
            f"stage 1: distilling the supernet, step {row['step']}/{settings.steps}",
            0.15 + 0.85 * row["step"] / settings.steps,
        )
    )
    # Loaded back from the checkpoint so artifacts name the trained supernet as their source.
    supernet = load_supernet(out / "supernet")
    batch = held_out_batch(out / "data", 16)
    scorer = OneShotScorer(supernet, space.largest(), batch, teacher=teacher)
    untrained = OneShotScorer(load_supernet(teacher_dir), space.largest(), batch, teacher=teacher)
    probe = [space.smallest(), *(space.sample(random.Random(settings.seed + i)) for i in range(4))]
    return {
        "supernet": supernet,
        "scorer": scorer,
        "summary": {
            "checkpoint": str(out / "supernet"),
            "steps": trained["steps"],
            "sequences": data.get("sequences"),
            "steps_per_s": trained["steps_per_s"],
            "torch_threads": threads,
            # One-shot fidelity of a few subnets before and after training.
            "oneshot_before": untrained.many(probe),
            "oneshot_after": scorer.many(probe),
        },
    }


def demo_task(task_dir: str | None, out: Path) -> dict[str, Any]:
    """The task the demo searches for: `task_dir` as given, or the offline task at a demo's
    size (`task_data.DEMO_TASK`) made in `out/task` (kept from an earlier run when it was
    made with the same settings). Its folder, labels and sizes."""
    import json
    from dataclasses import asdict

    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.task_data import DEMO_TASK, MANIFEST, build_task

    if task_dir is not None:
        folder = Path(task_dir)
        task = read_task(folder)
        made = False
    else:
        folder = out / "task"
        manifest = folder / MANIFEST
        kept = manifest.is_file() and json.loads(manifest.read_text()).get("settings") == asdict(
            DEMO_TASK
        )
        if not kept:
            build_task(folder, DEMO_TASK)
        task = read_task(folder)
        made = True
    return {
        "folder": str(folder),
        "offline": made,
        "labels": list(task.label_names),
        "train_examples": len(task.train.a),
        "dev_examples": len(task.dev.a),
    }


@dataclass(frozen=True)
class DemoSettings:
    samples: int = 60
    max_latency_ms: float | None = None  # default: see `budget_share`
    # The default budget: this share of the space's largest subnet's measured latency (what
    # a user asks: "a third of MiniLM's latency"); None: the median measured latency.
    budget_share: float | None = None
    verify: int = 3
    seed: int = 0
    population: int = 60
    generations: int = 20
    # On a busy machine some measurements come out untrusted: the profiling job runs again
    # (measuring only those) until this share of the subnets is trusted, at most this often.
    trusted_share: float = 0.9
    profile_rounds: int = 3


def trust_census(store: LatencyStore, profile: HardwareProfile, space: str) -> dict[str, Any]:
    """How many of a profile's measured subnets are trusted, why the rest are not, and what
    other processes used meanwhile (the median over the measurements)."""
    rows = [
        r
        for r in store.measurements(profile.hash(), statuses=("ok", "unstable", "failed"))
        if r.space == space
    ]
    why: dict[str, int] = {}
    for r in rows:
        if r.status != "ok":
            label = distrust_label(r) if r.status == "unstable" else "failed"
            why[label] = why.get(label, 0) + 1
    other = [r.other_cores for r in rows if r.other_cores is not None]
    return {
        "measured": len(rows),
        "trusted": sum(r.status == "ok" for r in rows),
        "unstable": sum(r.status == "unstable" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "not_trusted_because": why,
        "other_cores_median": statistics.median(other) if other else None,
    }


def _too_few_trusted(census: dict[str, Any], rounds: int) -> str:
    why = ", ".join(f"{n} {label}" for label, n in census["not_trusted_because"].items())
    return (
        f"only {census['trusted']} of {census['measured']} measurements could be trusted after "
        f"{rounds} rounds ({why}); the latency predictor needs at least {MIN_ROWS}. This machine "
        "is too noisy to measure right now: stop other heavy work and run the demo again "
        "(it keeps what it measured and measures only the untrusted subnets again)"
    )


def run_demo(
    space: SearchSpace,
    supernet: SuperBert,
    cache: ArtifactCache,
    int8_profile: HardwareProfile,
    fp32_profile: HardwareProfile,
    out: Path,
    settings: DemoSettings = DemoSettings(),
    on_step: Callable[[str, float], None] = lambda step, fraction: None,
    objective: tuple[str, Callable[[SubnetConfig], float]] | None = None,
    on_message: Callable[[str], None] = lambda text: None,
    proven: ProvenTask | None = None,
) -> dict[str, Any]:
    """Stage 2 end to end into `out` (store `demo.db`, search results, `report/`). The search
    maximizes `objective` (name, function); encoder params by default. With `proven`, it is
    the accuracy half instead (`proven_search`): accuracies in `accuracy.db`, the winner
    proven on both axes against the hand-scaled model. Every latency in the result says its
    unit: the search works in the predictor's (`unit`), the INT8 / FP32 comparison in raw
    medians of both."""
    out.mkdir(parents=True, exist_ok=True)
    # The demo measures on this machine (the command refuses any other target).
    setup = open_setup(int8_profile, space, artifacts=cache, supernet=supernet)
    result: dict[str, Any] = {
        "space": space.name,
        "supernet": supernet.source,
        "profile": int8_profile.name,
        "store": str(out / "demo.db"),
    }
    best = None
    with LatencyStore(out / "demo.db") as store:
        # Profiling is most of a latency-only run, a quarter of one that fine-tunes.
        share = 0.7 if proven is None else 0.25
        census = _profile_until_trusted(store, setup, settings, on_step, on_message, share)
        result["profiled"] = census
        if census["trusted"] < MIN_ROWS:
            result["status"] = "too few trusted measurements"
            result["message"] = _too_few_trusted(census, census["rounds"])
        else:
            on_step("fitting the latency predictor (cross-validated)", share + 0.02)
            rows = _fit_latency(store, setup, settings, result)
            budget_ms = _budget(store, setup, settings, rows, result, on_message)
            if proven is None:
                best = _search(
                    store, setup, settings, on_step, objective, result, on_message, budget_ms
                )
            else:
                proof = _prove(
                    store,
                    setup,
                    rows,
                    budget_ms,
                    proven,
                    out,
                    lambda step, f: on_step(step, share + 0.05 + (0.88 - share - 0.05) * f),
                    on_message,
                )
                result.update(proof)
                best = proof.get("winner")
            if best is not None and best.get("median_ms"):
                on_step("timing the winner in FP32", 0.9)
                result["fp32_vs_int8"] = _fp32_vs_int8(
                    setup, SubnetConfig.from_dict(best["arch"]), fp32_profile, best["median_ms"]
                )
    setup.close()
    on_step("writing the report", 0.93)
    accuracy_db = out / ACCURACY_DB if proven is not None else None
    if accuracy_db is not None and not accuracy_db.is_file():
        accuracy_db = None
    result["report"] = str(build_report(out / "demo.db", out / "report", accuracy_db=accuracy_db))
    if "status" not in result:
        result["status"] = (
            "ok" if best is not None and best.get("within_budget") else "no winner within budget"
        )
    on_step("done", 1.0)
    return result


def _profile_until_trusted(
    store: LatencyStore,
    setup: MeasurementSetup,
    settings: DemoSettings,
    on_step: Callable[[str, float], None],
    on_message: Callable[[str], None],
    share: float,
) -> dict[str, Any]:
    """Profile `settings.samples` subnets; while fewer than `trusted_share` of them are
    trusted, measure the untrusted ones again (bounded by `profile_rounds`). A rerun of the
    demo measures a previous run's untrusted subnets again too. `share`: of the progress
    bar."""
    done = 0

    def profiled(e) -> None:
        nonlocal done
        if e.kind == "measured":
            done += 1
            on_step(
                f"profiling {min(done, settings.samples)}/{settings.samples}",
                share * min(done / settings.samples, 1.0),
            )
        elif e.kind in ("busy", "drift"):
            on_message(e.message)

    census: dict[str, Any] = {}
    for round_ in range(1, settings.profile_rounds + 1):
        if round_ > 1:
            on_message(
                f"{census['unstable']} of {census['measured']} measurements were not "
                f"trusted; measuring them again (round {round_} of at most "
                f"{settings.profile_rounds})"
            )
        on_step("profiling", share * min(done / settings.samples, 1.0))
        ProfileJob(
            setup=setup,
            store=store,
            samples=settings.samples,
            strategy="stratified",
            seed=settings.seed,
            on_event=profiled,
            retry=("unstable",),
            keep_artifacts=False,
        ).run()
        census = {**trust_census(store, setup.profile, setup.space.name), "rounds": round_}
        # Enough trusted for the share asked and for a predictor (with --samples 30, 27 of
        # 30 is the share but not the predictor's 30 rows): else the untrusted again.
        enough = max(settings.trusted_share * settings.samples, MIN_ROWS)
        if census["trusted"] >= enough or not census["unstable"]:
            break
    return census


# What the demo's search is after, by objective, for its progress line.
SEARCH_GOALS = {
    "params": "biggest subnet",
    "oneshot": "best one-shot fidelity",
    "task": "most accurate subnet (one-shot task accuracy)",
}


def _fit_latency(
    store: LatencyStore,
    setup: MeasurementSetup,
    settings: DemoSettings,
    result: dict[str, Any],
) -> Any:
    """Cross-validate the latency predictor on the profiled rows (into `result`); the
    rows."""
    rows = load_rows(store, setup.profile.hash(), setup.space.name)
    folds = max(2, min(5, len(rows.cfgs) // 10))  # CV wants >= 10 rows per fold
    cv = cross_validate(rows, PredictorSettings(seed=settings.seed), folds, settings.seed)
    result["unit"] = rows.label
    result["unit_text"] = LATENCY_UNITS[rows.label]
    result["predictor"] = {
        "rows": len(rows.cfgs),
        "label": rows.label,
        "folds": folds,
        **{k: cv[k] for k in ("within_5pct", "within_10pct", "mape", "kendall_tau")},
    }
    return rows


def _budget(
    store: LatencyStore,
    setup: MeasurementSetup,
    settings: DemoSettings,
    rows: Any,
    result: dict[str, Any],
    on_message: Callable[[str], None],
) -> float:
    """The budget asked for, else `budget_share` of the largest subnet's latency measured
    now (in the predictor's unit), else the median measured latency; into `result`."""
    if settings.max_latency_ms is not None:
        budget_ms = settings.max_latency_ms
    elif settings.budget_share is None:
        budget_ms = float(statistics.median(rows.ms))
    else:
        largest = setup.space.largest()
        ms = largest_ms(store, setup, rows.label, on_message)
        if ms is None:  # the largest failed to run: the median, said so
            budget_ms = float(statistics.median(rows.ms))
        else:
            budget_ms = settings.budget_share * ms
            result["budget_from"] = {
                "arch": largest.to_dict(),
                "arch_text": str(largest),
                "latency_ms": ms,
                "share": settings.budget_share,
            }
    result["budget_ms"] = budget_ms
    return budget_ms


def largest_ms(
    store: LatencyStore, setup: MeasurementSetup, unit: str, on_message: Callable[[str], None]
) -> float | None:
    """The space's largest subnet's latency in `unit`: measured once, then read back from
    the store's "budget" run, so that a rerun of the demo keeps its budget (and the
    fine-tunes made for it) rather than one moved by the machine's load."""
    p = setup.profile
    for run in reversed(store.runs("budget", p.hash())):
        kept = json.loads(run["summary"] or "{}").get("largest_ms")
        if run["status"] == "finished" and kept and kept.get("unit") == unit:
            return float(kept["ms"])
    verifier = DeviceVerifier(setup=setup, store=store, on_wait=lambda w: on_message(w.message()))
    store.add_profile(p.name, p.resolved(), p.hash())
    run_id = store.start_run(p.hash(), "budget", {"arch": setup.space.largest().to_dict()})
    v = verifier(setup.space.largest(), run_id)
    ms = v.latency_ms(unit)
    store.finish_run(run_id, "finished", {"largest_ms": {"ms": ms, "unit": unit}})
    if ms is None:
        on_message(f"the largest subnet could not be measured ({v.result.reason})")
    return ms


def _search(
    store: LatencyStore,
    setup: MeasurementSetup,
    settings: DemoSettings,
    on_step: Callable[[str, float], None],
    objective: tuple[str, Callable[[SubnetConfig], float]] | None,
    result: dict[str, Any],
    on_message: Callable[[str], None],
    budget_ms: float,
) -> dict[str, Any] | None:
    """Search for `objective` under the budget and verify the winners on the device; fills
    `result` and returns the best verified subnet."""
    name, fn = objective or ("params", load_objective("params"))
    goal = SEARCH_GOALS.get(name, f"best {name}")
    on_step(f"searching for the {goal} under {budget_ms:.3f} ms ({result['unit_text']})", 0.78)
    verifier = DeviceVerifier(setup=setup, store=store, on_wait=lambda w: on_message(w.message()))
    result["objective"] = name
    search = SearchJob(
        store=store,
        profile=setup.profile,
        space=setup.space,
        objective=fn,
        budget=Budget(budget_ms),
        settings=EvolutionSettings(
            population=settings.population,
            parents=max(settings.population // 4, 2),
            generations=settings.generations,
            seed=settings.seed,
        ),
        verify=settings.verify,
        rounds=1,
        verifier=verifier,
        objective_name=name,
        objective_unit=objective_unit(name),
        on_event=lambda kind, d: (
            on_step(f"verifying {d['index'] + 1}/{d['of']} on the device", 0.85)
            if kind == "verifying"
            else None
        ),
    )
    found = search.run()
    result["best"] = found["best"]
    result["verified"] = found["rounds"][0]["verified"]
    best = found["best"]
    if best is None or best["status"] in ("failed", "not verified"):
        return None
    return best


@dataclass(frozen=True)
class ProvenTask:
    """What the demo's accuracy half fine-tunes: the supernet folder the subnets' weights
    come from, the task, and how (`ProvenSearchSettings`)."""

    supernet_dir: Path
    task_dir: Path
    settings: Any  # ProvenSearchSettings: imported with the half, which loads torch


ACCURACY_DB = "accuracy.db"


def _prove(
    store: LatencyStore,
    setup: MeasurementSetup,
    rows: Any,
    budget_ms: float,
    proven: ProvenTask,
    out: Path,
    on_step: Callable[[str, float], None],
    on_message: Callable[[str], None],
) -> dict[str, Any]:
    """The accuracy half (`proven_search`): the result's "collect", "winner", "baseline",
    "params_winner", "margins" and the whole accuracy search."""
    from bfnas.proven_search import run_proven_search

    latency = rows.fit(PredictorSettings(seed=proven.settings.seed))
    found = run_proven_search(
        store=store,
        setup=setup,
        latency=latency,
        unit=rows.label,
        budget_ms=budget_ms,
        supernet_dir=proven.supernet_dir,
        task_dir=proven.task_dir,
        accuracy_db=out / ACCURACY_DB,
        settings=proven.settings,
        on_step=on_step,
        on_message=on_message,
    )
    search = found["accuracy_search"]
    if search is None:
        return {"objective": "accuracy", "collect": found["collect"]}
    return {
        "objective": "accuracy",
        "collect": found["collect"],
        **{
            k: search[k]
            for k in (
                "protocol",
                "protocol_hash",
                "protocol_text",
                "seeds",
                "winner",
                "baseline",
                "params_winner",
                "hand_scaled",
                "candidates",
                "margins",
                "ship",
            )
        },
    }


def _fp32_vs_int8(
    setup: MeasurementSetup,
    cfg: SubnetConfig,
    fp32_profile: HardwareProfile,
    int8_ms: float | None,
) -> dict[str, Any]:
    """The winner in FP32 against its INT8 measurement, both as raw medians: the anchors of
    the two profiles differ, so their normalized latencies are not comparable."""
    # The same runner, cache and supernet as the INT8 job: only the profile differs.
    art = setup.cache.build(setup.supernet, cfg, "fp32")
    m = measure_artifact(setup.runner, str(art.path), art.sha256, fp32_profile)
    out = {
        "fp32_profile": fp32_profile.name,
        "fp32_status": m.status.value,
        "fp32_median_ms": m.median_ms,
        "int8_median_ms": int8_ms,
        "unit": "median_ms",
        "unit_text": LATENCY_UNITS["median_ms"],
    }
    if not m.failed and int8_ms:
        out["speedup"] = m.median_ms / int8_ms
    return out
