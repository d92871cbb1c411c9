"""The two-stage loop: search with the predictor, measure the top K on the device, store
them, refit, search again.

A verified winner is compared with its prediction in the predictor's own unit (the
anchor-normalized latency when the store has it, else the raw median), and one that
measures over the budget is reported as such.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.measurement import BusyWait
from bfnas.bench.jobs.profiling import SubnetMeasurer, artifact_record
from bfnas.bench.store.latency_store import LATENCY_UNITS, LatencyStore, now
from bfnas.errors import InputError
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.evolution import Budget, Candidate, EvolutionSettings, evolve, predictor_scorer
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.resources import (
    ResourceLimits,
    ResourcePredictor,
    fit_resource_predictors,
    resource_admission,
)
from bfnas.search.training import TRUSTED, LatencyRows, load_rows

MIN_ROWS = 30


@dataclass(frozen=True)
class Verification:
    """A subnet measured on the device for a search: the measurement, and its latency
    anchor-normalized in the store it went to (None without a paired ratio or a baseline)."""

    result: MeasurementResult
    normalized_ms: float | None = None

    def latency_ms(self, unit: str | None) -> float | None:
        """Its latency in a predictor's unit (`unit`): anchor-normalized where the predictor
        learned those and the measurement has one, else the raw median; None for a failed
        measurement."""
        if self.result.failed:
            return None
        if unit == "normalized_ms" and self.normalized_ms is not None:
            return self.normalized_ms
        return self.result.median_ms


@dataclass(kw_only=True)
class DeviceVerifier:
    """Builds and measures one subnet on the setup's device and stores the result in `store`
    (keyword arguments only)."""

    setup: MeasurementSetup
    store: LatencyStore
    on_wait: Callable[[BusyWait], None] = lambda w: None  # the machine has no core free
    _measure: SubnetMeasurer | None = field(default=None, init=False, repr=False)

    def check_device(self) -> None:
        """Refuse a profile the device cannot run (`bench.runners.usable.require_usable`):
        called by the search before it writes anything."""
        self.setup.check_device()

    def __call__(self, cfg: SubnetConfig, run_id: int) -> Verification:
        p = self.setup.profile
        if self._measure is None:
            self._measure = SubnetMeasurer(self.setup, self.on_wait)
        phash = self.store.add_profile(p.name, p.resolved(), p.hash())
        result, art = self._measure(cfg)
        # A subnet measured for the first time joins the training rows; a repeat is kept
        # apart as role "verify" so a subnet never counts twice.
        role = "verify" if cfg.key() in self.store.measured_keys(phash) else "sample"
        self.store.add_measurement(
            phash,
            cfg,
            self.setup.space.name,
            result,
            run_id,
            role,
            artifact_record(art) if art else None,
        )
        if result.failed:
            return Verification(result)
        return Verification(result, self.store.normalized_of(phash, result))


@dataclass(kw_only=True)
class SearchJob:
    """Search `space` with a latency predictor for the best subnet under `budget` on
    `profile`, verify the top `verify` on the device (through `verifier`), store them, refit
    and search again for `rounds` rounds. Keyword arguments only."""

    store: LatencyStore
    profile: HardwareProfile
    space: SearchSpace
    objective: Callable[[SubnetConfig], float]
    budget: Budget
    settings: EvolutionSettings = field(default_factory=EvolutionSettings)
    verify: int = 0
    rounds: int = 1
    verifier: Callable[[SubnetConfig, int], Verification] | None = None
    predictor: LatencyPredictor | None = None  # fitted from the store when None
    on_event: Callable[[str, dict], None] = lambda kind, data: None
    objective_name: str | None = None  # recorded with the result, for reports
    objective_unit: str | None = None
    # Memory and model size a subnet may take on the device (`search.resources`).
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    _resources: dict[str, ResourcePredictor] = field(default_factory=dict, init=False)

    def run(self) -> dict[str, Any]:
        if self.rounds < 1:
            raise InputError.bad_setting("rounds", "must be at least 1")
        if self.verify < 0:
            raise InputError.bad_setting("verify", "must be 0 or more")
        if self.verify and self.verifier is None:
            raise ValueError("verify > 0 needs a verifier")
        predictor = self.predictor
        label = predictor.metrics.get("label") if predictor is not None else None
        if predictor is None:  # fitted before anything is written: a store too small is bad input
            predictor, label = self._fit(1)
        elif self.limits.active():
            self._fit_resources()
        check = getattr(self.verifier, "check_device", None)
        if self.verify and check is not None:
            check()
        phash = self.profile.hash()
        # The run's row is written once there is something to record: the first verification
        # (its measurements belong to the run) or the end. A search refused before that (an
        # objective plugin that raised or returned no number, a Ctrl-C while evolving) leaves
        # the store as it was, not an "interrupted" run that did nothing.
        started = now()
        run: list[int] = []

        def run_id() -> int:
            if not run:
                self.store.add_profile(self.profile.name, self.profile.resolved(), phash)
                run.append(
                    self.store.start_run(
                        phash,
                        "search",
                        {
                            "space": self.space.name,
                            "max_ms": self.budget.max_ms,
                            "min_ms": self.budget.min_ms,
                            **self.limits.active_settings(),
                            "verify": self.verify,
                            "rounds": self.rounds,
                        },
                        started=started,
                    )
                )
            return run[0]

        rounds: list[dict] = []
        verified_all: list[dict] = []
        result: dict[str, Any] = {}
        status = "interrupted"
        try:
            target = self.budget  # what the next round searches under
            for r in range(1, self.rounds + 1):
                if r > 1 and self.verify:  # the store has grown by the verified subnets
                    predictor, label = self._fit(r)
                found = evolve(
                    self.space,
                    predictor_scorer(predictor),
                    self.objective,
                    target,
                    self.settings,
                    lambda row, r=r: self.on_event("generation", {"round": r, **row}),
                    admit=resource_admission(self._resources, self.limits),
                )
                picks = self._picks(found.candidates, found.front)
                verified = []
                for i, cand in enumerate(picks):
                    self.on_event(
                        "verifying",
                        {"round": r, "index": i, "of": len(picks), "arch": str(cand.cfg)},
                    )
                    m = self.verifier(cand.cfg, run_id())  # type: ignore[misc]
                    verified.append(self._verified(cand, m, label))
                verified_all += verified
                searched_under = target.max_ms
                target = self._next_target(target, verified)
                rounds.append(
                    {
                        "round": r,
                        "searched_under_ms": searched_under,
                        "evaluated": found.evaluated,
                        "seconds": found.seconds,
                        "predictor_calls": found.predictor_calls,
                        "label": label,
                        "spread": list(predictor.spread) if predictor.spread else None,
                        "best": found.best.to_dict() if found.best else None,
                        "front": [c.to_dict() for c in found.front],
                        "history": found.history,
                        "verified": verified,
                    }
                )
            status = "finished"
            result = {
                "best": self._best(rounds, verified_all),
                "rounds": rounds,
                "run_id": run_id(),
                "profile": self.profile.name,
                "profile_hash": phash,
                "space": self.space.name,
                "budget": {"max_ms": self.budget.max_ms, "min_ms": self.budget.min_ms},
                "limits": self.limits.active_settings(),
                "resource_predictors": {
                    name: {**p.metrics, "spread": list(p.spread)}
                    for name, p in self._resources.items()
                },
                "mode": self.settings.mode,
                "objective_name": self.objective_name,
                "objective_unit": self.objective_unit,
                # Budget, predictions and `measured_ms` are in the predictor's unit;
                # `median_ms` is always the raw median.
                "unit": label,
                "unit_text": LATENCY_UNITS.get(label or "", "ms (unit not recorded)"),
                "evaluated": sum(r["evaluated"] for r in rounds),
                "seconds": sum(r["seconds"] for r in rounds),
            }
        finally:
            # The whole result stays with the run: `bfnas report` draws it from the store.
            if run:
                self.store.finish_run(
                    run[0],
                    status,
                    {
                        "rounds": len(rounds),
                        "verified": len(verified_all),
                        "result": result or None,
                    },
                )
        return result

    def _fit(self, round_: int) -> tuple[LatencyPredictor, str]:
        rows = self._rows()
        predictor = rows.fit(PredictorSettings(seed=self.settings.seed))
        self.on_event("fitted", {"round": round_, "rows": len(rows.cfgs), "label": rows.label})
        self._fit_resources()
        return predictor, rows.label

    def _fit_resources(self) -> None:
        """A predictor per resource limit, from the store's trusted rows of this profile."""
        if not self.limits.active():
            return
        rows = [
            r
            for r in self.store.measurements(self.profile.hash(), statuses=TRUSTED)
            if r.space == self.space.name
        ]
        w = self.profile.workload
        self._resources = fit_resource_predictors(
            rows, self.limits, w.seq_len, w.batch, str(self.store.path)
        )

    def _rows(self) -> LatencyRows:
        where = str(self.store.path)
        try:
            rows = load_rows(self.store, self.profile.hash(), self.space.name)
        except InputError:
            rows = None
        if rows is None or len(rows.cfgs) < MIN_ROWS:
            have = 0 if rows is None else len(rows.cfgs)
            raise InputError(
                where,
                "measurements",
                f"{have} trusted measurements of {self.profile.name} in space {self.space.name}, "
                f"a predictor needs at least {MIN_ROWS}: profile 300 subnets of space "
                f"{self.space.name} on {self.profile.name} into this store first",
            )
        return rows

    def _picks(self, candidates: list[Candidate], front: list[Candidate]) -> list[Candidate]:
        if not self.verify:
            return []
        if self.settings.mode == "pareto" and front:
            if len(front) <= self.verify:
                return list(front)
            step = (len(front) - 1) / max(self.verify - 1, 1)
            return [front[round(i * step)] for i in range(self.verify)]
        feasible = sorted((c for c in candidates if c.feasible), key=lambda c: -c.objective)
        return feasible[: self.verify]

    def _next_target(self, target: Budget, verified: list[dict]) -> Budget:
        """The budget the next round searches under: where every pick of this round measured
        over the budget, lowered by how far over their predictions they measured (the
        median ratio). The picks sit at the budget's edge, where the predictor's error is
        largest and its refit from a couple of new rows moves little; without this, the next
        round picks their look-alikes, over the budget again. Verification still holds
        every pick to the budget itself."""
        ratios = [
            v["measured_ms"] / v["predicted_ms"]
            for v in verified
            if v["measured_ms"] is not None and v["predicted_ms"]
        ]
        if not ratios or any(v["within_budget"] for v in verified):
            return target
        bias = statistics.median(ratios)
        if bias <= 1:
            return target
        lowered = target.max_ms / bias
        floor = self.budget.min_ms
        if floor is not None and lowered <= floor:
            return target
        return Budget(lowered, floor)

    def _verified(self, cand: Candidate, v: Verification, label: str | None) -> dict:
        m, measured = v.result, v.latency_ms(label)
        within = (
            None
            if measured is None
            else bool(
                measured <= self.budget.max_ms
                and (self.budget.min_ms is None or measured >= self.budget.min_ms)
            )
        )
        resources = self.limits.measured(m)
        if within and self.limits.active():
            # Within the budget means every limit, as measured: latency, memory and size.
            within = self.limits.fits(m)
        return {
            **cand.to_dict(),
            "status": m.status.value,
            "reason": m.reason,
            "measured_ms": measured,
            "median_ms": m.median_ms,
            "error": None if measured is None else measured / cand.predicted_ms - 1,
            "memory_mb": resources["memory"],
            "size_mb": resources["size"],
            "within_budget": within,
        }

    def _best(self, rounds: list[dict], verified: list[dict]) -> dict | None:
        keep = (
            "arch",
            "key",
            "objective",
            "predicted_ms",
            "high_ms",
            "measured_ms",
            "median_ms",
            "memory_mb",
            "size_mb",
            "within_budget",
            "status",
        )
        if verified:
            good = [v for v in verified if v["within_budget"]]
            pick = max(good or verified, key=lambda v: v["objective"])
            return {k: pick.get(k) for k in keep}
        last = rounds[-1]["best"] if rounds else None
        if last is None:
            return None
        return {
            **{k: last.get(k) for k in keep},
            "measured_ms": None,
            "median_ms": None,
            "within_budget": None,
            "status": "not verified",
        }
