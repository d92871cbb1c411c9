"""Fine-tuning subnets into the accuracy store: the accuracy half's `ProfileJob`.

`FinetuneJob(...).run(work)` fine-tunes each (subnet, seed) of `work` on a task under one
protocol, from one supernet's weights, and stores every result as it finishes
(`AccuracyStore`): what the store holds already is read back, never fine-tuned twice; each
fine-tune is claimed before it starts, so two jobs on one store share the work; a fine-tune
that raises is stored `failed` with its reason. The protocol's teacher, when it distils, is
made once (in this process, before any worker starts) and read back by every worker.

`workers` > 1 fine-tunes in that many spawned processes (not forked: a forked child of a
process that has run torch's OpenMP threads can hang), torch's threads split among them:
small subnets use two threads poorly, so two one-thread workers do more in the same time.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bfnas.bench.device.environment import environment
from bfnas.bench.store.accuracy_store import (
    AccuracyStore,
    FinetuneKey,
    FinetuneRecord,
    WeightsSource,
    task_sha256,
)
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.protocols import FinetuneProtocol

# What a stored fine-tune keeps of its result beyond the accuracy.
METRIC_KEYS = (
    "macro_f1",
    "mcc",
    "epoch_losses",
    "steps",
    "majority_accuracy",
    "truncated_examples",
)


@dataclass(frozen=True)
class FinetuneSource:
    """Where every fine-tune of a job starts: the supernet folder (or 'minilm') the subnets'
    weights come from, the task folder, the tokenizer (default: the supernet folder's) and
    the folder the protocol's teachers are kept in. Paths, so a worker loads them itself."""

    supernet: str
    task_dir: str
    teachers: str
    tokenizer: str | None = None


@dataclass(frozen=True)
class FinetuneEvent:
    kind: str  # "teacher" | "stored" | "finished" | "held"
    cfg: SubnetConfig | None = None
    seed: int | None = None
    record: FinetuneRecord | None = None
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass
class _Loaded:
    """What every fine-tune of a job reuses: loaded once per process."""

    supernet: Any
    data: Any
    pooler: Any
    teacher: Any  # the teacher's logits on train, or None
    teacher_about: dict | None
    source: WeightsSource
    task_sha256: str


def load(
    source: FinetuneSource,
    protocol: FinetuneProtocol,
    teacher_cfg: SubnetConfig,
    on_teacher: Callable[[dict], None] = lambda row: None,
) -> _Loaded:
    """The supernet, the tokenized task and the teacher's logits (made here the first time),
    checked: bad input is refused before any fine-tune starts."""
    from bfnas.models.nn.checkpoint import load_supernet, read_pooler, resolve_checkpoint
    from bfnas.models.train.finetune import prepare_task
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.task_teacher import teacher_logits

    task = read_task(source.task_dir)
    folder = resolve_checkpoint(source.supernet)
    supernet = load_supernet(folder)
    pooler = read_pooler(folder)
    # The tokens need only the vocabulary, checked against the teacher's architecture (every
    # subnet is checked against the supernet when it is fine-tuned).
    data = prepare_task(
        supernet, teacher_cfg, task, source.tokenizer or folder, protocol.for_seed(0)
    )
    teacher, about = None, None
    if protocol.teacher is not None:
        teacher, about = teacher_logits(
            supernet, teacher_cfg, data, protocol, source.teachers, pooler, on_teacher
        )
    return _Loaded(
        supernet,
        data,
        pooler,
        teacher,
        about,
        WeightsSource(sha256=str(supernet.source.get("weights_sha256")), path=str(folder)),
        task_sha256(task.train.path, task.dev.path),
    )


def finetune_one(
    loaded: _Loaded, protocol: FinetuneProtocol, cfg: SubnetConfig, seed: int
) -> dict[str, Any]:
    """One fine-tune's result as the store keeps it: 'ok' with the accuracy, or 'failed'
    with the reason (a bad arch is refused by the caller before this)."""
    import torch

    from bfnas.models.train.finetune import finetune_subnet

    try:
        r = finetune_subnet(
            loaded.supernet,
            cfg,
            loaded.data,
            protocol.for_seed(seed),
            loaded.pooler,
            teacher_logits=loaded.teacher,
        )
    except (RuntimeError, MemoryError, ValueError) as exc:  # torch's own failures
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    return {
        "status": "ok",
        "accuracy": r["accuracy"],
        "metrics": {k: r.get(k) for k in METRIC_KEYS},
        "train_seconds": r["train_seconds"],
        "eval_seconds": r["eval_seconds"],
        "threads": torch.get_num_threads(),
        "environment": {
            **environment(torch.get_num_threads()),
        },
    }


# A pool worker's state: loaded once by the pool's initializer.
_WORKER: dict[str, Any] = {}


def _worker_init(
    source: FinetuneSource, protocol: FinetuneProtocol, teacher_cfg: SubnetConfig, threads: int
) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["loaded"] = load(source, protocol, teacher_cfg)
    _WORKER["protocol"] = protocol


def _worker_job(job: tuple[int, dict, int]) -> tuple[int, dict[str, Any]]:
    index, arch, seed = job
    return index, finetune_one(
        _WORKER["loaded"], _WORKER["protocol"], SubnetConfig.from_dict(arch), seed
    )


@dataclass(kw_only=True)
class FinetuneJob:
    """Fine-tune `(subnet, seed)` pairs into `store` (keyword arguments only); see the
    module's docstring. `teacher_cfg` is the space's largest subnet."""

    store: AccuracyStore
    source: FinetuneSource
    protocol: FinetuneProtocol
    space: str
    teacher_cfg: SubnetConfig
    workers: int = 1
    threads: int | None = None  # torch threads in all (default: torch's own)
    on_event: Callable[[FinetuneEvent], None] = lambda e: None
    _loaded: _Loaded | None = field(default=None, init=False, repr=False)

    def loaded(self) -> _Loaded:
        if self._loaded is None:
            self._loaded = load(
                self.source,
                self.protocol,
                self.teacher_cfg,
                lambda row: self.on_event(
                    FinetuneEvent(
                        "teacher",
                        done=row["step"],
                        total=row["total"],
                        message=f"fine-tuning the teacher, step {row['step']}/{row['total']}",
                    )
                ),
            )
        return self._loaded

    def key(self, cfg: SubnetConfig, seed: int) -> FinetuneKey:
        loaded = self.loaded()
        return FinetuneKey(loaded.task_sha256, self.protocol.hash(), cfg, seed, loaded.source)

    def register(self) -> None:
        """The task and the protocol into the store (what every fine-tune refers to)."""
        loaded = self.loaded()
        task = loaded.data.task
        self.store.add_protocol(self.protocol.name, self.protocol.identity())
        self.store.add_task(
            loaded.task_sha256,
            str(task.folder),
            list(task.label_names),
            len(task.train.a),
            len(task.dev.a),
        )

    def stored(self, work: Sequence[tuple[SubnetConfig, int]]) -> dict[FinetuneKey, Any]:
        """The stored fine-tune of each pair of `work` that has one."""
        loaded = self.loaded()
        records = self.store.finetunes(
            loaded.task_sha256, self.protocol.hash(), source=loaded.source
        )
        by_key = {r.key: r for r in records}
        return {k: by_key[k] for k in (self.key(c, s) for c, s in work) if k in by_key}

    def run(self, work: Sequence[tuple[SubnetConfig, int]]) -> list[FinetuneRecord | None]:
        """Each pair's stored fine-tune, fine-tuning those the store lacks; None for a pair
        another process holds (it stores it when done)."""
        for cfg, _ in work:
            self.loaded().supernet.check_fits(cfg, setting="arch")
        self.register()
        unique = list(dict.fromkeys((c, s) for c, s in work))
        have = self.stored(unique)
        todo = [(c, s) for c, s in unique if self.key(c, s) not in have]
        run_id = self.store.start_run(
            "finetune",
            {
                "protocol": self.protocol.name,
                "task": self.source.task_dir,
                "supernet": self.source.supernet,
                "work": len(unique),
                "todo": len(todo),
                "workers": self.workers,
            },
        )
        done, failed, held = len(unique) - len(todo), 0, 0
        for cfg, seed in unique:
            if self.key(cfg, seed) in have:
                self.on_event(
                    FinetuneEvent("stored", cfg, seed, have[self.key(cfg, seed)], done, len(unique))
                )
        claimed = []
        for cfg, seed in todo:
            if self.store.claim(self.key(cfg, seed)):
                claimed.append((cfg, seed))
            else:
                held += 1
                self.on_event(FinetuneEvent("held", cfg, seed, None, done, len(unique)))
        status = "interrupted"
        try:
            for cfg, seed, result in self._execute(claimed):
                self.store.add_finetune(self.key(cfg, seed), self.space, run_id=run_id, **result)
                done += 1
                failed += result["status"] == "failed"
                record = self.stored([(cfg, seed)])[self.key(cfg, seed)]
                self.on_event(FinetuneEvent("finished", cfg, seed, record, done, len(unique)))
            status = "finished"
        finally:
            for cfg, seed in claimed:  # what an interrupted job had not finished
                self.store.release(self.key(cfg, seed))
            self.store.finish_run(run_id, status, {"done": done, "failed": failed, "held": held})
        final = self.stored(unique)
        return [final.get(self.key(c, s)) for c, s in work]

    def _execute(
        self, work: list[tuple[SubnetConfig, int]]
    ) -> Iterator[tuple[SubnetConfig, int, dict]]:
        if not work:
            return
        workers = min(self.workers, len(work))
        if workers == 1:
            for cfg, seed in work:
                t0 = time.perf_counter()
                result = finetune_one(self.loaded(), self.protocol, cfg, seed)
                result.setdefault("train_seconds", time.perf_counter() - t0)
                yield cfg, seed, result
            return
        import torch

        threads = max(1, (self.threads or torch.get_num_threads()) // workers)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(
            workers,
            _worker_init,
            (self.source, self.protocol, self.teacher_cfg, threads),
        ) as pool:
            jobs = [(i, c.to_dict(), s) for i, (c, s) in enumerate(work)]
            for index, result in pool.imap_unordered(_worker_job, jobs):
                cfg, seed = work[index]
                yield cfg, seed, result


def default_teachers(store_path: str | Path) -> str:
    """Teachers beside the accuracy store: `<store>.teachers/`."""
    path = Path(store_path)
    return str(path.with_name(path.name + ".teachers"))
