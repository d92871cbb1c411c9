"""A `FinetuneJob` as `AccuracyUntil` drives it: each round's subnets fine-tuned over the
seeds into the accuracy store, and the scope of the predictor those fine-tunes fit."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bfnas.bench.jobs.finetuning import FinetuneJob
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.accuracy_until import Finetuned
from bfnas.search.predictor_file import AccuracyScope


def job_rounds(
    job: FinetuneJob,
    seeds: Sequence[int],
    on_round: Callable[[int], None] = lambda subnets: None,
) -> Callable[[list[SubnetConfig]], Finetuned]:
    """`AccuracyUntil.finetune`: each subnet's mean accuracy over `seeds` (None where every
    seed failed), its seeds, and the round's minutes of fine-tuning (a fine-tune a rerun
    reads back from the store counts as when it ran). `on_round` gets the subnets done."""

    def finetune(cfgs: list[SubnetConfig]) -> Finetuned:
        records = job.run([(c, s) for c in cfgs for s in seeds])
        acc: list[float | None] = []
        n: list[int] = []
        for i in range(len(cfgs)):
            rs = records[i * len(seeds) : (i + 1) * len(seeds)]
            ok = [r.accuracy for r in rs if r is not None and r.status == "ok"]
            acc.append(statistics.fmean(ok) if ok else None)
            n.append(max(1, len(ok)))
        on_round(len(cfgs))
        minutes = sum(r.train_seconds or 0.0 for r in records if r is not None) / 60
        return Finetuned(acc, n, minutes)

    return finetune


def job_scope(job: FinetuneJob) -> AccuracyScope:
    """What the job's fine-tunes are accuracies of: the task's bytes, the protocol, the
    space, the starting weights and the length the model serves."""
    loaded, protocol = job.loaded(), job.protocol
    return AccuracyScope(
        task_sha256=loaded.task_sha256,
        protocol_hash=protocol.hash(),
        protocol=protocol.name,
        space=job.space,
        weights_sha256=loaded.source.sha256,
        seq_len=protocol.settings.max_len,
    )
