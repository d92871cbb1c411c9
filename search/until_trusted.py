"""Measuring until the latency predictor can be trusted (`bfnas profile --until`).

Rounds: measure a few subnets, refit, estimate the predictor's held-out accuracy, choose the
next subnets where it is least sure, and stop once a conservative estimate reaches the target
or a cap on subnets or device time is hit.

The estimate is the share of randomly drawn trusted rows whose out-of-fold prediction (by a
fold model that did not see the row) is within the tolerance, and what is compared with the
target is its one-sided Clopper-Pearson lower bound: with 60 rows all within, the bound is
95.1 %; a point estimate of 100 % from 20 rows would stop a job that knows little. Only
random rows count: the subnets a chooser picks are not like the space's (measured on the seed
table, an estimate over them said >= 90 % at 95 % confidence where held-out subnets were
85 % within). So a round is part random (`audit`) and part chosen while the estimate is below
the target (learn first), and all random once it is there (then prove it). Which rows were
chosen is kept in each run's summary, so a rerun knows them too.

What the bound costs: whatever chooses, at least 59 random rows all within are needed to
show 95 % at 95 % confidence (0.95 ** 59 < 0.05), 93 with one miss, 124 with two.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.profiling import ProfileEvent, ProfileJob, plan_subnets
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.latency_predictor import LatencyPredictor, estimate_design
from bfnas.search.predictor_file import PredictorScope, PredictorSettings
from bfnas.search.training import load_rows
from bfnas.search.until_settings import CHOOSER_NAMES, UntilSettings

STOPS = ("trusted", "max-subnets", "max-device-time", "pool-exhausted")


def share_lower_bound(hits: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a share seen as `hits` of `n`."""
    from scipy.stats import beta

    if n <= 0 or hits <= 0:
        return 0.0
    return float(beta.ppf(1 - confidence, hits, n - hits + 1))


@dataclass(frozen=True)
class Measured:
    """What a profile holds in one space so far: trusted rows, and what every row cost."""

    cfgs: list[SubnetConfig]  # trusted
    ms: np.ndarray  # their labels
    keys: set[str]  # every sample row's subnet, any status
    device_s: float  # seconds of device time of every sample row
    chosen: set[str] = field(default_factory=set)  # picked by a chooser, not drawn at random


@dataclass(frozen=True)
class TrustPoint:
    """One round's estimate: what `--json` prints as the curve and a report draws."""

    round: int
    rows: int  # trusted rows fitted
    measured: int  # sample rows of any status
    audited: int  # random trusted rows the estimate is made on
    within: float  # their out-of-fold share within the tolerance
    lower_bound: float
    device_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def measured_in_store(store: LatencyStore, profile_hash: str, space: str) -> Measured:
    """What the store holds for this profile in this space (labels as `load_rows` makes them).
    Rows of a run killed before it kept its summary count as random."""
    rows = [r for r in store.measurements(profile_hash) if r.space == space]
    try:
        trusted = load_rows(store, profile_hash, space)
        cfgs, ms = trusted.cfgs, trusted.ms
    except InputError:  # nothing trusted yet
        cfgs, ms = [], np.zeros(0)
    chosen: set[str] = set()
    for run in store.runs("profile", profile_hash):
        until = json.loads(run["summary"] or "{}").get("until") or {}
        if json.loads(run["args"]).get("space") == space:
            chosen.update(until.get("chosen", []))
    return Measured(
        cfgs=cfgs,
        ms=ms,
        keys={r.subnet_key for r in rows},
        device_s=float(sum(r.device_s or 0.0 for r in rows)),
        chosen=chosen,
    )


# -- how the next subnets are chosen ---------------------------------------------------------
Chooser = Callable[
    [LatencyPredictor, list[SubnetConfig], list[SubnetConfig], int, random.Random],
    list[SubnetConfig],
]


def _random(model, candidates, measured, k, rng):
    return rng.sample(candidates, min(k, len(candidates)))


def _disagreement(model, candidates, measured, k, rng):
    """Where the fold models disagree most. Taken from the top 3k one at a time, each the
    farthest from those already taken, so one round does not spend itself on a cluster."""
    spread = model.fold_disagreement(candidates)
    top = np.argsort(-spread)[: 3 * k]
    return [
        candidates[i]
        for i in _spread_out(
            model.features([candidates[i] for i in top]), model.features(measured), k, top
        )
    ]


def _coverage(model, candidates, measured, k, rng):
    """Farthest from every measured subnet in the (standardized) feature space."""
    return [
        candidates[i]
        for i in _spread_out(
            model.features(candidates), model.features(measured), k, np.arange(len(candidates))
        )
    ]


def _design(model, candidates, measured, k, rng):
    """Where the analytic estimate under the trees learns most: a greedy D-optimal choice
    (each next subnet the one of highest leverage given those measured and taken) over the
    estimate's columns, each row divided by its predicted latency as the fit weights it (for
    relative error). Its ten per-op costs are what few rows pin down worst."""
    X = model.features(candidates)
    C = estimate_design(X) / model.predict(X)[:, None]
    seen = estimate_design(model.features(measured)) / model.predict(measured)[:, None]
    scale = np.abs(np.vstack([C, seen])).max(0)
    scale[scale == 0] = 1
    C, seen = C / scale, seen / scale
    # A little ridge keeps the inverse defined where a column has not varied yet.
    inv = np.linalg.inv(seen.T @ seen + 1e-6 * np.eye(C.shape[1]))
    chosen: list[int] = []
    for _ in range(min(k, len(C))):
        leverage = np.einsum("ij,jk,ik->i", C, inv, C)
        leverage[chosen] = -np.inf
        i = int(np.argmax(leverage))
        chosen.append(i)
        u = inv @ C[i]
        inv -= np.outer(u, u) / (1 + C[i] @ u)  # Sherman-Morrison: the inverse with row i
    return [candidates[i] for i in chosen]


def _spread_out(X: np.ndarray, seen: np.ndarray, k: int, index: np.ndarray) -> list[int]:
    """Greedy farthest-point choice of k rows of X (standardized by all rows) from `seen`."""
    both = np.vstack([X, seen]) if len(seen) else X
    mu, sd = both.mean(0), both.std(0) + 1e-12
    Z, S = (X - mu) / sd, (seen - mu) / sd
    nearest = (
        np.min(((Z[:, None, :] - S[None, :, :]) ** 2).sum(-1), axis=1)
        if len(S)
        else np.full(len(Z), np.inf)
    )
    chosen: list[int] = []
    for _ in range(min(k, len(Z))):
        i = int(np.argmax(nearest))
        chosen.append(int(index[i]))
        nearest = np.minimum(nearest, ((Z - Z[i]) ** 2).sum(-1))
        nearest[i] = -1.0
    return chosen


CHOOSERS: dict[str, Chooser] = {
    "random": _random,
    "disagreement": _disagreement,
    "coverage": _coverage,
    "design": _design,
}
assert set(CHOOSERS) == set(CHOOSER_NAMES)  # the settings name every chooser, no more


@dataclass
class UntilTrusted:
    """Chooses each round of a profiling job (`ProfileJob.next_round`) from what `measured()`
    reports, and keeps the curve of estimates. `stop` says why it ended."""

    settings: UntilSettings
    scope: PredictorScope
    candidates: Sequence[SubnetConfig]
    measured: Callable[[], Measured]
    predictor_settings: PredictorSettings = field(default_factory=PredictorSettings)
    fit: Callable[[list[SubnetConfig], np.ndarray], LatencyPredictor] | None = None
    on_round: Callable[[TrustPoint], None] = lambda p: None
    curve: list[TrustPoint] = field(default_factory=list)
    stop: str | None = None
    model: LatencyPredictor | None = None
    _rng: random.Random = field(init=False, repr=False)
    _chosen: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.settings.seed)

    def _fit(self, cfgs: list[SubnetConfig], ms: np.ndarray) -> LatencyPredictor:
        if self.fit is not None:
            return self.fit(cfgs, ms)
        return LatencyPredictor(self.scope, self.predictor_settings).fit(cfgs, ms)

    def next_round(self) -> list[SubnetConfig]:
        s = self.settings
        now = self.measured()
        left = [c for c in self.candidates if c.key() not in now.keys]
        budget = s.max_subnets - len(now.keys)
        if len(now.cfgs) >= 10:
            self.model = self._fit(now.cfgs, now.ms)
            assert self.model.oof_ms is not None
            chosen = self._chosen | now.chosen
            audit = np.array([c.key() not in chosen for c in now.cfgs])
            within = np.abs(self.model.oof_ms / now.ms - 1) <= s.tolerance
            hits, n = int(within[audit].sum()), int(audit.sum())
            point = TrustPoint(
                round=len(self.curve) + 1,
                rows=len(now.cfgs),
                measured=len(now.keys),
                audited=n,
                within=hits / n if n else 0.0,
                lower_bound=share_lower_bound(hits, n, s.confidence),
                device_s=now.device_s,
            )
            self.curve.append(point)
            self.on_round(point)
            if point.lower_bound >= s.target:
                return self._stopped("trusted")
        if budget <= 0:
            return self._stopped("max-subnets")
        if s.max_device_s is not None and now.device_s >= s.max_device_s:
            return self._stopped("max-device-time")
        if not left:
            return self._stopped("pool-exhausted")
        if len(now.cfgs) < s.first or self.model is None:
            k = min(max(s.first - len(now.cfgs), 1), budget)
            return _random(None, left, [], k, self._rng)
        k = min(s.round_size, budget)
        # Learn first, then prove: while the audited share is below the target the chooser
        # takes its part of the round; once it is there only random rows can raise the bound.
        share = s.audit if self.curve[-1].within < s.target else 1.0
        drawn = _random(None, left, [], max(1, math.ceil(k * share)), self._rng)
        taken = {c.key() for c in drawn}
        rest = [c for c in left if c.key() not in taken]
        picked = CHOOSERS[s.choose](self.model, rest, now.cfgs, k - len(drawn), self._rng)
        if s.choose != "random":
            self._chosen.update(c.key() for c in picked)
        return drawn + picked

    def summary(self) -> dict:
        """What the profiling run keeps (`ProfileJob.rounds`): the settings, why it stopped
        and the curve of estimates against device time."""
        return {
            "until": {
                **asdict(self.settings),
                "stop": self.stop,
                "curve": [p.to_dict() for p in self.curve],
                "chosen": sorted(self._chosen),
            }
        }

    def _stopped(self, why: str) -> list[SubnetConfig]:
        self.stop = why
        return []


@dataclass(kw_only=True)
class UntilTrustedJob:
    """Profile the setup's space into `store` in rounds until the latency predictor can be
    trusted (`UntilTrusted` chooses each round): what `bfnas profile --until` runs, from
    Python as `ProfileJob` and `SearchJob` are. `prior`: another profile's predictor to start
    from (`latency_predictor.load_prior`). Keyword arguments only; `run()` returns the
    profiling job's summary with `until` (the curve, why it stopped)."""

    setup: MeasurementSetup
    store: LatencyStore
    settings: UntilSettings
    prior: LatencyPredictor | None = None
    on_event: Callable[[ProfileEvent], None] = lambda e: None
    on_round: Callable[[TrustPoint], None] = lambda p: None
    retry: tuple[str, ...] = ()
    strategy: str = "random"
    keep_artifacts: bool = True
    check_device: bool = True

    def chooser(self) -> UntilTrusted:
        """The rounds' chooser: candidates drawn from the space, fitted from the store."""
        w, space = self.setup.profile.workload, self.setup.space
        s = self.settings
        scope = PredictorScope(self.setup.profile.hash(), space.name, w.seq_len, w.batch)
        model_settings = PredictorSettings(seed=s.seed)
        prior = self.prior

        def fit(cfgs: list[SubnetConfig], ms: np.ndarray) -> LatencyPredictor:
            return LatencyPredictor(scope, model_settings, prior=prior).fit(cfgs, ms)

        return UntilTrusted(
            settings=s,
            scope=scope,
            candidates=plan_subnets(space, s.pool, "random", s.seed, w.seq_len),
            measured=lambda: measured_in_store(self.store, scope.profile_hash, space.name),
            fit=fit,
            on_round=self.on_round,
        )

    def run(self) -> dict:
        job = ProfileJob(
            setup=self.setup,
            store=self.store,
            samples=self.settings.max_subnets,
            strategy=self.strategy,
            seed=self.settings.seed,
            on_event=self.on_event,
            retry=self.retry,
            keep_artifacts=self.keep_artifacts,
            check_device=self.check_device,
            rounds=self.chooser(),
        )
        return job.run()
