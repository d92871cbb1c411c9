"""`AccuracyStore`: every fine-tune result, with its provenance, in one SQLite file (WAL).

A fine-tune costs minutes to hours of training, so it is stored as a latency is: committed as
it completes, claimed before it starts (two processes fine-tuning into one store neither
duplicate nor lose work; a claim left by a killed process is taken over), and a rerun skips
what is stored. The file is guarded as every bfnas store is (`sqlite_file.SqliteStore`): a
file that is not SQLite, a damaged store, a latency store and a store of another schema
version are each one line and stay byte for byte as they were.

What identifies a fine-tune (the database refuses a second one):

- the task: the sha256 of its train and dev files' bytes (`task_sha256`), not its folder, so a
  moved or copied task is the same task and an edited one is another;
- the protocol: the hash of its settings (epochs, learning rate, batch, max_len, distillation,
  ...; everything but the seed), whatever name it was given;
- the subnet's key;
- the seed;
- the starting weights: the sha256 of the supernet weights the subnet was extracted from, and
  of a teacher given from outside when it is distilled (`WeightsSource`). A subnet
  fine-tuned from another supernet (another training run, another checkpoint of one) is
  another measurement.

Paths, times, threads and the environment are provenance, stored beside it. A failed
fine-tune is stored too (status 'failed' and its reason) so it is not retried unasked; it
counts in no statistic.

Tables: meta, protocols, tasks, subnets, runs (one job each), finetunes, claims.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sqlite3
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bfnas.bench.store.sqlite_file import SqliteStore, guarded, now
from bfnas.errors import InputError
from bfnas.models.digest import file_sha256, json_digest
from bfnas.models.outputs import atomic_path
from bfnas.models.space.subnet import SubnetConfig

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS protocols (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    sha256 TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    label_names TEXT NOT NULL,
    train_examples INTEGER NOT NULL,
    dev_examples INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subnets (
    key TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    space TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE TABLE IF NOT EXISTS finetunes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    task_sha256 TEXT NOT NULL REFERENCES tasks(sha256),
    protocol_hash TEXT NOT NULL REFERENCES protocols(hash),
    subnet_key TEXT NOT NULL REFERENCES subnets(key),
    seed INTEGER NOT NULL,
    weights_sha256 TEXT NOT NULL,
    -- '' when nothing was distilled: NULLs would be distinct to the unique index below.
    teacher_sha256 TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    accuracy REAL CHECK (status = 'failed' OR accuracy IS NOT NULL),
    metrics TEXT,
    train_seconds REAL,
    eval_seconds REAL,
    threads INTEGER,
    environment TEXT,
    source TEXT NOT NULL,
    reason TEXT,
    superseded INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
-- One current fine-tune per identity: the database itself refuses a second. A retried one
-- keeps the earlier row, superseded.
CREATE UNIQUE INDEX IF NOT EXISTS one_finetune ON finetunes(
    task_sha256, protocol_hash, subnet_key, seed, weights_sha256, teacher_sha256
) WHERE superseded = 0;
CREATE INDEX IF NOT EXISTS by_task_protocol ON finetunes(task_sha256, protocol_hash, status);
CREATE TABLE IF NOT EXISTS claims (
    task_sha256 TEXT NOT NULL,
    protocol_hash TEXT NOT NULL,
    subnet_key TEXT NOT NULL,
    seed INTEGER NOT NULL,
    weights_sha256 TEXT NOT NULL,
    teacher_sha256 TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (task_sha256, protocol_hash, subnet_key, seed, weights_sha256, teacher_sha256)
);
"""

TABLES = ("meta", "protocols", "tasks", "subnets", "runs", "finetunes", "claims")
IDENTITY = (
    "task_sha256",
    "protocol_hash",
    "subnet_key",
    "seed",
    "weights_sha256",
    "teacher_sha256",
)


def task_sha256(train: str | Path, dev: str | Path) -> str:
    """A task's identity: the sha256 of its train and dev split files' bytes (the files the
    task reader read: `GlueTask.train.path` and `.dev.path`, which is MNLI's
    dev_matched.tsv). Where the folder lies and what the files are called do not enter it;
    which file is train and which dev does."""
    digests = []
    for role, path in (("train", train), ("dev", dev)):
        try:
            digests.append(f"{role} {file_sha256(path)}\n")
        except OSError as exc:
            raise InputError(str(path), None, f"cannot read ({exc.strerror or exc})") from None
    return hashlib.sha256("".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class WeightsSource:
    """Where a fine-tune's starting weights came from. Their bytes (sha256) identify it; the
    paths are provenance (the same file moved is the same start), so they are left out of
    equality."""

    sha256: str  # of the supernet weights the subnet was extracted from
    path: str = field(default="", compare=False)
    # Of a teacher distilled from that the protocol and the supernet do not determine (one
    # given from outside); '' for none, and for a teacher the protocol makes from the
    # supernet (protocols.py's), whose bytes a rerun elsewhere need not reproduce.
    teacher_sha256: str = ""
    teacher_path: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.sha256:
            raise ValueError("a fine-tune's source needs the sha256 of its starting weights")


@dataclass(frozen=True)
class FinetuneKey:
    """What identifies one fine-tune (see the module's docstring)."""

    task_sha256: str
    protocol_hash: str
    subnet: SubnetConfig
    seed: int
    source: WeightsSource

    def columns(self) -> dict[str, Any]:
        """The identity as the `finetunes` and `claims` columns hold it."""
        return {
            "task_sha256": self.task_sha256,
            "protocol_hash": self.protocol_hash,
            "subnet_key": self.subnet.key(),
            "seed": int(self.seed),
            "weights_sha256": self.source.sha256,
            "teacher_sha256": self.source.teacher_sha256,
        }


@dataclass(frozen=True)
class FinetuneRecord:
    """One stored fine-tune. `metrics` holds what the fine-tune reported beyond accuracy
    (macro F1, MCC, per-epoch losses, ...)."""

    id: int
    run_id: int | None
    task_sha256: str
    task_folder: str
    protocol_hash: str
    protocol: str  # its name
    subnet_key: str
    arch: SubnetConfig
    space: str
    seed: int
    source: WeightsSource
    status: str
    accuracy: float | None
    metrics: dict
    train_seconds: float | None
    eval_seconds: float | None
    threads: int | None
    environment: dict
    reason: str | None
    superseded: bool
    created: str

    @property
    def key(self) -> FinetuneKey:
        return FinetuneKey(self.task_sha256, self.protocol_hash, self.arch, self.seed, self.source)


@dataclass(frozen=True)
class SeedStats:
    """Accuracy over the seeds of one (task, protocol, subnet, source): failed fine-tunes
    are counted apart and in neither number."""

    n: int
    mean: float | None
    std: float | None  # sample standard deviation; None under two seeds
    seeds: tuple[int, ...]
    failed: int


def _stats(accuracies: dict[int, float], failed: int) -> SeedStats:
    values = list(accuracies.values())
    return SeedStats(
        n=len(values),
        mean=statistics.fmean(values) if values else None,
        std=statistics.stdev(values) if len(values) > 1 else None,
        seeds=tuple(sorted(accuracies)),
        failed=failed,
    )


def _where(filters: dict[str, Any], prefix: str = "f.") -> tuple[str, list[Any]]:
    """SQL conditions for the filters given (None: any)."""
    given = {k: v for k, v in filters.items() if v is not None}
    return " AND ".join(f"{prefix}{k} = ?" for k in given) or "1", list(given.values())


class AccuracyStore(SqliteStore):
    """The accuracy store at `path` (conventionally `accuracy.db`, beside the latency store).

    By default it is opened for writing: a missing or 0-byte file becomes a new store
    (`create=False`: refused instead), and runs left `running` by processes of this host that
    are gone are marked `interrupted`. `read_only=True` opens an existing store without
    writing anything to it.
    """

    KIND = "accuracy store"
    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    TABLES = TABLES
    MAKE_HINT = "fine-tune into it to make one"
    ANOTHER = "give another accuracy store"

    # -- what a fine-tune refers to -----------------------------------------------------
    @guarded
    def add_protocol(self, name: str, settings: dict) -> str:
        """Record a protocol; returns its hash. The seed is not part of a protocol (it is
        its own column, and the statistics are over it). The same settings under another
        name are the same protocol, stored under the first name."""
        if "seed" in settings:
            raise ValueError("a protocol's settings leave the seed out: it is its own column")
        digest = json_digest(settings)  # as FinetuneProtocol.hash() makes it
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO protocols(hash, name, json, created) VALUES (?,?,?,?)",
                (digest, name, json.dumps(settings, sort_keys=True), now()),
            )
        return digest

    @guarded
    def protocols(self) -> list[dict]:
        rows = self.db.execute("SELECT hash, name, json FROM protocols ORDER BY name, hash")
        return [{**dict(r), "json": json.loads(r["json"])} for r in rows]

    @guarded
    def add_task(
        self,
        sha256: str,
        folder: str | Path,
        label_names: Iterable[str],
        train_examples: int,
        dev_examples: int,
    ) -> str:
        """Record a task (its sha256 from `task_sha256`); returns the sha256. The folder is
        the one it was first read from."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tasks(sha256, folder, label_names, train_examples, "
                "dev_examples, created) VALUES (?,?,?,?,?,?)",
                (
                    sha256,
                    str(folder),
                    json.dumps(list(label_names)),
                    int(train_examples),
                    int(dev_examples),
                    now(),
                ),
            )
        return sha256

    @guarded
    def tasks(self) -> list[dict]:
        rows = self.db.execute("SELECT * FROM tasks ORDER BY folder, sha256")
        return [{**dict(r), "label_names": json.loads(r["label_names"])} for r in rows]

    # -- runs ---------------------------------------------------------------------------
    @guarded
    def start_run(self, kind: str, args: dict, started: str | None = None) -> int:
        """A run's row (one fine-tuning job); `started` (a `now()` string) when the work
        began before the row was written."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs(kind, args, host, pid, started) VALUES (?,?,?,?,?)",
                (kind, json.dumps(args, sort_keys=True), self.host, os.getpid(), started or now()),
            )
        return int(cur.lastrowid)

    @guarded
    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (now(), status, json.dumps(summary, sort_keys=True), run_id),
            )

    @guarded
    def runs(self, kind: str | None = None) -> list[dict]:
        sql, params = _where({"kind": kind}, prefix="")
        return [
            dict(r) for r in self.db.execute(f"SELECT * FROM runs WHERE {sql} ORDER BY id", params)
        ]

    # -- claims -------------------------------------------------------------------------
    @guarded
    def claim(self, key: FinetuneKey, retry: tuple[str, ...] = ()) -> bool:
        """Take the right to run this fine-tune. False when it is stored already (with a
        status not in `retry`: `('failed',)` tries failed ones again) or another live
        process holds it."""
        work = key.columns()
        where = " AND ".join(f"{c} = ?" for c in work)
        with self.transaction() as db:
            done = db.execute(
                f"SELECT status FROM finetunes WHERE {where} AND superseded = 0",
                tuple(work.values()),
            ).fetchone()
            if done and done["status"] not in retry:
                return False
            return self._take_claim(db, work)

    @guarded
    def release(self, key: FinetuneKey) -> None:
        """Give up this process's claim without storing a result (an interrupted job)."""
        work = key.columns()
        where = " AND ".join(f"{c} = ?" for c in work)
        with self.transaction() as db:
            db.execute(
                f"DELETE FROM claims WHERE {where} AND pid = ?", (*work.values(), os.getpid())
            )

    # -- fine-tunes ---------------------------------------------------------------------
    @guarded
    def add_finetune(
        self,
        key: FinetuneKey,
        space: str,
        *,
        status: str,
        accuracy: float | None = None,
        metrics: dict | None = None,
        train_seconds: float | None = None,
        eval_seconds: float | None = None,
        threads: int | None = None,
        environment: dict | None = None,
        reason: str | None = None,
        run_id: int | None = None,
        supersede: bool = False,
    ) -> int:
        """Store one fine-tune and drop the claim on it, in one transaction; returns its id.
        `status` 'ok' needs the dev `accuracy` (a fraction); 'failed' needs a `reason`. With
        `supersede`, an earlier fine-tune of the same identity is kept, superseded (a retried
        failure stays on record); without it a second one is refused (`IntegrityError`)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status == "ok" and (
            accuracy is None or not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0
        ):
            raise ValueError(f"an 'ok' fine-tune needs an accuracy in [0, 1], got {accuracy!r}")
        if status == "failed" and not reason:
            raise ValueError("a failed fine-tune needs its reason")
        work = key.columns()
        where = " AND ".join(f"{c} = ?" for c in work)
        with self.transaction() as db:
            for table, column, value in (
                ("tasks", "sha256", key.task_sha256),
                ("protocols", "hash", key.protocol_hash),
            ):
                if not db.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (value,)).fetchone():
                    raise ValueError(f"{table[:-1]} {value} is not in the store: add it first")
            db.execute(
                "INSERT OR IGNORE INTO subnets(key, json, space) VALUES (?,?,?)",
                (key.subnet.key(), key.subnet.to_json(), space),
            )
            if supersede:
                db.execute(
                    f"UPDATE finetunes SET superseded = 1 WHERE {where} AND superseded = 0",
                    tuple(work.values()),
                )
            row = {
                "run_id": run_id,
                **work,
                "status": status,
                "accuracy": None if accuracy is None else float(accuracy),
                "metrics": json.dumps(metrics or {}, sort_keys=True),
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                "threads": threads,
                "environment": json.dumps(environment or {}, sort_keys=True),
                "source": json.dumps(asdict(key.source), sort_keys=True),
                "reason": reason,
                "created": now(),
            }
            cur = db.execute(
                f"INSERT INTO finetunes({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            db.execute(f"DELETE FROM claims WHERE {where}", tuple(work.values()))
        return int(cur.lastrowid)

    @guarded
    def finetunes(
        self,
        task: str | None = None,
        protocol: str | None = None,
        subnet: SubnetConfig | None = None,
        source: WeightsSource | None = None,
        statuses: tuple[str, ...] = STATUSES,
        superseded: bool = False,
    ) -> list[FinetuneRecord]:
        """The stored fine-tunes, oldest first; only those of the task (sha256), protocol
        (hash), subnet and source given; superseded ones too with `superseded`."""
        sql, params = _where(
            {
                "task_sha256": task,
                "protocol_hash": protocol,
                "subnet_key": None if subnet is None else subnet.key(),
                "weights_sha256": None if source is None else source.sha256,
                "teacher_sha256": None if source is None else source.teacher_sha256,
            }
        )
        sql += f" AND f.status IN ({', '.join('?' * len(statuses))})"
        if not superseded:
            sql += " AND f.superseded = 0"
        rows = self.db.execute(
            "SELECT f.*, t.folder AS task_folder, p.name AS protocol, s.json AS arch, "
            "s.space AS space FROM finetunes f JOIN tasks t ON t.sha256 = f.task_sha256 "
            "JOIN protocols p ON p.hash = f.protocol_hash JOIN subnets s ON s.key = f.subnet_key "
            f"WHERE {sql} ORDER BY f.id",
            [*params, *statuses],
        )
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(r: sqlite3.Row) -> FinetuneRecord:
        source = json.loads(r["source"])
        return FinetuneRecord(
            id=r["id"],
            run_id=r["run_id"],
            task_sha256=r["task_sha256"],
            task_folder=r["task_folder"],
            protocol_hash=r["protocol_hash"],
            protocol=r["protocol"],
            subnet_key=r["subnet_key"],
            arch=SubnetConfig.from_json(r["arch"]),
            space=r["space"],
            seed=r["seed"],
            # The identity columns, not the JSON beside them, are what the record is.
            source=WeightsSource(
                sha256=r["weights_sha256"],
                path=source.get("path", ""),
                teacher_sha256=r["teacher_sha256"],
                teacher_path=source.get("teacher_path", ""),
            ),
            status=r["status"],
            accuracy=r["accuracy"],
            metrics=json.loads(r["metrics"]) if r["metrics"] else {},
            train_seconds=r["train_seconds"],
            eval_seconds=r["eval_seconds"],
            threads=r["threads"],
            environment=json.loads(r["environment"]) if r["environment"] else {},
            reason=r["reason"],
            superseded=bool(r["superseded"]),
            created=r["created"],
        )

    @guarded
    def done_keys(
        self,
        task: str | None = None,
        protocol: str | None = None,
        source: WeightsSource | None = None,
        exclude: tuple[str, ...] = (),
    ) -> set[FinetuneKey]:
        """The fine-tunes stored (of the task, protocol and source given), except those whose
        status is in `exclude` (what a job was asked to run again): a rerun skips these."""
        keep = tuple(s for s in STATUSES if s not in exclude)
        if not keep:
            return set()
        return {r.key for r in self.finetunes(task, protocol, None, source, statuses=keep)}

    # -- statistics and reports ---------------------------------------------------------
    @guarded
    def seed_stats(
        self, task: str, protocol: str, subnet: SubnetConfig, source: WeightsSource
    ) -> SeedStats:
        """Accuracy mean and sample std over the seeds of one subnet's fine-tunes."""
        rows = self.finetunes(task, protocol, subnet, source)
        ok = {r.seed: r.accuracy for r in rows if r.status == "ok" and r.accuracy is not None}
        return _stats(ok, sum(r.status == "failed" for r in rows))

    @guarded
    def summary(self) -> dict:
        """Counts per task and protocol, and accuracy over seeds per subnet and source."""
        groups: dict[tuple, dict] = {}
        per_subnet: dict[tuple, tuple[dict[int, float], list[int]]] = {}
        for r in self.finetunes():
            g = groups.setdefault(
                (r.task_sha256, r.protocol_hash),
                {
                    "task": r.task_sha256,
                    "task_folder": r.task_folder,
                    "protocol": r.protocol,
                    "protocol_hash": r.protocol_hash,
                    "finetunes": 0,
                    "by_status": {},
                },
            )
            g["finetunes"] += 1
            g["by_status"][r.status] = g["by_status"].get(r.status, 0) + 1
            ident = (
                r.task_sha256,
                r.protocol_hash,
                r.subnet_key,
                r.source.sha256,
                r.source.teacher_sha256,
            )
            ok, failed = per_subnet.setdefault(ident, ({}, []))
            if r.status == "ok":
                ok[r.seed] = r.accuracy
            else:
                failed.append(r.seed)
        subnets = []
        for (task, protocol, key, weights, teacher), (ok, failed) in per_subnet.items():
            s = _stats(ok, len(failed))
            subnets.append(
                {
                    "task": task,
                    "protocol_hash": protocol,
                    "subnet_key": key,
                    "weights_sha256": weights,
                    "teacher_sha256": teacher,
                    "seeds": s.n,
                    "failed": s.failed,
                    "accuracy_mean": s.mean,
                    "accuracy_std": s.std,
                }
            )
        runs = self.db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"]
        return {
            "db": str(self.path),
            "tasks": len(self.tasks()),
            "protocols": len(self.protocols()),
            "by_task_protocol": list(groups.values()),
            "subnets": subnets,
            "runs": runs,
        }

    @guarded
    def export_csv(self, path: str | Path) -> int:
        """Every current fine-tune as one CSV row (written atomically); returns how many."""
        records = self.finetunes()
        fields = [
            "task_sha256",
            "task_folder",
            "protocol",
            "protocol_hash",
            "subnet_key",
            "space",
            "layers",
            "hidden",
            "heads",
            "qkv",
            "ffn",
            "seed",
            "weights_sha256",
            "teacher_sha256",
            "status",
            "accuracy",
            "train_seconds",
            "eval_seconds",
            "threads",
            "reason",
            "created",
            "metrics",
            "arch",
        ]
        with atomic_path(Path(path)) as tmp, tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in records:
                a = r.arch
                w.writerow(
                    {
                        "task_sha256": r.task_sha256,
                        "task_folder": r.task_folder,
                        "protocol": r.protocol,
                        "protocol_hash": r.protocol_hash,
                        "subnet_key": r.subnet_key,
                        "space": r.space,
                        **a.csv_columns(),
                        "seed": r.seed,
                        "weights_sha256": r.source.sha256,
                        "teacher_sha256": r.source.teacher_sha256,
                        "status": r.status,
                        "accuracy": r.accuracy,
                        "train_seconds": r.train_seconds,
                        "eval_seconds": r.eval_seconds,
                        "threads": r.threads,
                        "reason": r.reason,
                        "created": r.created,
                        "metrics": json.dumps(r.metrics, sort_keys=True),
                        "arch": a.to_json(),
                    }
                )
        return len(records)
