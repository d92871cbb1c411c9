"""The accuracy store: fine-tune results kept with their provenance, resumable, shared by
processes, and guarded as the latency store is (damaged or foreign input: one line, the file
byte for byte as it was)."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.store.accuracy_store import (
    AccuracyStore,
    FinetuneKey,
    WeightsSource,
    task_sha256,
)
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig

SETTINGS = {"epochs": 3, "lr": 5e-5, "batch": 32, "max_len": 128}
SOURCE = WeightsSource("a" * 64, "/ckpt/supernet.pt")


def cfg(hidden: int = 64) -> SubnetConfig:
    return SubnetConfig(1, hidden, (2,), (64,), (128,))


def make_task(folder: Path, dev_name: str = "dev.tsv") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (folder / dev_name).write_text("sentence\tlabel\nfine\t1\n")
    return task_sha256(folder / "train.tsv", folder / dev_name)


def setup(store: AccuracyStore, folder: Path) -> tuple[str, str]:
    task = store.add_task(make_task(folder), folder, ["0", "1"], 2, 1)
    return task, store.add_protocol("default", SETTINGS)


def ok(store: AccuracyStore, key: FinetuneKey, accuracy: float, **kw) -> int:
    return store.add_finetune(key, "tiny", status="ok", accuracy=accuracy, **kw)


def test_a_finetune_round_trips_with_its_provenance(tmp_path):
    db = tmp_path / "accuracy.db"
    teacher = WeightsSource("a" * 64, "/ckpt/supernet.pt", "b" * 64, "/ckpt/teacher")
    with AccuracyStore(db) as store:
        task, proto = setup(store, tmp_path / "sst2")
        run = store.start_run("finetune", {"seeds": [0]})
        key = FinetuneKey(task, proto, cfg(), 0, teacher)
        assert store.claim(key)
        ok(
            store,
            key,
            0.875,
            metrics={"macro_f1": 0.86, "mcc": 0.74, "epoch_losses": [0.7, 0.4, 0.3]},
            train_seconds=12.5,
            eval_seconds=0.5,
            threads=4,
            environment={"torch": "2.4.0", "host": "h"},
            run_id=run,
        )
        store.finish_run(run, "done", {"finetunes": 1})
        assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # released
    with AccuracyStore(db, read_only=True) as store:
        (r,) = store.finetunes()
        assert store.runs("finetune")[0]["status"] == "done"
    assert (r.task_sha256, r.task_folder, r.protocol_hash, r.protocol) == (
        task,
        str(tmp_path / "sst2"),
        proto,
        "default",
    )
    assert r.arch == cfg() and r.subnet_key == cfg().key() and r.space == "tiny"
    assert (r.seed, r.status, r.accuracy, r.run_id, r.reason) == (0, "ok", 0.875, run, None)
    assert r.metrics["epoch_losses"] == [0.7, 0.4, 0.3] and r.metrics["mcc"] == 0.74
    assert (r.train_seconds, r.eval_seconds, r.threads) == (12.5, 0.5, 4)
    assert r.environment == {"torch": "2.4.0", "host": "h"}
    assert r.source.teacher_sha256 == "b" * 64 and r.source.teacher_path == "/ckpt/teacher"
    assert r.source.path == "/ckpt/supernet.pt" and r.key == key

    out = tmp_path / "out.csv"
    with AccuracyStore(db, read_only=True) as store:
        assert store.export_csv(out) == 1
    (row,) = csv.DictReader(out.open())
    assert (
        row["accuracy"] == "0.875" and row["hidden"] == "64" and row["teacher_sha256"] == "b" * 64
    )


def test_what_identifies_a_finetune(tmp_path):
    """Seed, subnet, protocol settings, task bytes and starting weights (the teacher's too)
    make another fine-tune; the protocol's name, the task's folder and the weights' paths do
    not."""
    with AccuracyStore(tmp_path / "a.db") as store:
        task, proto = setup(store, tmp_path / "t")
        # The hash FinetuneProtocol.hash() gives its identity(): one name for one protocol.
        text = json.dumps(SETTINGS, sort_keys=True)
        assert proto == hashlib.sha256(text.encode()).hexdigest()[:16]
        ok(store, FinetuneKey(task, proto, cfg(), 0, SOURCE), 0.8)
        same = [
            FinetuneKey(task, store.add_protocol("renamed", dict(SETTINGS)), cfg(), 0, SOURCE),
            FinetuneKey(task, proto, cfg(), 0, WeightsSource("a" * 64, "/moved/supernet.pt")),
        ]
        moved = tmp_path / "elsewhere"
        shutil.copytree(tmp_path / "t", moved)
        assert task_sha256(moved / "train.tsv", moved / "dev.tsv") == task
        for key in same:
            assert not store.claim(key), key
        other = [
            FinetuneKey(task, proto, cfg(), 1, SOURCE),
            FinetuneKey(task, proto, cfg(96), 0, SOURCE),
            FinetuneKey(task, store.add_protocol("d", {**SETTINGS, "lr": 3e-5}), cfg(), 0, SOURCE),
            FinetuneKey(task, proto, cfg(), 0, WeightsSource("c" * 64)),  # another supernet
            FinetuneKey(task, proto, cfg(), 0, WeightsSource("a" * 64, teacher_sha256="b" * 64)),
        ]
        for key in other:
            assert store.claim(key), key
        (moved / "dev.tsv").write_text("sentence\tlabel\nfine\t0\n")
        assert task_sha256(moved / "train.tsv", moved / "dev.tsv") != task
        # Train and dev swapped is another task.
        assert task_sha256(moved / "dev.tsv", moved / "train.tsv") != task_sha256(
            moved / "train.tsv", moved / "dev.tsv"
        )
        with pytest.raises(ValueError, match="seed"):
            store.add_protocol("with-seed", {**SETTINGS, "seed": 0})
        # The database itself refuses a second one of an identity.
        with pytest.raises(sqlite3.IntegrityError):
            ok(store, FinetuneKey(task, proto, cfg(), 0, SOURCE), 0.9)


def test_a_rerun_skips_what_is_stored(tmp_path):
    db = tmp_path / "a.db"
    with AccuracyStore(db) as store:
        task, proto = setup(store, tmp_path / "t")
    work = [FinetuneKey(task, proto, cfg(64 + h), s, SOURCE) for h in (0, 32) for s in (0, 1, 2)]
    # A first job stores three and fails one, then is killed.
    with AccuracyStore(db) as store:
        for key, acc in zip(work[:3], (0.8, 0.82, 0.84), strict=True):
            assert store.claim(key)
            ok(store, key, acc)
        assert store.claim(work[3])
        store.add_finetune(work[3], "tiny", status="failed", reason="out of memory")
    with AccuracyStore(db) as store:
        done = store.done_keys(task, proto, SOURCE)
        assert done == set(work[:4])
        todo = [k for k in work if k not in done]
        assert todo == work[4:] and all(store.claim(k) for k in todo)
        assert not any(store.claim(k) for k in work[:4])  # stored: nobody runs them again
        # Asked to retry failures: the failed one only, and its first try stays on record.
        assert store.done_keys(task, proto, SOURCE, exclude=("failed",)) == set(work[:3])
        assert store.claim(work[3], retry=("failed",))
        ok(store, work[3], 0.7, supersede=True)
        (old,) = [r for r in store.finetunes(statuses=("failed",), superseded=True)]
        assert old.superseded and old.reason == "out of memory"
        assert [r.status for r in store.finetunes(subnet=cfg(96))] == ["ok"]


def test_a_failed_finetune_is_stored_and_counts_in_no_statistic(tmp_path):
    with AccuracyStore(tmp_path / "a.db") as store:
        task, proto = setup(store, tmp_path / "t")
        for seed, acc in ((0, 0.80), (1, 0.84), (2, 0.88)):
            ok(store, FinetuneKey(task, proto, cfg(), seed, SOURCE), acc)
        store.add_finetune(
            FinetuneKey(task, proto, cfg(), 3, SOURCE),
            "tiny",
            status="failed",
            reason="loss is NaN at step 40",
        )
        (failed,) = store.finetunes(statuses=("failed",))
        assert (failed.seed, failed.accuracy, failed.reason) == (3, None, "loss is NaN at step 40")
        stats = store.seed_stats(task, proto, cfg(), SOURCE)
        assert (stats.n, stats.seeds, stats.failed) == (3, (0, 1, 2), 1)
        assert stats.mean == pytest.approx(0.84) and stats.std == pytest.approx(0.04)  # sample
        (row,) = store.summary()["subnets"]
        assert row["accuracy_mean"] == pytest.approx(0.84) and row["failed"] == 1
        assert row["seeds"] == 3 and row["accuracy_std"] == pytest.approx(0.04)
        (group,) = store.summary()["by_task_protocol"]
        assert group["by_status"] == {"ok": 3, "failed": 1}
        # Another source's fine-tunes of the subnet are other statistics.
        other = store.seed_stats(task, proto, cfg(), WeightsSource("c" * 64))
        assert (other.n, other.mean, other.std) == (0, None, None)
        with pytest.raises(ValueError, match="reason"):
            store.add_finetune(FinetuneKey(task, proto, cfg(), 4, SOURCE), "t", status="failed")
        with pytest.raises(ValueError, match="accuracy"):
            ok(store, FinetuneKey(task, proto, cfg(), 4, SOURCE), 84.0)  # a percent


def _claim_all(db: str, work: list[FinetuneKey], start, out) -> None:
    """One fine-tuning process: claims what it can and stores it."""
    with AccuracyStore(db) as store:
        start.wait()
        mine = []
        for key in work:
            if store.claim(key):
                time.sleep(0.02)  # the fine-tune
                ok(store, key, 0.5, environment={"worker": multiprocessing.current_process().name})
                mine.append((key.subnet.key(), key.seed))
        out.put(mine)


def test_two_processes_share_the_work_without_duplicates(tmp_path):
    db = tmp_path / "a.db"
    with AccuracyStore(db) as store:
        task, proto = setup(store, tmp_path / "t")
    work = [
        FinetuneKey(task, proto, cfg(64 + h), s, SOURCE) for h in range(0, 320, 32) for s in (0, 1)
    ]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(db), work, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:  # a few items: they fit the queue's pipe, so joining first cannot hang
        p.join(timeout=120)
        assert p.exitcode == 0  # a duplicate would have been refused (IntegrityError) there
    got = [out.get(timeout=10) for _ in procs]
    a, b = (set(g) for g in got)
    assert a and b and not a & b  # both worked, on disjoint fine-tunes
    assert a | b == {(k.subnet.key(), k.seed) for k in work}
    with AccuracyStore(db, read_only=True) as store:
        assert len(store.finetunes()) == len(work)


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    with AccuracyStore(tmp_path / "a.db") as store:
        task, proto = setup(store, tmp_path / "t")
        keys = [FinetuneKey(task, proto, cfg(), s, SOURCE) for s in range(3)]
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            for key, host, pid in (
                (keys[0], store.host, dead.pid),
                (keys[1], store.host, alive.pid),
                (keys[2], "elsewhere", dead.pid),  # another host's pid says nothing here
            ):
                store.db.execute(
                    "INSERT INTO claims VALUES (?,?,?,?,?,?,?,?,'then')",
                    (*key.columns().values(), host, pid),
                )
            assert [store.claim(k) for k in keys] == [True, False, False]
        finally:
            alive.kill()
            alive.wait()
        # A run its killed process left 'running' is marked so by the next writer.
        store.db.execute(
            "INSERT INTO runs(kind, args, host, pid, started) VALUES ('finetune', '{}', ?, ?, 't')",
            (store.host, dead.pid),
        )
    with AccuracyStore(tmp_path / "a.db") as store:
        assert [r["status"] for r in store.runs()] == ["interrupted"]


# -- refusals: one line, the file byte for byte as it was -----------------------------------
def make_accuracy_store(path: Path) -> None:
    with AccuracyStore(path) as store:
        task, proto = setup(store, path.parent.parent / "task")
        for i in range(200):
            key = FinetuneKey(task, proto, cfg(64 + i), 0, SOURCE)
            ok(store, key, 0.5, metrics={"pad": "x" * 300})
    assert not Path(f"{path}-wal").exists()


def make_latency_store(path: Path) -> None:
    with LatencyStore(path) as store:
        store.add_profile("p", {"name": "p"}, "h1")
        store.add_measurement(
            "h1", cfg(), "tiny", MeasurementResult.from_dict({"status": "ok", "median_ms": 1.0})
        )


def old_latency_store(path: Path) -> None:
    """A latency store made before stores recorded their kind: told by its tables."""
    make_latency_store(path)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'store'")
    db.commit()
    db.close()


def truncated(path: Path) -> None:
    make_accuracy_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 // 4096 * 4096])


def of_schema(version: str):
    def make(path: Path) -> None:
        make_accuracy_store(path)
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        db.commit()
        db.close()

    return make


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


REFUSED = [
    ("not-sqlite", AccuracyStore, lambda p: p.write_text("sentence\tlabel\n" * 50), {},
     "not a bfnas accuracy store (not an SQLite file)"),
    ("truncated", AccuracyStore, truncated, {}, "damaged (truncated: "),
    ("latency-as-accuracy", AccuracyStore, make_latency_store, {},
     "a bfnas latency store, not an accuracy store"),
    ("old-latency-as-accuracy", AccuracyStore, old_latency_store, {"read_only": True},
     "a bfnas latency store, not an accuracy store"),
    ("accuracy-as-latency", LatencyStore, make_accuracy_store, {},
     "a bfnas accuracy store, not a latency store"),
    ("schema-99", AccuracyStore, of_schema("99"), {},
     "schema_version: store has schema '99', this bfnas reads 1"),
    ("schema-99-read", AccuracyStore, of_schema("99"), {"read_only": True},
     "schema_version: store has schema '99'"),
    ("empty-read", AccuracyStore, lambda p: p.write_bytes(b""), {"read_only": True},
     "an empty file, not a bfnas accuracy store (fine-tune into it to make one)"),
    ("missing-read", AccuracyStore, None, {"read_only": True}, "no such store"),
    ("missing-no-create", AccuracyStore, None, {"create": False}, "no such store"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "make", "kwargs", "needle"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_a_bad_store_is_one_line_and_stays_as_it_was(tmp_path, cls, make, kwargs, needle):
    folder = tmp_path / "s"
    folder.mkdir()
    path = folder / "accuracy.db"
    if make is not None:
        make(path)
    before = digest(folder)
    with pytest.raises(InputError) as info:
        cls(path, **kwargs)
    line = str(info.value)
    assert line.startswith(f"{path}: ") and needle in line and "\n" not in line, line
    assert digest(folder) == before  # the same bytes; no -wal, -shm or new file beside it
    if not kwargs:  # what a writing command calls before its work: the same refusal
        with pytest.raises(InputError) as info:
            cls.check(path)
        assert str(info.value) == line
        assert digest(folder) == before
