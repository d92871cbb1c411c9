"""The demo's accuracy half: from measured latencies to a winner proven on both axes.

`run_proven_search` fine-tunes a few subnets near the budget into the accuracy store (the
rows the accuracy predictor learns from, `AccuracyUntil` capped at `finetunes`), then runs
the `AccuracySearch`: the subnets the predictor rates best under the budget, the `params`
winner and the hand-scaled MiniLM, each measured on the device and fine-tuned over the
seeds under one protocol, the winner re-ranked on those numbers. It is what `bfnas accuracy
collect` and `bfnas accuracy search` do, at a demo's size.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.finetuning import FinetuneEvent, FinetuneJob, FinetuneSource, default_teachers
from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.train.protocols import FinetuneProtocol, get_protocol
from bfnas.search.accuracy_search import AccuracySearch, BaselineMeasurer, searches
from bfnas.search.accuracy_until import AccuracyUntil, AccuracyUntilSettings, near_budgets
from bfnas.search.evolution import EvolutionSettings
from bfnas.search.finetune_rounds import job_rounds, job_scope
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.loop import DeviceVerifier


@dataclass(frozen=True)
class ProvenSearchSettings:
    protocol: str = "demo"
    finetunes: int = 8  # subnets fine-tuned (one seed each) for the accuracy predictor
    seeds: tuple[int, ...] = (0, 1, 2)  # of every proving fine-tune
    verify: int = 2  # accuracy-search candidates proven on both axes
    params_verify: int = 1  # params winners proven on both axes
    # Verify-and-refit rounds of each search: the first round's picks at the budget's edge
    # measured over it about as often as under (the predictor errs most there).
    rounds: int = 2
    workers: int = 2  # fine-tunes at once, each in its own process, at most one a free core
    threads: int | None = None  # torch threads shared by the workers (None: the free cores)
    pool: int = 2000  # candidates the predictor's rows are drawn from
    # How near the budget those rows are drawn (`near_budgets`' width): wider than a long
    # collection's 0.25, so that a few rows still span sizes enough to show the trend.
    near_width: float = 0.5
    population: int = 60
    generations: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        get_protocol(self.protocol)
        if self.finetunes < 8:
            raise InputError("--finetunes", None, "the accuracy predictor needs at least 8")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise InputError("--seeds", None, "give two or more distinct seeds: a spread needs two")
        for flag, value in (("--verify", self.verify), ("--workers", self.workers)):
            if value < 1:
                raise InputError(flag, None, f"must be at least 1, got {value}")

    @property
    def finetune_protocol(self) -> FinetuneProtocol:
        return get_protocol(self.protocol)


def run_proven_search(
    *,
    store: LatencyStore,
    setup: MeasurementSetup,
    latency: LatencyPredictor,
    unit: str,
    budget_ms: float,
    supernet_dir: Path,
    task_dir: Path,
    accuracy_db: Path,
    settings: ProvenSearchSettings,
    on_step: Callable[[str, float], None] = lambda step, fraction: None,
    on_message: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Collect the accuracy predictor's rows, then search and prove (the module's
    docstring). `latency` is fitted on `store`'s rows of `setup.profile` in `unit`, which the
    budget is in. `on_step` gets the step's text and the fraction of this half done."""
    from bfnas.threads import fit_torch_threads

    protocol = settings.finetune_protocol
    space = setup.space
    # A busy core would slow a worker on it ~2.5x: no more workers than free cores.
    threads = settings.threads or int(fit_torch_threads()["threads"])
    progress = {"phase": "", "share": (0.0, 1.0)}

    def fine_tuned(e: FinetuneEvent) -> None:
        if e.kind == "teacher":
            on_step(e.message, progress["share"][0])
        elif e.kind in ("finished", "stored") and e.total:
            lo, hi = progress["share"]
            done = e.done / e.total
            on_step(f"{progress['phase']}: fine-tuned {e.done}/{e.total}", lo + (hi - lo) * done)

    with AccuracyStore(accuracy_db) as accuracy_store:
        job = FinetuneJob(
            store=accuracy_store,
            source=FinetuneSource(str(supernet_dir), str(task_dir), default_teachers(accuracy_db)),
            protocol=protocol,
            space=space.name,
            teacher_cfg=space.largest(),
            workers=max(1, min(settings.workers, threads)),
            threads=threads,
            on_event=fine_tuned,
        )
        progress.update(phase="accuracy predictor", share=(0.0, 0.35))
        on_step("accuracy predictor: loading the task", 0.0)
        rng = random.Random(settings.seed)
        pool = [space.sample(rng) for _ in range(settings.pool)]
        until = AccuracyUntilSettings(
            # Unreachable from a demo's rows on purpose: the cap decides, and the tau and its
            # bound are reported for what they are.
            target_tau=0.99,
            first=settings.finetunes,
            max_finetunes=settings.finetunes,
            seed=settings.seed,
        )
        collected = AccuracyUntil(
            settings=until,
            scope=job_scope(job),
            pool=pool,
            finetune=job_rounds(job, settings.seeds[:1]),
            near_budget=near_budgets(latency.predict, [budget_ms], settings.near_width),
        ).run()
        run_id = accuracy_store.start_run("accuracy-collect", {"seeds": list(settings.seeds[:1])})
        accuracy_store.finish_run(run_id, "finished", collected.summary(until))
        if collected.predictor is None:
            return {"collect": _collect_summary(collected), "accuracy_search": None}

        progress.update(phase="proving", share=(0.45, 1.0))
        on_step(f"searching under {budget_ms:.3f} ms, verifying on the device", 0.35)
        verifier = DeviceVerifier(
            setup=setup, store=store, on_wait=lambda w: on_message(w.message())
        )
        measure = BaselineMeasurer(store, setup.profile, verifier, budget_ms)
        try:
            result = AccuracySearch(
                search=searches(
                    store=store,
                    profile=setup.profile,
                    space=space,
                    budget_ms=budget_ms,
                    settings=EvolutionSettings(
                        population=settings.population,
                        parents=max(2, settings.population // 4),
                        generations=settings.generations,
                        seed=settings.seed,
                    ),
                    verify=settings.verify,
                    verifier=verifier,
                    predictor=latency,
                    params_verify=settings.params_verify,
                    rounds=settings.rounds,
                ),
                space=space,
                accuracy=collected.predictor,
                finetunes=job,
                budget_ms=budget_ms,
                unit=unit,
                verify=measure,
                seeds=settings.seeds,
                prove=settings.verify,
            ).run()
        finally:
            measure.close()
    return {"collect": _collect_summary(collected), "accuracy_search": result}


def _collect_summary(collected: Any) -> dict[str, Any]:
    last = collected.curve[-1] if collected.curve else None
    return {
        "subnets": len(collected.cfgs),
        "failed": len(collected.failed),
        "minutes": collected.minutes,
        "stop": collected.stop,
        "kendall_tau": None if last is None else last.tau,
        "tau_lower_bound": None if last is None else last.lower_bound,
        "metrics": None if collected.predictor is None else collected.predictor.metrics,
    }
