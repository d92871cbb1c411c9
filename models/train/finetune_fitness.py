"""The original Bigger&Faster fitness: each candidate fine-tuned briefly on the task from the
supernet's inherited weights, its dev accuracy the score (the search's `task-finetune`
objective). Costly -- a fine-tune per architecture -- so it is for small searches, and
every result is kept:

- cached by arch key in a JSON file (`cache_file`), under a fingerprint of everything else
  that decides the number (the supernet's weights, the task's two splits, the fine-tune
  settings): a rerun, or another search over the same supernet and task, fine-tunes only
  architectures it has not seen. The file is rewritten (atomically) after every fine-tune,
  so an interrupted batch keeps what it finished.
- several candidates at once: `many(cfgs)` fine-tunes the new ones in `workers` processes
  (spawned, not forked: a forked child of a process that has run torch's OpenMP threads can
  hang), torch's threads split among them. A pool is where its processes run: `local` (this
  machine) or `ray` (the workers are actors on a Ray cluster, through Ray's multiprocessing
  Pool: the same calls, and the supernet and task folders must be readable at the same
  paths on its nodes).

Every fine-tune is seeded (`finetune.finetune_subnet`), so a candidate's accuracy does not
depend on the batch it came in or on the worker that ran it, up to float rounding between
thread counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bfnas.errors import InputError, read_text_input
from bfnas.models.outputs import write_atomic
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings

CACHE_FORMAT = "bfnas task-finetune cache 1"


@dataclass(frozen=True)
class FitnessSource:
    """Where a candidate's weights and task come from: a supernet folder (a task supernet's
    head is inherited too, when `inherit_head`), its tokenizer, the task folder. Paths, so
    a worker process loads them itself."""

    supernet: str
    tokenizer: str
    task_dir: str
    inherit_head: bool = True


@dataclass(frozen=True)
class FitnessSettings:
    # A short fine-tune learns more at 2e-4 than at BERT's usual 5e-5 (measured for
    # tests/test_task_eval.py: a 2-layer subnet 0.95 dev accuracy at 2e-4, 0.79-0.85 at 1e-4).
    finetune: FinetuneSettings = FinetuneSettings(epochs=1, lr=2e-4, batch=32, max_len=64)
    train_examples: int | None = None  # a seeded subset of train, for a shorter fine-tune
    workers: int = 1
    pool: str = "local"  # a name in POOLS
    ray_address: str | None = None
    cache_file: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InputError.bad_setting("workers", f"must be at least 1, got {self.workers}")
        if self.train_examples is not None and self.train_examples < 1:
            raise InputError.bad_setting(
                "train_examples", f"must be at least 1, got {self.train_examples}"
            )
        if self.pool not in POOLS:  # set by the caller from the profile, never typed
            raise ValueError(f"unknown pool {self.pool!r} (known: {', '.join(POOLS)})")


# -- what a worker holds ------------------------------------------------------------------------
@dataclass
class _Loaded:
    supernet: Any
    data: Any
    pooler: Any
    classifier: Any
    about: dict[str, Any]


def _load(source: FitnessSource, settings: FitnessSettings) -> _Loaded:
    """The supernet, its head and the tokenized task, checked; what every fine-tune reuses."""
    import random as stdlib_random

    from bfnas.models.nn.checkpoint import (
        load_supernet,
        read_pooler,
        read_task_head,
        resolve_checkpoint,
    )
    from bfnas.models.train.finetune import prepare_task
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.task_supernet import check_task_labels, task_identity

    folder = resolve_checkpoint(source.supernet)
    supernet = load_supernet(folder)
    task = read_task(source.task_dir)
    head = read_task_head(folder) if source.inherit_head else None
    if head is not None:
        from bfnas.models.nn.checkpoint import read_task_manifest

        check_task_labels(read_task_manifest(folder) or {}, folder / "task.json", task)
    if settings.train_examples is not None and settings.train_examples < len(task.train.a):
        # A fixed subset: the same examples for every candidate.
        rows = sorted(
            stdlib_random.Random(0).sample(range(len(task.train.a)), settings.train_examples)
        )
        task = replace(task, train=task.train.subset(rows))
    # The candidates are checked one by one when fine-tuned; the tokens need only the
    # vocabulary, checked against any member that fits (one layer, full width).
    d = supernet.dims
    data = prepare_task(
        supernet,
        SubnetConfig.uniform(1, d.hidden, 1, d.qkv, d.ffn),
        task,
        source.tokenizer,
        settings.finetune,
    )
    about = {
        "supernet_weights_sha256": supernet.source.get("weights_sha256"),
        "head": "task supernet" if head is not None else "pooler only",
        "task": task_identity(task),
        "finetune": asdict(settings.finetune),
        "train_examples": len(task.train.a),
    }
    return _Loaded(
        supernet,
        data,
        head.pooler if head is not None else read_pooler(folder),
        head.classifier if head is not None else None,
        about,
    )


def _finetune(loaded: _Loaded, arch: dict, settings: FitnessSettings) -> dict[str, Any]:
    from bfnas.models.train.finetune import finetune_subnet

    cfg = SubnetConfig.from_dict(arch)
    r = finetune_subnet(
        loaded.supernet,
        cfg,
        loaded.data,
        settings.finetune,
        loaded.pooler,
        classifier=loaded.classifier,
    )
    keep = ("accuracy", "macro_f1", "train_seconds", "eval_seconds", "steps", "arch", "threads")
    return {k: r[k] for k in keep}


# The state of a pool's worker process: loaded once by the pool's initializer.
_WORKER: dict[str, Any] = {}


def _worker_init(source: FitnessSource, settings: FitnessSettings, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["loaded"] = _load(source, settings)
    _WORKER["settings"] = settings


def _worker_job(job: tuple[int, dict]) -> tuple[int, dict[str, Any]]:
    index, arch = job
    return index, _finetune(_WORKER["loaded"], arch, _WORKER["settings"])


def local_pool(workers: int, initargs: tuple, settings: FitnessSettings) -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(workers, _worker_init, initargs)


def ray_pool(workers: int, initargs: tuple, settings: FitnessSettings) -> Any:
    from ray.util.multiprocessing import Pool

    threads = initargs[-1]
    return Pool(
        workers,
        _worker_init,
        initargs,
        ray_address=settings.ray_address,
        ray_remote_args={"num_cpus": threads},
    )


POOLS: dict[str, Callable[[int, tuple, FitnessSettings], Any]] = {
    "local": local_pool,
    "ray": ray_pool,
}


# -- the objective ------------------------------------------------------------------------------
class FinetuneFitness:
    """`fitness(cfg)` / `fitness.many(cfgs)`: dev accuracy after a short fine-tune from
    inherited weights, cached by arch key (in memory and in `settings.cache_file`).
    `computed` counts the fine-tunes actually run. Use it as a context manager (or call
    `close`) to stop its worker processes."""

    def __init__(
        self,
        source: FitnessSource,
        settings: FitnessSettings = FitnessSettings(),
        threads: int | None = None,
    ) -> None:
        import torch

        self.source, self.settings = source, settings
        self.threads = threads or torch.get_num_threads()
        # Loaded here too: bad input (a damaged folder, labels that do not match) is refused
        # before a search starts, and a single worker runs in this process.
        self.loaded = _load(source, settings)
        self.about = self.loaded.about
        self.fingerprint = hashlib.sha256(
            json.dumps(self.about, sort_keys=True).encode()
        ).hexdigest()[:16]
        self.cache_path = Path(settings.cache_file) if settings.cache_file else None
        self.results: dict[str, dict[str, Any]] = self._read_cache()
        self.computed = 0
        self._pool: Any = None
        self._pool_workers = 0

    # -- the cache file -------------------------------------------------------------------------
    def _read_file(self) -> dict[str, Any]:
        path = self.cache_path
        if path is None or not path.exists():
            return {"format": CACHE_FORMAT, "runs": {}}
        try:
            data = json.loads(read_text_input(path))
        except json.JSONDecodeError as exc:
            raise InputError(
                str(path), None, f"damaged: not valid JSON ({exc.msg}): delete it or use another"
            ) from None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise InputError(
                str(path), "format", f"not a task-finetune cache (expected {CACHE_FORMAT!r})"
            )
        if not isinstance(data.get("runs"), dict):
            raise InputError(str(path), "runs", "damaged: not an object")
        return data

    def _read_cache(self) -> dict[str, dict[str, Any]]:
        run = self._read_file()["runs"].get(self.fingerprint, {})
        results = run.get("results", {}) if isinstance(run, dict) else {}
        good = {}
        for key, r in results.items() if isinstance(results, dict) else ():
            if isinstance(r, dict) and isinstance(r.get("accuracy"), int | float):
                good[key] = r
        return good

    def _write_cache(self) -> None:
        if self.cache_path is None:
            return
        data = self._read_file()  # another search may have added its own runs meanwhile
        data["runs"][self.fingerprint] = {"about": self.about, "results": self.results}
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.cache_path, json.dumps(data, indent=1) + "\n")

    # -- scoring --------------------------------------------------------------------------------
    def __call__(self, cfg: SubnetConfig) -> float:
        return self.many([cfg])[0]

    def many(
        self,
        cfgs: Sequence[SubnetConfig],
        on_done: Callable[[SubnetConfig, dict], None] = lambda cfg, r: None,
    ) -> list[float]:
        todo: dict[str, SubnetConfig] = {}
        for c in cfgs:
            if c.key() not in self.results:
                todo.setdefault(c.key(), c)
        pending = list(todo.values())
        for cfg, result in self._run(pending):
            self.results[cfg.key()] = result
            self.computed += 1
            self._write_cache()
            on_done(cfg, result)
        return [float(self.results[c.key()]["accuracy"]) for c in cfgs]

    def _run(self, cfgs: list[SubnetConfig]):
        if not cfgs:
            return
        workers = min(self.settings.workers, len(cfgs))
        if workers == 1 and self.settings.pool == "local":
            for cfg in cfgs:
                yield cfg, _finetune(self.loaded, cfg.to_dict(), self.settings)
            return
        pool = self._pool_for(workers)
        jobs = [(i, c.to_dict()) for i, c in enumerate(cfgs)]
        for index, result in pool.imap_unordered(_worker_job, jobs):
            yield cfgs[index], result

    def _pool_for(self, workers: int) -> Any:
        """The worker pool, started once at the search's first batch and kept: each worker
        loads the supernet and the task once."""
        if self._pool is None:
            self._pool_workers = self.settings.workers
            threads = max(1, self.threads // self._pool_workers)
            self._pool = POOLS[self.settings.pool](
                self._pool_workers, (self.source, self.settings, threads), self.settings
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> FinetuneFitness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_cache_file() -> str:
    """Beside the artifact cache: $BFNAS_CACHE's parent, else ~/.cache/bfnas."""
    base = os.environ.get("BFNAS_CACHE")
    root = Path(base).parent if base else Path.home() / ".cache" / "bfnas"
    return str(root / "task-finetune.json")
