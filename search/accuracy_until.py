"""Fine-tuning until the accuracy predictor ranks well enough: `until_trusted`'s counterpart.

Rounds: fine-tune a few subnets, refit the `AccuracyPredictor`, estimate how well it ranks,
choose the next subnets where they matter, and stop once a lower confidence bound on the
estimate reaches `target_tau`, or at a cap on fine-tunes or minutes. It does not know how a
fine-tune is run: the caller gives `finetune(cfgs)` (a `FinetuneJob` over the store, which
also makes a rerun with the same seed and pool replay the stored rounds at no cost) and
`near_budget(cfgs)`, a weight per candidate (0: not near any budget asked, never
fine-tuned), such as how close its predicted latency is to the nearest budget.

Where it matters: each round's random subnets are drawn with probability in proportion to
`near_budget`, so the estimate is of the ranking among the subnets search will compare
(near a budget, where params say little: benchmarks/results/accuracy_predictor.md); the
chosen ones are where the fold models disagree most, times the same weight.

The estimate is the out-of-fold Kendall tau (each row predicted by a fold model that did not
see it) over the randomly drawn rows only, as `until_trusted` audits: rows a chooser picked
for being hard are not like the candidates, and would bias it. It is against the measured
accuracies (a mean over few seeds, noisy), so it understates the tau against the true means.
Learn first, then prove: while the estimate is below the target a round is part random
(`audit`) and part chosen; once it is there, every row is random, since only those can
raise the bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.accuracy_predictor import MIN_ROWS, AccuracyPredictor, ranking_metrics
from bfnas.search.predictor_file import AccuracyScope, AccuracySettings
from bfnas.search.until_trusted import _spread_out

STOPS = ("trusted", "max-finetunes", "max-minutes", "pool-exhausted")
# Fisher-z of Kendall's tau has a variance of about 0.437 / (n - 4) (Fieller, Hartley and
# Pearson, 1957): defined from 5 pairs.
TAU_Z_VARIANCE = 0.437
MIN_AUDITED = 5


def tau_lower_bound(tau: float, n: int, confidence: float) -> float:
    """A one-sided lower confidence bound on Kendall's tau seen as `tau` over `n` pairs:
    tanh(atanh(tau) - z * sqrt(0.437 / (n - 4))); -1 (nothing shown) under 5 pairs.

    Why Fisher's z and not a bootstrap over the rows: the bound decides when fine-tuning
    stops, so it must not be optimistic where rows are fewest. A percentile bootstrap of tau
    from 10-20 rows is too narrow (a resample repeats rows, which tie and agree), and it is
    random, so a rerun on the same rows could stop elsewhere; the z bound is deterministic,
    widens as rows fall, and its variance is Kendall's own (not Pearson's 1 / (n - 3)).

    At |tau| = 1 the z is infinite and the bound would be 1 from any n: a perfect tau counts
    as one discordant pair short of perfect (of n (n - 1) / 2), so 12 rows in perfect order
    show 0.95 at 90 %, not certainty."""
    from scipy.stats import norm

    if n < MIN_AUDITED or not math.isfinite(tau):
        return -1.0
    most = 1 - 4 / (n * (n - 1))  # one pair of n (n - 1) / 2 discordant: tau falls 2 / pairs
    z = math.atanh(min(max(tau, -most), most))
    return math.tanh(z - float(norm.ppf(confidence)) * math.sqrt(TAU_Z_VARIANCE / (n - 4)))


@dataclass(frozen=True)
class AccuracyUntilSettings:
    """When to stop and how to choose (the module's docstring says why it works so)."""

    target_tau: float  # the lower bound on the audited out-of-fold tau to reach, in (0, 1)
    # 90 %, not until_trusted's 95 %: a fine-tune costs minutes to hours, a latency seconds.
    confidence: float = 0.9
    first: int = 12  # random subnets fine-tuned before the first fit
    round_size: int = 6
    max_finetunes: int = 60  # subnets fine-tuned, failed ones included
    max_minutes: float | None = None  # the fine-tunes' minutes, all rounds together
    # The share of a round drawn at random while the estimate is below the target: what the
    # bound is made of, and what keeps it honest.
    audit: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.target_tau < 1:
            raise InputError.bad_setting(
                "target_tau", f"must be between 0 and 1, got {self.target_tau}"
            )
        if not 0 < self.confidence < 1:
            raise InputError.bad_setting(
                "confidence", f"must be between 0 and 1, got {self.confidence}"
            )
        if self.first < MIN_ROWS:
            raise InputError.bad_setting(
                "first", f"a fit needs at least {MIN_ROWS} subnets, got {self.first}"
            )
        if self.round_size < 1:
            raise InputError.bad_setting("round_size", f"must be at least 1, got {self.round_size}")
        if self.max_finetunes < self.first:
            raise InputError.bad_setting(
                "max_finetunes",
                f"must be at least first ({self.first}), got {self.max_finetunes}",
            )
        if self.max_minutes is not None and not (0 < self.max_minutes < math.inf):
            raise InputError.bad_setting(
                "max_minutes", f"must be positive and finite, got {self.max_minutes}"
            )
        if not 0 < self.audit <= 1:
            raise InputError.bad_setting("audit", f"must be in (0, 1], got {self.audit}")


@dataclass(frozen=True)
class Finetuned:
    """What `finetune(cfgs)` may return for a round, when it knows more than the accuracies:
    each subnet's mean dev accuracy (None: its fine-tune failed), its seeds, and the round's
    minutes (None: the call's wall time)."""

    accuracy: Sequence[float | None]
    n_seeds: Sequence[int] | None = None
    minutes: float | None = None


Finetune = Callable[[list[SubnetConfig]], "Finetuned | Sequence[float | None]"]
NearBudget = Callable[[Sequence[SubnetConfig]], Sequence[float]]
ExtraColumns = Callable[[Sequence[SubnetConfig]], Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class TauPoint:
    """One round's estimate, after its refit: a point of the curve."""

    round: int
    rows: int  # subnets fitted on
    audited: int  # of them drawn at random: what the estimate is made of
    tau: float  # their out-of-fold Kendall tau (0 where the fit ranks nothing)
    lower_bound: float
    finetunes: int  # fine-tuned so far, failed ones included
    minutes: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AccuracyUntilResult:
    """The fine-tuned rows (`audited`: drawn at random), the failures, the curve, why it
    stopped, and the last fit (None if none was made)."""

    cfgs: list[SubnetConfig]
    accuracy: np.ndarray
    n_seeds: np.ndarray
    audited: np.ndarray
    failed: list[SubnetConfig]
    curve: list[TauPoint]
    stop: str
    minutes: float
    predictor: AccuracyPredictor | None = None

    def summary(self, settings: AccuracyUntilSettings) -> dict:
        """What a run keeps: the settings, why it stopped, the curve, which subnets were
        chosen rather than drawn (a rerun's estimate must leave them out too)."""
        chosen = [c.key() for c, a in zip(self.cfgs, self.audited, strict=True) if not a]
        return {
            "until": {
                **asdict(settings),
                "stop": self.stop,
                "minutes": self.minutes,
                "curve": [p.to_dict() for p in self.curve],
                "chosen": sorted(chosen),
                "failed": sorted(c.key() for c in self.failed),
            }
        }


@dataclass
class AccuracyUntil:
    """`run()` fine-tunes from `pool` in rounds until the bound or a cap (see the module)."""

    settings: AccuracyUntilSettings
    scope: AccuracyScope
    pool: Sequence[SubnetConfig]
    finetune: Finetune
    near_budget: NearBudget | None = None  # None: every candidate alike
    # The predictor's extra columns (a one-shot score) of the candidates given.
    extra: ExtraColumns | None = None
    predictor_settings: AccuracySettings = field(default_factory=AccuracySettings)
    on_round: Callable[[TauPoint], None] = lambda point: None
    clock: Callable[[], float] = time.monotonic

    def run(self) -> AccuracyUntilResult:
        s = self.settings
        rng = np.random.default_rng(s.seed)
        cands = list({c.key(): c for c in self.pool}.values())
        weight = self._weights(cands)
        cands = [c for c, w in zip(cands, weight, strict=True) if w > 0]
        weight = weight[weight > 0]
        extra = self._extra(cands)
        tried = np.zeros(len(cands), dtype=bool)
        rows: list[int] = []  # candidates fine-tuned with an accuracy
        acc: list[float] = []
        seeds: list[int] = []
        audited: list[bool] = []
        failed: list[SubnetConfig] = []
        curve: list[TauPoint] = []
        finetunes, minutes = 0, 0.0
        model: AccuracyPredictor | None = None
        stop = ""
        while True:
            left = np.flatnonzero(~tried)
            if finetunes >= s.max_finetunes:
                stop = "max-finetunes"
            elif s.max_minutes is not None and minutes >= s.max_minutes:
                stop = "max-minutes"
            elif not len(left):
                stop = "pool-exhausted"
            if stop:
                break
            if model is None:  # not fitted yet: random, up to `first` rows
                k = min(max(s.first - len(rows), 1), s.max_finetunes - finetunes, len(left))
                drawn, picked = self._draw(left, weight, k, rng), np.zeros(0, dtype=np.int64)
            else:
                k = min(s.round_size, s.max_finetunes - finetunes, len(left))
                # Learn first, then prove (as until_trusted): once the estimate is at the
                # target, only random rows can raise its bound.
                share = s.audit if curve[-1].tau < s.target_tau else 1.0
                drawn = self._draw(left, weight, max(1, math.ceil(k * share)), rng)
                rest = np.setdiff1d(left, drawn)
                picked = self._choose(model, cands, extra, rest, weight, rows, k - len(drawn))
            batch = np.concatenate([drawn, picked]).astype(np.int64)
            got, batch_seeds, spent = self._finetune([cands[i] for i in batch])
            tried[batch] = True
            finetunes, minutes = finetunes + len(batch), minutes + spent
            for j, i in enumerate(batch):
                if got[j] is None:
                    failed.append(cands[i])
                    continue
                rows.append(int(i))
                acc.append(float(got[j]))
                seeds.append(int(batch_seeds[j]))
                audited.append(j < len(drawn))
            if len(rows) < s.first:
                continue
            model = AccuracyPredictor(self.scope, self.predictor_settings).fit(
                [cands[i] for i in rows],
                acc,
                {k: v[rows] for k, v in extra.items()} or None,
                seeds,
            )
            assert model.oof is not None
            audit = np.array(audited)
            y, oof = np.array(acc)[audit], model.oof[audit]
            tau = ranking_metrics(y, oof)["kendall_tau"] if len(y) > 1 else 0.0
            tau = tau if math.isfinite(tau) else 0.0
            point = TauPoint(
                round=len(curve) + 1,
                rows=len(rows),
                audited=int(audit.sum()),
                tau=float(tau),
                lower_bound=tau_lower_bound(tau, int(audit.sum()), s.confidence),
                finetunes=finetunes,
                minutes=minutes,
            )
            curve.append(point)
            self.on_round(point)
            if point.lower_bound >= s.target_tau:
                stop = "trusted"
                break
        return AccuracyUntilResult(
            cfgs=[cands[i] for i in rows],
            accuracy=np.array(acc, dtype=np.float64),
            n_seeds=np.array(seeds, dtype=np.int64),
            audited=np.array(audited, dtype=bool),
            failed=failed,
            curve=curve,
            stop=stop,
            minutes=minutes,
            predictor=model,
        )

    # -- the parts of a round ----------------------------------------------------------------
    def _weights(self, cands: list[SubnetConfig]) -> np.ndarray:
        if self.near_budget is None:
            return np.ones(len(cands))
        w = np.asarray(self.near_budget(cands), dtype=np.float64)
        if w.shape != (len(cands),) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("near_budget must give one finite weight >= 0 a candidate")
        return w

    def _extra(self, cands: list[SubnetConfig]) -> dict[str, np.ndarray]:
        """The extra columns of every candidate, computed once (a one-shot score is cheap
        beside a fine-tune, and the chooser needs it of all of them)."""
        columns = {} if self.extra is None else self.extra(cands)
        out = {name: np.asarray(col, dtype=np.float64) for name, col in columns.items()}
        for name, col in out.items():
            if col.shape != (len(cands),) or not np.all(np.isfinite(col)):
                raise ValueError(f"extra column {name!r}: one finite number a candidate needed")
        return out

    @staticmethod
    def _draw(left: np.ndarray, weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """k of the candidates left, drawn without replacement in proportion to weight."""
        p = weight[left] / weight[left].sum()
        return np.sort(rng.choice(left, size=min(k, len(left)), replace=False, p=p))

    @staticmethod
    def _choose(
        model: AccuracyPredictor,
        cands: list[SubnetConfig],
        extra: dict[str, np.ndarray],
        rest: np.ndarray,
        weight: np.ndarray,
        rows: list[int],
        k: int,
    ) -> np.ndarray:
        """Where the fold models disagree most, times the weight: from the top 3k, one at a
        time, each the farthest (in the features) from those fine-tuned and taken, so that a
        round does not spend itself on one cluster of look-alikes."""
        if k <= 0 or not len(rest):
            return np.zeros(0, dtype=np.int64)

        def features(index: np.ndarray | list[int]) -> np.ndarray:
            part = {name: col[index] for name, col in extra.items()}
            return model.features([cands[i] for i in index], part or None)

        score = model.uncertainty(
            [cands[i] for i in rest], {n: c[rest] for n, c in extra.items()} or None
        )
        top = rest[np.argsort(-score * weight[rest], kind="stable")[: 3 * k]]
        return np.array(_spread_out(features(top), features(rows), k, top), dtype=np.int64)

    def _finetune(self, cfgs: list[SubnetConfig]) -> tuple[list[float | None], list[int], float]:
        """One round's fine-tunes: accuracies (None: failed), seeds, minutes."""
        start = self.clock()
        out = self.finetune(cfgs)
        wall = (self.clock() - start) / 60
        result = out if isinstance(out, Finetuned) else Finetuned(list(out))
        got = list(result.accuracy)
        seeds = [1] * len(cfgs) if result.n_seeds is None else [int(n) for n in result.n_seeds]
        if len(got) != len(cfgs) or len(seeds) != len(cfgs):
            raise ValueError(f"finetune gave {len(got)} results for {len(cfgs)} subnets")
        for j, a in enumerate(got):
            if a is not None and not math.isfinite(a):
                got[j] = None  # a NaN accuracy is a failed fine-tune
            elif a is not None and not 0 <= a <= 1:
                raise ValueError(f"finetune gave an accuracy outside [0, 1]: {a}")
        if any(n < 1 for a, n in zip(got, seeds, strict=True) if a is not None):
            raise ValueError("finetune gave an accuracy over fewer than one seed")
        return got, seeds, wall if result.minutes is None else float(result.minutes)


def near_budgets(
    latency: Callable[[Sequence[SubnetConfig]], np.ndarray],
    budgets: Sequence[float],
    width: float = 0.25,
) -> NearBudget:
    """Weights for `AccuracyUntil.near_budget`: a candidate counts by how near its predicted
    latency (`latency(cfgs)`, in the budgets' unit) lies to the nearest budget, as
    exp(-(log ratio / width)^2): 1 on a budget, 0.37 at 25 % off, 0.02 at 50 % off. Where
    the search will choose is where the predictor must rank well; far from every budget a
    subnet is never a winner nor a baseline. Measured from the candidates nearest a budget:
    where none comes near one (a budget above the whole space), those nearest count as on
    it, not every weight as zero."""
    logs = np.log(np.asarray(budgets, dtype=np.float64))

    def weights(cfgs: Sequence[SubnetConfig]) -> Sequence[float]:
        ms = np.log(np.maximum(np.asarray(latency(cfgs), dtype=np.float64), 1e-9))
        off = np.min(np.abs(ms[:, None] - logs[None, :]), axis=1)
        off = off - off.min() if len(off) else off
        return list(np.exp(-((off / width) ** 2)))

    return weights
