"""The Bigger&Faster table on the offline task: at INT8 latency budgets on `local-cpu-int8`,
how accurate is the subnet each method picks, once fine-tuned, and how fast is it measured?

    python benchmarks/bigger_faster.py [--budgets 0.25,0.5,0.75] [--seeds 3] [--work DIR]

Budgets are fractions of the full MiniLM's INT8 latency measured here first (raw median ms,
batch 1, seq 128, one thread). Every method searches the same `minilm-l6` space with the
same latency predictor (fitted on `--samples` profiled subnets) and inherits from the same
task supernet (all-MiniLM-L6-v2 fine-tuned on the task by the sandwich rule for
`--tsn-steps` at `--tsn-lr`); every row is fine-tuned the same way (`--epochs` over a fixed
`--train-examples` subset of train, from the task supernet's weights and head) for each seed
and measured on the device:

- (a) `task`: the search maximizing one-shot task accuracy (the `task` objective);
- (b) `params`: the search maximizing encoder parameters ("bigger");
- (c) hand-scaled: the best fitting MiniLM with fewer layers (full width) or uniformly
  narrower (6 layers, hidden/heads/FFN scaled together), the usual manual choice: the
  largest of each family that fits the budget as measured; the better of the two after the
  seed-0 fine-tune is the row;
- (d) random: `--random` random subnets that fit (measured), seed 0, their median;
- (e) `task-finetune` at the middle budget: the search whose fitness is a short fine-tune
  of each candidate (`--tf-examples` train examples; the original's), a smaller search
  (`--tf-population` x `--tf-generations`), its search time beside (a)'s.

The fine-tunes run in two processes of one thread each (`FinetuneFitness`'s pool), cached in
the work folder: with `--work`, a rerun resumes the task supernet and reuses every fine-tune
it finished (the searches and measurements run again). Writes
benchmarks/results/bigger_faster.{md,json} and bigger_faster.png (accuracy against measured
latency); `--from-json FILE` redraws them from a run's JSON without running anything. One
offline task, not GLUE: what it shows is how the methods rank on it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import publish

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.context import open_setup
from bfnas.bench.jobs.profiling import ProfileJob, measure_subnet
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.nn.checkpoint import load_supernet, minilm_dir
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings
from bfnas.models.train.finetune_fitness import FinetuneFitness, FitnessSettings, FitnessSource
from bfnas.models.train.task_supernet import load_task_supernet, task_scorer
from bfnas.pipeline import TaskStageSettings, run_task_stage
from bfnas.search.baselines import hand_scaled
from bfnas.search.evolution import Budget, EvolutionSettings
from bfnas.search.latency_predictor import LatencyPredictor
from bfnas.search.loop import DeviceVerifier, SearchJob
from bfnas.search.objectives import load_objective
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.training import load_rows

MAX_LEN = 64
METHODS = ["task", "params", "hand-scaled", "random", "task-finetune"]


class Bench:
    """What every row shares: the device setup, store, predictor, task supernet and task,
    and the log of how long each phase took."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.space = load_space("minilm-l6")
        self.profile = load_profile("local-cpu-int8")
        self.setup = open_setup(
            self.profile,
            self.space,
            supernet=load_supernet(minilm_dir()),
            artifacts=work / "artifacts",
        )
        self.store = LatencyStore(work / "lat.db")
        self.verifier = DeviceVerifier(setup=self.setup, store=self.store)
        self.measured: dict[str, dict] = {}

    def say(self, text: str) -> None:
        print(f"[{(time.perf_counter() - self.t0) / 60:5.1f} min] {text}", flush=True)

    def phase(self, name: str, started: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def measure(self, cfg: SubnetConfig) -> float:
        """The subnet's raw median INT8 latency here, measured once (retried while the
        measurement is not trusted, at most three times)."""
        if cfg.key() not in self.measured:
            for _ in range(3):
                m = measure_subnet(self.setup, cfg)
                if m["status"] == "ok":
                    break
            self.measured[cfg.key()] = m
        return self.measured[cfg.key()]["median_ms"]

    def verify(self, cfg: SubnetConfig, run_id: int) -> dict:
        """A search's verification, kept as the subnet's measurement when trusted: the row
        that reports the winner does not time it a second time."""
        result = self.verifier(cfg, run_id)
        if result["status"] == "ok":
            self.measured.setdefault(cfg.key(), result)
        return result

    def profile_space(self) -> None:
        t = time.perf_counter()
        ProfileJob(
            setup=self.setup,
            store=self.store,
            samples=self.args.samples,
            strategy="stratified",
            seed=0,
            retry=("unstable",),
            keep_artifacts=False,
        ).run()
        rows = load_rows(self.store, self.profile.hash(), self.space.name)
        self.predictor = LatencyPredictor(rows.scope, PredictorSettings(seed=0)).fit(
            rows.cfgs, rows.ms
        )
        self.phase("profile", t)

    def task_supernet(self) -> None:
        """The offline task and the task supernet (resumed from the work folder)."""
        t = time.perf_counter()
        a = self.args
        stage = run_task_stage(
            minilm_dir(),
            self.space,
            self.work,
            TaskStageSettings(steps=a.tsn_steps, batch=32, max_len=MAX_LEN, lr=a.tsn_lr),
            on_step=lambda step, f: print(f"  {step}", end="\r", flush=True),
        )
        print()
        self.scorer, self.tsn_summary = stage["scorer"], stage["summary"]
        self.task_dir, self.tsn_dir = self.work / "task", self.work / "task-supernet"
        # The one-shot score without the head refit, only for the ranking line.
        self.inherited = task_scorer(load_task_supernet(self.tsn_dir), self.task_dir, refit=None)
        self.phase("task supernet", t)

    def finetuner(self, seed: int, examples: int) -> FinetuneFitness:
        """Fine-tunes from the task supernet's weights and head, cached in the work folder;
        two workers of one thread each (small models use two threads poorly)."""
        a = self.args
        return FinetuneFitness(
            FitnessSource(str(self.tsn_dir), str(self.tsn_dir), str(self.task_dir)),
            FitnessSettings(
                finetune=FinetuneSettings(
                    epochs=a.epochs, lr=a.lr, batch=32, max_len=MAX_LEN, seed=seed
                ),
                train_examples=examples,
                workers=2,
                cache_file=str(self.work / "finetune-cache.json"),
            ),
            threads=2,
        )

    def search(
        self,
        objective: Any,
        name: str,
        budget_ms: float,
        population: int | None = None,
        generations: int | None = None,
    ) -> tuple[SubnetConfig, float]:
        t0 = time.perf_counter()
        a = self.args
        population = population or a.population
        found = SearchJob(
            store=self.store,
            profile=self.profile,
            space=self.space,
            objective=objective,
            budget=Budget(budget_ms),
            settings=EvolutionSettings(
                population=population,
                parents=max(2, population // 4),
                generations=generations or a.generations,
                seed=0,
            ),
            verify=3,
            rounds=1,
            verifier=self.verify,
            predictor=self.predictor,
            objective_name=name,
        ).run()
        seconds = time.perf_counter() - t0
        self.phase("searches", t0)
        best = found["best"]
        if best is None:
            raise SystemExit(f"{name}: nothing found under {budget_ms:.3f} ms")
        return SubnetConfig.from_dict(best["arch"]), seconds

    def fits(self, cfg: SubnetConfig, budget_ms: float) -> bool:
        lo, hi = self.predictor.predict_interval([cfg])
        return float(lo[0]) <= budget_ms and self.measure(cfg) <= budget_ms


def pick_random(bench: Bench, budget_ms: float, n: int) -> list[SubnetConfig]:
    rng = random.Random(int(budget_ms * 1000))
    picked: list[SubnetConfig] = []
    while len(picked) < n:
        cfg = bench.space.sample(rng)
        if bench.fits(cfg, budget_ms):
            picked.append(cfg)
    return picked


def finetune_search(bench: Bench, budget_ms: float) -> tuple[SubnetConfig, float, int]:
    fitness = bench.finetuner(0, bench.args.tf_examples)
    with fitness:
        cfg, seconds = bench.search(
            fitness, "task-finetune", budget_ms, bench.args.tf_population, bench.args.tf_generations
        )
    return cfg, seconds, fitness.computed


def row(bench: Bench, cfg: SubnetConfig, acc: list[float]) -> dict[str, Any]:
    return {
        "arch": cfg.to_dict(),
        "text": str(cfg),
        "params": cfg.params(embeddings=False),
        "measured_ms": bench.measure(cfg),
        "one_shot": 100 * bench.scorer(cfg),
        "one_shot_inherited": 100 * bench.inherited(cfg),
        "accuracy": acc,
        "mean": statistics.mean(acc),
        "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--budgets", default="0.25,0.5,0.75", help="fractions of the full model's")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=60, help="subnets profiled for the predictor")
    ap.add_argument("--tsn-steps", type=int, default=400)
    ap.add_argument("--tsn-lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-examples", type=int, default=1536)
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--tf-examples", type=int, default=384)
    # The original's fitness fine-tunes every candidate: a small search (8 x 4 = 32 at most).
    ap.add_argument("--tf-population", type=int, default=8)
    ap.add_argument("--tf-generations", type=int, default=4)
    ap.add_argument("--skip-finetune-search", action="store_true")
    ap.add_argument("--work", help="keep the store, task supernet and caches here (resumable)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument(
        "--from-json", metavar="FILE", help="only redraw the report from a run's bigger_faster.json"
    )
    args = ap.parse_args()
    if args.from_json:
        try:
            payload = json.loads(Path(args.from_json).read_text())
            lines = report_lines(payload)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"--from-json {args.from_json}: not a bigger_faster.json run ({exc})")
            return 2
        write_report(payload, args.out, lines)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="bfnas-bf-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    full = bench.space.largest()
    full_ms = bench.measure(full)
    bench.say(f"full MiniLM INT8: {full_ms:.3f} ms (raw median)")
    bench.profile_space()
    bench.say(f"profiled {args.samples} subnets; predictor fitted")
    bench.task_supernet()
    bench.say(f"task supernet: {bench.tsn_summary}")
    params = load_objective("params")
    fractions = [float(f) for f in args.budgets.split(",")]
    middle = len(fractions) // 2
    # 1. Every method's choice at every budget (searches and measurements only).
    picks: list[dict[str, Any]] = []
    for frac in fractions:
        budget = frac * full_ms
        p: dict[str, Any] = {"fraction": frac, "budget_ms": budget}
        p["task"], p["task_search_s"] = bench.search(bench.scorer, "task", budget)
        p["params"], _ = bench.search(params, "params", budget)
        p["hand-scaled"] = {
            family: fitting[-1]
            for family, cfgs in hand_scaled(bench.space).items()
            if (fitting := [c for c in cfgs if bench.fits(c, budget)])
        }
        p["random"] = pick_random(bench, budget, args.random)
        picks.append(p)
        bench.say(f"budget {frac:.0%} ({budget:.2f} ms): task {p['task']}, params {p['params']}")
    if not args.skip_finetune_search:
        t = time.perf_counter()
        p = picks[middle]
        p["task-finetune"], p["finetune_search_s"], p["finetuned"] = finetune_search(
            bench, p["budget_ms"]
        )
        bench.phase("task-finetune search", t)
        bench.say(f"task-finetune search: {p['task-finetune']} in {p['finetune_search_s']:.0f} s")
    # 2. The fine-tunes: seed 0 of everything first (it picks the hand-scaled row), then the
    # other seeds of the rows that report a mean and std.
    t = time.perf_counter()
    acc: dict[tuple[str, int], float] = {}

    def run(seed: int, cfgs: list[SubnetConfig]) -> None:
        todo = list({c.key(): c for c in cfgs if (c.key(), seed) not in acc}.values())
        with bench.finetuner(seed, args.train_examples) as f:
            for c, a in zip(todo, f.many(todo), strict=True):
                acc[(c.key(), seed)] = 100 * a
        bench.say(f"seed {seed}: {len(todo)} fine-tunes done")

    def seeded(p: dict) -> list[SubnetConfig]:
        return [p[m] for m in ("task", "params", "task-finetune") if m in p]

    run(0, [c for p in picks for c in [*seeded(p), *p["hand-scaled"].values(), *p["random"]]])
    for p in picks:
        if p["hand-scaled"]:
            p["hand-family"], p["hand-best"] = max(
                p["hand-scaled"].items(), key=lambda kv: acc[(kv[1].key(), 0)]
            )
    for seed in range(1, args.seeds):
        run(
            seed,
            [
                c
                for p in picks
                for c in [*seeded(p), *([p["hand-best"]] if "hand-best" in p else [])]
            ],
        )
    bench.phase("fine-tunes", t)
    # 3. The table.
    seeds = range(args.seeds)
    table: list[dict[str, Any]] = []
    for p in picks:
        e: dict[str, Any] = {k: p[k] for k in ("fraction", "budget_ms", "task_search_s")}
        for m in ("task", "params", "task-finetune"):
            if m in p:
                e[m] = row(bench, p[m], [acc[(p[m].key(), s)] for s in seeds])
        if "hand-best" in p:
            c = p["hand-best"]
            e["hand-scaled"] = {
                **row(bench, c, [acc[(c.key(), s)] for s in seeds]),
                "family": p["hand-family"],
                "candidates": {f: str(c) for f, c in p["hand-scaled"].items()},
            }
        rows = [row(bench, c, [acc[(c.key(), 0)]]) for c in p["random"]]
        e["random"] = {
            "subnets": rows,
            "mean": statistics.median(r["mean"] for r in rows),
            "std": 0.0,
            "measured_ms": statistics.median(r["measured_ms"] for r in rows),
            "text": f"median of {len(rows)}",
        }
        if "task-finetune" in p:
            e["finetune_search_s"], e["finetuned"] = p["finetune_search_s"], p["finetuned"]
        table.append(e)
    payload = {
        "full_ms": full_ms,
        "table": table,
        "minutes": (time.perf_counter() - bench.t0) / 60,
        "phases_s": bench.phases,
        "task_supernet": bench.tsn_summary,
        "args": vars(args),
    }
    write_report(payload, args.out)
    return 0


def write_report(payload: dict[str, Any], out: str, lines: list[str] | None = None) -> None:
    plot(payload["table"], Path(out) / "bigger_faster.png")
    publish(out, "bigger_faster", lines or report_lines(payload), payload)


def fine_tuned_subnets(table: list[dict]) -> list[dict]:
    """Every distinct subnet the table fine-tuned with seed 0, once each."""
    rows = [
        r
        for e in table
        for r in [
            *(e[m] for m in ("task", "params", "hand-scaled", "task-finetune") if m in e),
            *e["random"]["subnets"],
        ]
    ]
    return list({r["text"]: r for r in rows}.values())


def report_lines(payload: dict[str, Any]) -> list[str]:
    args = argparse.Namespace(**payload["args"])
    full_ms, table, tsn = payload["full_ms"], payload["table"], payload["task_supernet"]
    lines = [
        f"local-cpu-int8, space minilm-l6; full MiniLM INT8 {full_ms:.3f} ms (raw median, "
        f"batch 1, seq 128). Task supernet: {args.tsn_steps} sandwich steps (lr {args.tsn_lr:g}) "
        f"from all-MiniLM-L6-v2, dev accuracy largest "
        f"{100 * tsn['dev_accuracy']['largest']:.1f} %, smallest "
        f"{100 * tsn['dev_accuracy']['smallest']:.1f} %. Every row fine-tuned "
        f"from it: {args.epochs} epoch(s) over {args.train_examples} train examples, lr "
        f"{args.lr:g}, batch 32, max_len {MAX_LEN}; dev accuracy mean ± std over seeds "
        f"0..{args.seeds - 1} (random: median of {args.random} subnets, seed 0). Latency: "
        f"each row's subnet measured here (raw median ms). {payload['minutes']:.0f} minutes "
        "on this machine.",
        "",
        "| budget | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    wins, within = 0, 0
    for e in table:
        cells = []
        for m in METHODS:
            r = e.get(m)
            if not r or "mean" not in r:
                cells.append("")
                continue
            over = " **over**" if r["measured_ms"] > e["budget_ms"] else ""
            cells.append(f"{r['mean']:.1f} ± {r['std']:.1f} % @ {r['measured_ms']:.2f} ms{over}")
        lines.append(
            f"| {e['fraction']:.0%} ({e['budget_ms']:.2f} ms) | " + " | ".join(cells) + " |"
        )
        others = [e[m]["mean"] for m in METHODS[1:] if m in e and "mean" in e[m]]
        wins += e["task"]["mean"] >= max(others)
        within += all(e[m]["measured_ms"] <= e["budget_ms"] for m in METHODS if m in e)
    lines += ["", "The subnets:", ""]
    for e in table:
        for m in ("task", "params", "hand-scaled", "task-finetune"):
            if m in e:
                r = e[m]
                family = f", {r['family']}" if "family" in r else ""
                lines.append(
                    f"- {e['fraction']:.0%} {m}: `{r['text']}` ({r['params'] / 1e6:.2f} M "
                    f"encoder params, one-shot {r['one_shot']:.1f} %, "
                    f"{r['measured_ms'] / e['budget_ms']:.0%} of the budget{family})"
                )
    lines += [
        "",
        f"(a) task >= every other column: {wins}/{len(table)} budgets; every row within its "
        f"budget as measured: {within}/{len(table)} budgets",
        *(
            f"task-finetune search {e['finetune_search_s']:.0f} s ({e['finetuned']} fine-tunes "
            f"of {args.tf_examples} examples) against the task search's "
            f"{e['task_search_s']:.0f} s at {e['fraction']:.0%}"
            for e in table
            if "finetune_search_s" in e
        ),
        ranking_line(fine_tuned_subnets(table)),
        "Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in payload["phases_s"].items()),
        "",
        "One offline task (stdlib docstring sentences by module), not GLUE.",
    ]
    return lines


def ranking_line(rows: list[dict]) -> str:
    """How well the one-shot scores (and encoder parameters) ranked the subnets by what they
    reached once fine-tuned from the task supernet (seed 0): Kendall tau over all of them."""
    from scipy.stats import kendalltau

    tuned = [r["accuracy"][0] for r in rows]
    # A run from before the head refit has one one-shot column, with the inherited head.
    refit = all("one_shot_inherited" in r for r in rows)
    one_shot = (
        "one-shot accuracy (head refitted: the task objective)" if refit else "one-shot accuracy"
    )
    scores = {one_shot: "one_shot"}
    if refit:
        scores["one-shot accuracy with the inherited head"] = "one_shot_inherited"
    scores["encoder parameters"] = "params"
    taus = [
        f"{name} {kendalltau([r[key] for r in rows], tuned).statistic:.3f}"
        for name, key in scores.items()
    ]
    return (
        f"Over the {len(rows)} distinct subnets fine-tuned above (seed 0), Kendall tau against "
        f"their fine-tuned accuracy: {', '.join(taus)}."
    )


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, marker in zip(METHODS, "o^sDv", strict=False):
        pts = [(e[m]["measured_ms"], e[m]["mean"]) for e in table if m in e and "mean" in e[m]]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, linestyle="-", label=m)
    for e in table:
        ax.axvline(e["budget_ms"], color="grey", linewidth=0.6, linestyle=":")
        for r in e["random"]["subnets"]:
            ax.plot(r["measured_ms"], r["mean"], ".", color="grey", alpha=0.5)
    ax.set(xlabel="measured INT8 latency (raw median ms)", ylabel="dev accuracy (%)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    raise SystemExit(main())
