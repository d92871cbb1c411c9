"""Latency-constrained evolutionary search over a `SearchSpace`, scored by a predictor.

Each generation keeps the best `parents` feasible members, makes children by mutation and
crossover (both stay inside the space), drops every architecture already seen (by key),
scores all new children with one batched predictor call and the feasible ones' objective in
one call where the objective takes a batch (`many`: `task-finetune` fine-tunes them in
parallel), and keeps the best `population`.
Feasible means the predictor's *upper* band fits under `max_ms` (and its lower band over
`min_ms` when a floor is set): the spread is the safety margin, so a winner that the model
is unsure of has to be predicted further under the budget.

`mode="pareto"` keeps, instead of the best by objective, the non-dominated members of
(predicted latency, objective) with NSGA-II's crowding distance breaking ties, and returns
the whole front within the budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from bfnas.errors import InputError
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig

MODES = ("best", "pareto")
# (predicted ms, low ms, high ms) for a batch of configs: one predictor call.
Scorer = Callable[[Sequence[SubnetConfig]], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 100
    parents: int = 25
    generations: int = 30
    mutation_rate: float = 0.3  # per gene
    crossover_share: float = 0.5  # of the children
    margin: bool = True  # constrain the predictor's band, not its point estimate
    mode: str = "best"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError.bad_setting(
                "mode", f"unknown mode {self.mode!r} (known: {', '.join(MODES)})"
            )
        for name in ("population", "parents", "generations"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")
        if self.parents > self.population:
            raise InputError.bad_setting(
                "parents", f"{self.parents} exceeds the population {self.population}"
            )


@dataclass(frozen=True)
class Budget:
    max_ms: float
    min_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.max_ms > 0:
            raise InputError.bad_setting("max_ms", f"must be positive, got {self.max_ms}")
        if self.min_ms is not None and not 0 <= self.min_ms < self.max_ms:
            raise InputError.bad_setting(
                "min_ms", f"must be in [0, {self.max_ms}), got {self.min_ms}"
            )

    def admits(
        self, mid: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: bool = True
    ) -> np.ndarray:
        """Which predictions fit: with the margin, the top of the band under the maximum and
        its bottom over the floor; without it, the point prediction."""
        upper, lower = (hi, lo) if margin else (mid, mid)
        ok = upper <= self.max_ms
        return ok if self.min_ms is None else ok & (lower >= self.min_ms)


@dataclass
class Candidate:
    cfg: SubnetConfig
    objective: float  # NaN when infeasible (never computed)
    predicted_ms: float
    low_ms: float
    high_ms: float
    feasible: bool
    generation: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch"] = self.cfg.to_dict()
        d["key"] = self.cfg.key()
        del d["cfg"]
        return d


@dataclass
class SearchResult:
    best: Candidate | None
    front: list[Candidate]  # non-dominated feasible candidates, by predicted latency
    history: list[dict]  # one row per generation
    evaluated: int
    predictor_calls: int
    seconds: float
    candidates: list[Candidate] = field(default_factory=list, repr=False)


def objective_values(
    objective: Callable[[SubnetConfig], float], cfgs: Sequence[SubnetConfig]
) -> list[float]:
    """The objective of every config: in one call where the objective takes a batch
    (`many`), else one call each."""
    if not cfgs:
        return []
    many = getattr(objective, "many", None)
    return [float(v) for v in many(cfgs)] if many is not None else [objective(c) for c in cfgs]


def predictor_scorer(predictor) -> Scorer:
    """A `Scorer` over a fitted `LatencyPredictor`: features once, one booster call."""

    def score(cfgs: Sequence[SubnetConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mid = predictor.predict(cfgs)
        return (mid, *predictor.band(mid))

    return score


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other one beats on both lower predicted latency and higher objective."""
    front: list[Candidate] = []
    best = -np.inf
    for c in sorted(cands, key=lambda c: (c.predicted_ms, -c.objective)):
        if c.objective > best:
            front.append(c)
            best = c.objective
    return front


def _nondominated_ranks(ms: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """Front index of each point (0 = non-dominated) for minimising ms, maximising obj."""
    rank = np.full(len(ms), -1)
    left = np.arange(len(ms))
    r = 0
    while len(left):
        order = left[np.lexsort((-obj[left], ms[left]))]
        best, front = -np.inf, []
        for i in order:
            if obj[i] > best:
                front.append(i)
                best = obj[i]
        rank[front] = r
        left = np.setdiff1d(left, front)
        r += 1
    return rank


def _crowding(ms: np.ndarray, obj: np.ndarray) -> np.ndarray:
    n = len(ms)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for values in (ms, obj):
        order = np.argsort(values)
        span = values[order[-1]] - values[order[0]] or 1.0
        dist[order[0]] = dist[order[-1]] = np.inf
        dist[order[1:-1]] += (values[order[2:]] - values[order[:-2]]) / span
    return dist


def evolve(
    space: SearchSpace,
    score: Scorer,
    objective: Callable[[SubnetConfig], float],
    budget: Budget,
    settings: EvolutionSettings = EvolutionSettings(),
    on_generation: Callable[[dict], None] = lambda row: None,
    admit: Callable[[Sequence[SubnetConfig]], np.ndarray] | None = None,
) -> SearchResult:
    """Search `space` for the best `objective` whose predicted latency fits `budget` (and
    that `admit` admits: the predicted memory and size under their limits,
    `search.resources`)."""
    t0 = time.perf_counter()
    run = _Evolution(space, score, objective, budget, settings, admit=admit)
    population = run.select(run.initial_population(), settings.population)
    history = [_row(0, population, len(run.seen))]
    on_generation(history[-1])
    for gen in range(1, settings.generations + 1):
        if not population:
            break
        population = run.next_generation(population, gen)
        history.append(_row(gen, population, len(run.seen)))
        on_generation(history[-1])
    return run.result(history, time.perf_counter() - t0)


@dataclass
class _Evolution:
    """One search's state: every architecture scored so far (by key) and the predictor calls
    it took. One random generator drives it all, so a seed gives the same winners."""

    space: SearchSpace
    score: Scorer
    objective: Callable[[SubnetConfig], float]
    budget: Budget
    settings: EvolutionSettings
    admit: Callable[[Sequence[SubnetConfig]], np.ndarray] | None = None
    seen: dict[str, Candidate] = field(default_factory=dict)
    calls: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)

    def evaluate(self, cfgs: list[SubnetConfig], generation: int) -> list[Candidate]:
        """The architectures not seen before, scored in one predictor call."""
        fresh, keys = [], set()
        for c in cfgs:
            k = c.key()
            if k not in self.seen and k not in keys:
                keys.add(k)
                fresh.append(c)
        if not fresh:
            return []
        mid, lo, hi = self.score(fresh)
        self.calls += 1
        fits = self.budget.admits(mid, lo, hi, self.settings.margin)
        if self.admit is not None:
            fits = fits & self.admit(fresh)
        # Only feasible members are ranked: a costly objective is not spent on the rest, and
        # they are scored together (an objective with `many` fine-tunes them in parallel).
        feasible = [c for i, c in enumerate(fresh) if fits[i]]
        scores = objective_values(self.objective, feasible)
        values = dict(zip([c.key() for c in feasible], scores, strict=True))
        out = []
        for i, c in enumerate(fresh):
            ok = bool(fits[i])
            value = values[c.key()] if ok else float("nan")
            cand = Candidate(c, value, float(mid[i]), float(lo[i]), float(hi[i]), ok, generation)
            self.seen[c.key()] = cand
            out.append(cand)
        return out

    def select(self, pool: list[Candidate], k: int) -> list[Candidate]:
        """The `k` feasible members to keep: the best by objective, or (pareto) by front and
        then crowding distance."""
        feasible = [c for c in pool if c.feasible]
        if self.settings.mode == "best":
            return sorted(feasible, key=lambda c: -c.objective)[:k]
        if len(feasible) <= k:
            return feasible
        ms = np.array([c.predicted_ms for c in feasible])
        obj = np.array([c.objective for c in feasible])
        rank = _nondominated_ranks(ms, obj)
        chosen: list[int] = []
        for r in range(rank.max() + 1):
            idx = np.flatnonzero(rank == r)
            if len(chosen) + len(idx) <= k:
                chosen.extend(idx.tolist())
                continue
            crowd = _crowding(ms[idx], obj[idx])
            chosen.extend(idx[np.argsort(-crowd)][: k - len(chosen)].tolist())
            break
        return [feasible[i] for i in chosen]

    def initial_population(self) -> list[Candidate]:
        """Random members, sampled in batches until enough are feasible (20 batches at most)."""
        n = self.settings.population
        population: list[Candidate] = []
        for _ in range(20):
            batch = [self.space.sample(self.rng) for _ in range(2 * n)]
            population += [c for c in self.evaluate(batch, 0) if c.feasible]
            if len(population) >= n:
                break
        return population

    def next_generation(self, population: list[Candidate], gen: int) -> list[Candidate]:
        """The parents, children of theirs by mutation and crossover, and the best of both."""
        s, rng = self.settings, self.rng
        parents = self.select(population, s.parents)
        n_children = s.population - len(parents)
        n_cross = int(round(n_children * s.crossover_share)) if len(parents) > 1 else 0
        children = [
            self.space.mutate(rng.choice(parents).cfg, rng, s.mutation_rate)
            for _ in range(n_children - n_cross)
        ]
        for _ in range(n_cross):
            a, b = rng.sample(parents, 2)
            children.append(self.space.crossover(a.cfg, b.cfg, rng))
        return self.select(parents + self.evaluate(children, gen), s.population)

    def result(self, history: list[dict], seconds: float) -> SearchResult:
        feasible = [c for c in self.seen.values() if c.feasible]
        best = max(feasible, key=lambda c: c.objective) if feasible else None
        return SearchResult(
            best,
            pareto_front(feasible),
            history,
            len(self.seen),
            self.calls,
            seconds,
            list(self.seen.values()),
        )


def _row(gen: int, population: list[Candidate], evaluated: int) -> dict:
    if not population:
        return {
            "generation": gen,
            "evaluated": evaluated,
            "population": 0,
            "best_objective": None,
            "best_predicted_ms": None,
            "mean_objective": None,
        }
    top = max(population, key=lambda c: c.objective)
    return {
        "generation": gen,
        "evaluated": evaluated,
        "population": len(population),
        "best_objective": top.objective,
        "best_predicted_ms": top.predicted_ms,
        "mean_objective": float(np.mean([c.objective for c in population])),
    }


def random_search(
    space: SearchSpace,
    score: Scorer,
    objective: Callable[[SubnetConfig], float],
    budget: Budget,
    n: int,
    seed: int = 0,
    margin: bool = True,
) -> Candidate | None:
    """The baseline: `n` random members scored in one call; the best feasible one."""
    rng = random.Random(seed)
    cfgs = list({c.key(): c for c in (space.sample(rng) for _ in range(n))}.values())
    mid, lo, hi = score(cfgs)
    fits = budget.admits(mid, lo, hi, margin)
    feasible = [c for i, c in enumerate(cfgs) if fits[i]]
    scores = objective_values(objective, feasible)
    values = dict(zip([c.key() for c in feasible], scores, strict=True))
    best = None
    for i, c in enumerate(cfgs):
        if fits[i]:
            value = values[c.key()]
            if best is None or value > best.objective:
                best = Candidate(c, value, float(mid[i]), float(lo[i]), float(hi[i]), True, 0)
    return best
