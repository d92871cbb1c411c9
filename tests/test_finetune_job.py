"""`FinetuneJob`: fine-tunes into the accuracy store, each once, shared between jobs, a
failure stored as one, the protocol's teacher made once."""

from dataclasses import replace

import pytest

from bfnas.bench.jobs import finetuning
from bfnas.bench.jobs.finetuning import FinetuneJob, FinetuneSource
from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings
from bfnas.models.train.protocols import FinetuneProtocol
from bfnas.models.train.task_data import TaskDataSettings, build_task

A = SubnetConfig.uniform(1, 128, 2, 64, 256)
B = SubnetConfig.uniform(1, 192, 3, 96, 384)
TEACHER = SubnetConfig.uniform(2, 256, 8, 256, 1024)
QUICK = FinetuneSettings(epochs=1, lr=5e-4, batch=32, max_len=32, length_grouped=True)
LABELS = FinetuneProtocol("quick-test", QUICK)
DISTIL = FinetuneProtocol(
    "distil-test", replace(QUICK, distill=0.5, temperature=2.0), teacher=replace(QUICK, epochs=2)
)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task") / "task"
    build_task(folder, TaskDataSettings(classes=2, max_per_class=60))
    return folder


def job(store, task, tmp_path, protocol=LABELS, **kw):
    source = FinetuneSource("minilm", str(task), str(tmp_path / "teachers"))
    return FinetuneJob(
        store=store,
        source=source,
        protocol=protocol,
        space="minilm-l6",
        teacher_cfg=TEACHER,
        **kw,
    )


def test_each_finetune_runs_once_and_a_rerun_reads_it_back(task, tmp_path, monkeypatch):
    events = []
    with AccuracyStore(tmp_path / "acc.db") as store:
        first = job(store, task, tmp_path, on_event=events.append).run(
            [(A, 0), (A, 1), (B, 0), (A, 0)]
        )
        assert [r.status for r in first] == ["ok"] * 4 and first[0] == first[3]
        assert [e.kind for e in events].count("finished") == 3  # (A, 0) asked twice, run once
        assert {r.seed for r in first[:2]} == {0, 1} and first[2].arch == B
        assert all(0 <= r.accuracy <= 1 and r.train_seconds > 0 for r in first)
        assert first[0].metrics["steps"] > 0 and first[0].environment["threads"] >= 1

    def no_training(*args):
        raise AssertionError("fine-tuned twice")

    monkeypatch.setattr(finetuning, "finetune_one", no_training)
    with AccuracyStore(tmp_path / "acc.db") as store:
        again = job(store, task, tmp_path).run([(B, 0), (A, 1)])
        assert again == [first[2], first[1]]
        stats = store.seed_stats(first[0].task_sha256, LABELS.hash(), A, first[0].source)
        assert stats.n == 2 and stats.seeds == (0, 1)
        (run,) = [r for r in store.runs("finetune") if r["args"] and '"todo": 0' in r["args"]]
        assert run["status"] == "finished"


def test_a_failure_is_stored_and_the_rest_goes_on(task, tmp_path, monkeypatch):
    monkeypatch.setattr("bfnas.models.train.finetune.finetune_subnet", _raising_for(B))
    with AccuracyStore(tmp_path / "acc.db") as store:
        a, b = job(store, task, tmp_path).run([(A, 0), (B, 0)])
    assert a.status == "ok" and b.status == "failed" and "out of memory" in b.reason
    assert b.accuracy is None


def _raising_for(bad):
    from bfnas.models.train import finetune

    real = finetune.finetune_subnet

    def finetune_subnet(supernet, cfg, *args, **kwargs):
        if cfg == bad:
            raise RuntimeError("out of memory")  # what torch raises
        return real(supernet, cfg, *args, **kwargs)

    return finetune_subnet


def test_work_another_live_process_holds_is_left_to_it(task, tmp_path):
    with AccuracyStore(tmp_path / "acc.db") as store:
        j = job(store, task, tmp_path)
        j.register()
        key = j.key(A, 0)
        with store.transaction() as db:  # a claim by a live process (pid 1) on this host
            cols = key.columns()
            db.execute(
                f"INSERT INTO claims({', '.join(cols)}, host, pid, created) "
                f"VALUES ({', '.join('?' * len(cols))}, ?, 1, 'now')",
                (*cols.values(), store.host),
            )
        events = []
        j.on_event = events.append
        held, done = j.run([(A, 0), (A, 1)])
    assert held is None and done.status == "ok"
    assert [e.kind for e in events if e.cfg == A and e.seed == 0] == ["held"]


def test_a_distilling_protocol_makes_its_teacher_once_in_two_workers(task, tmp_path):
    events = []
    with AccuracyStore(tmp_path / "acc.db") as store:
        out = job(
            store, task, tmp_path, protocol=DISTIL, workers=2, threads=2, on_event=events.append
        ).run([(A, 0), (B, 0), (A, 1)])
    assert [r.status for r in out] == ["ok"] * 3
    assert any(e.kind == "teacher" for e in events)
    teachers = list((tmp_path / "teachers").glob("*/teacher.json"))
    assert len(teachers) == 1  # made here once; each worker read it back
    assert {r.threads for r in out} == {1}  # two workers of one thread each
