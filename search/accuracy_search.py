"""The most accurate subnet under a latency budget, proven on both axes and held against the
models a user would pick by hand.

`AccuracySearch(...).run()`:

1. searches with the latency predictor for the subnets the accuracy predictor rates best
   under the budget (`SearchJob`, objective `predicted accuracy`), verifies the top `verify`
   on the device (latency) and fine-tunes each with the protocol over `seeds` (accuracy);
   the winner is the verified candidate within the budget with the best *measured* mean
   accuracy, not the best prediction;
2. does the same for the `params` winner (the biggest subnet under the budget, the
   Bigger&Faster thesis without an accuracy model);
3. measures the hand-scaled MiniLM families on the device and fine-tunes the largest member
   of each that fits (`baselines`), the more accurate of the two being the baseline;
4. reports the winner's margin over each, in accuracy points, with its spread, and names
   the model to ship: whichever of the three measured the most accurate within the budget
   (the search's winner unless a model a user would pick without it measured better).

Every fine-tune goes through the `FinetuneJob` (the accuracy store: none runs twice), every
latency through the search's verifier (the latency store).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.jobs.finetuning import FinetuneJob
from bfnas.bench.store.latency_store import LATENCY_UNITS, LatencyStore
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.baselines import largest_fitting
from bfnas.search.evolution import Budget, EvolutionSettings
from bfnas.search.loop import DeviceVerifier, SearchJob, Verification
from bfnas.search.objectives import PredictedAccuracy, load_objective, objective_unit


@dataclass(frozen=True)
class Proven:
    """One subnet measured on both axes: its latency on the device (the budget's unit) and
    its accuracy fine-tuned over the seeds."""

    role: str  # "winner" | "candidate" | "params" | "fewer layers" | "narrower"
    cfg: SubnetConfig
    latency_ms: float | None
    median_ms: float | None
    budget_ms: float
    accuracies: tuple[float, ...]  # per seed, fractions
    seeds: tuple[int, ...]
    predicted_accuracy: float | None = None

    @property
    def within_budget(self) -> bool:
        return self.latency_ms is not None and self.latency_ms <= self.budget_ms

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "arch": self.cfg.to_dict(),
            "arch_text": str(self.cfg),
            "encoder_params": self.cfg.params(embeddings=False),
            "latency_ms": self.latency_ms,
            "median_ms": self.median_ms,
            "budget_used": None if self.latency_ms is None else self.latency_ms / self.budget_ms,
            "within_budget": self.within_budget,
            "accuracy_mean": self.mean,
            "accuracy_std": self.std,
            "accuracy_per_seed": list(self.accuracies),
            "seeds": list(self.seeds),
            "predicted_accuracy": self.predicted_accuracy,
        }


def margin(a: Proven, b: Proven) -> dict[str, Any] | None:
    """`a`'s mean accuracy over `b`'s in points, the spread of that difference (the standard
    error of a difference of two means over their seeds) and whether the two ±std ranges
    are apart."""
    if a.mean is None or b.mean is None:
        return None
    var = sum((p.std or 0.0) ** 2 / len(p.accuracies) for p in (a, b))
    sa, sb = a.std or 0.0, b.std or 0.0
    return {
        "points": 100 * (a.mean - b.mean),
        "spread_points": 100 * math.sqrt(var),
        "separated": (a.mean - sa > b.mean + sb) or (b.mean - sb > a.mean + sa),
    }


def ship_role(models: dict[str, Proven | None]) -> str | None:
    """The result's key of the model to ship: the most accurate (measured mean) of `models`
    within the budget; the first in order on a tie, so the search's winner keeps its place
    unless another measured better. None when none is within the budget."""
    ok = [(k, m) for k, m in models.items() if m and m.within_budget and m.mean is not None]
    return max(ok, key=lambda km: km[1].mean)[0] if ok else None  # type: ignore[arg-type, return-value]


@dataclass(kw_only=True)
class AccuracySearch:
    """See the module's docstring. `search` makes a `SearchJob` for an objective (name and
    callable): the caller fixes the store, profile, space, budget, evolution settings, the
    latency predictor and the verifier, so all three searches share them. `accuracy` is the
    fitted accuracy predictor (anything with `predict(cfgs)`)."""

    search: Callable[[str, Any], SearchJob]
    space: SearchSpace
    accuracy: Any
    finetunes: FinetuneJob
    budget_ms: float
    unit: str  # the predictor's latency unit, which the budget is in
    verify: Callable[[SubnetConfig], dict]  # measure one subnet on the device
    seeds: tuple[int, ...] = (0, 1, 2)
    # At most this many verified subnets within the budget fine-tuned from each search, the
    # best by its objective first (None: every one; a search of several rounds verifies more
    # than it needs to prove).
    prove: int | None = None
    on_event: Callable[[str, dict], None] = lambda kind, data: None
    _fine_tuned: dict[str, tuple[tuple[float, ...], tuple[int, ...]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def run(self) -> dict[str, Any]:
        """The result (see the module's docstring), also kept as a run of kind
        "accuracy-search" in the accuracy store, which `bfnas report` draws it from."""
        store = self.finetunes.store
        run_id = store.start_run(
            "accuracy-search",
            {
                "budget_ms": self.budget_ms,
                "unit": self.unit,
                "protocol": self.finetunes.protocol.name,
                "seeds": list(self.seeds),
                "space": self.space.name,
            },
        )
        status, result = "interrupted", None
        try:
            result = self._run()
            status = "finished"
        finally:
            store.finish_run(run_id, status, {"result": result})
        return result

    def _run(self) -> dict[str, Any]:
        objective = PredictedAccuracy(self.accuracy)
        found = self.search("accuracy", objective).run()
        params_found = self.search("params", None).run()
        chosen, measured = self._hand_scaled_measured()
        # Every fine-tune at once, after every latency: one pool of workers kept busy over
        # the three groups, not idle at the tail of each.
        self._accuracies(
            self._within_budget(found) + self._within_budget(params_found) + list(chosen.values())
        )
        candidates = self._proven_verified(found, "candidate", objective)
        good = [c for c in candidates if c.within_budget and c.mean is not None]
        winner = max(good, key=lambda c: c.mean) if good else None  # type: ignore[arg-type, return-value]
        params = self._proven_verified(params_found, "params", objective)
        params_ok = [c for c in params if c.within_budget and c.mean is not None]
        params_best = max(params_ok, key=lambda c: c.cfg.params()) if params_ok else None
        families = {
            family: self._proven(family, cfg, measured[cfg.key()], objective)
            for family, cfg in chosen.items()
        }
        baseline = max(
            (f for f in families.values() if f.mean is not None),
            key=lambda f: f.mean,  # type: ignore[arg-type, return-value]
            default=None,
        )
        result = {
            "budget_ms": self.budget_ms,
            "unit": self.unit,
            "unit_text": LATENCY_UNITS.get(self.unit, self.unit),
            "protocol": self.finetunes.protocol.name,
            "protocol_hash": self.finetunes.protocol.hash(),
            "protocol_text": self.finetunes.protocol.describe(),
            "seeds": list(self.seeds),
            "winner": None if winner is None else winner.to_dict(),
            "candidates": [c.to_dict() for c in candidates],
            "params_winner": None if params_best is None else params_best.to_dict(),
            "baseline": None if baseline is None else baseline.to_dict(),
            "hand_scaled": {name: f.to_dict() for name, f in families.items()},
            "margins": {
                "baseline": margin(winner, baseline) if winner and baseline else None,
                "params": margin(winner, params_best) if winner and params_best else None,
            },
            "ship": ship_role(
                {"winner": winner, "baseline": baseline, "params_winner": params_best}
            ),
            "search": found,
            "params_search": params_found,
        }
        self.on_event("done", result)
        return result

    # -- proving -------------------------------------------------------------------------
    def _accuracies(self, cfgs: Sequence[SubnetConfig]) -> None:
        """Fine-tune every seed of `cfgs` not yet fine-tuned here (the store skips what it
        holds)."""
        todo = [c for c in dict.fromkeys(cfgs) if c.key() not in self._fine_tuned]
        if not todo:
            return
        self.on_event("finetuning", {"subnets": [str(c) for c in todo], "seeds": self.seeds})
        records = self.finetunes.run([(c, s) for c in todo for s in self.seeds])
        for i, cfg in enumerate(todo):
            rs = records[i * len(self.seeds) : (i + 1) * len(self.seeds)]
            ok = [r for r in rs if r is not None and r.status == "ok"]
            self._fine_tuned[cfg.key()] = (
                tuple(r.accuracy for r in ok),
                tuple(r.seed for r in ok),
            )

    def _proven(
        self, role: str, cfg: SubnetConfig, m: dict, objective: PredictedAccuracy
    ) -> Proven:
        acc, seeds = self._fine_tuned.get(cfg.key(), ((), ()))
        return Proven(
            role,
            cfg,
            m.get("measured_ms"),
            m.get("median_ms"),
            self.budget_ms,
            acc,
            seeds,
            objective(cfg),
        )

    @staticmethod
    def _verified(found: dict) -> list[tuple[SubnetConfig, dict]]:
        return [
            (SubnetConfig.from_dict(v["arch"]), v)
            for r in found.get("rounds", [])
            for v in r["verified"]
        ]

    def _within_budget(self, found: dict) -> list[SubnetConfig]:
        """The search's verified subnets within the budget, the best by its objective first,
        at most `prove`: a subnet over the budget on the device is not worth its
        fine-tunes."""
        fitting = [(c, v) for c, v in self._verified(found) if v["within_budget"]]
        fitting.sort(key=lambda cv: -cv[1]["objective"])
        return [c for c, _ in fitting[: self.prove]]

    def _proven_verified(
        self, found: dict, role: str, objective: PredictedAccuracy
    ) -> list[Proven]:
        return [self._proven(role, c, v, objective) for c, v in self._verified(found)]

    def _hand_scaled_measured(self) -> tuple[dict[str, SubnetConfig], dict[str, dict]]:
        """The largest member of each family whose measured latency fits, and every
        member's measurement taken on the way."""
        measured: dict[str, dict] = {}

        def fits(cfg: SubnetConfig) -> bool:
            self.on_event("measuring", {"arch": str(cfg)})
            v = self.verify(cfg)
            measured[cfg.key()] = {
                "measured_ms": v.latency_ms(self.unit),
                "median_ms": v.result.median_ms,
            }
            ms = measured[cfg.key()]["measured_ms"]
            return ms is not None and ms <= self.budget_ms

        return largest_fitting(self.space, fits), measured


def searches(
    *,
    store: LatencyStore,
    profile: HardwareProfile,
    space: SearchSpace,
    budget_ms: float,
    settings: EvolutionSettings,
    verify: int,
    verifier: DeviceVerifier,
    predictor: Any,
    params_verify: int | None = None,
    rounds: int = 1,
) -> Callable[[str, Any], SearchJob]:
    """`AccuracySearch.search`: a `SearchJob` per objective, all on one store, profile,
    budget, latency predictor and verifier. `params_verify`: how many params winners to
    verify (default `verify`); `rounds`: of verifying and refitting (a subnet at the edge of
    the budget is where the predictor errs, and its measurement corrects the next round)."""

    def make(name: str, objective: Any) -> SearchJob:
        return SearchJob(
            store=store,
            profile=profile,
            space=space,
            objective=objective or load_objective(name),
            budget=Budget(budget_ms),
            settings=settings,
            verify=verify if name != "params" or params_verify is None else params_verify,
            verifier=verifier,
            predictor=predictor,
            rounds=rounds,
            objective_name=name,
            objective_unit=objective_unit(name),
        )

    return make


@dataclass
class BaselineMeasurer:
    """`AccuracySearch.verify`: each hand-scaled member measured on the device through the
    search's verifier, under one latency-store run of kind "baselines" (started on first
    use, finished by `close`)."""

    store: LatencyStore
    profile: HardwareProfile
    verifier: DeviceVerifier
    budget_ms: float
    _run_id: int | None = field(default=None, init=False)

    def __call__(self, cfg: SubnetConfig) -> Verification:
        if self._run_id is None:
            p = self.profile
            self.store.add_profile(p.name, p.resolved(), p.hash())
            self._run_id = self.store.start_run(p.hash(), "baselines", {"budget": self.budget_ms})
        return self.verifier(cfg, self._run_id)

    def close(self) -> None:
        if self._run_id is not None:
            self.store.finish_run(self._run_id, "finished", {})
            self._run_id = None
