"""`LatencyStore`: every measurement, with its provenance, in one SQLite file (WAL).

Tables: profiles (resolved profile JSON + hash), subnets (key, canonical JSON, space), runs
(one profiling job each), measurements (statistics, raw samples, environment, status), and
claims (which process is measuring what right now). A measurement is committed as soon as it
completes; a subnet is claimed before it is measured, so two processes profiling into one
store neither duplicate nor lose work, and a claim left by a killed process is taken over.

The file is guarded as every bfnas store is (`sqlite_file.SqliteStore`): a file that is not
SQLite, a damaged store, an SQLite file bfnas did not make, an accuracy store and a store of
another schema version are each one line (`InputError`) and stay byte for byte as they were;
only a writing open makes a store; `read_only=True` (`db summary`, `db export`, `predictor`,
`report`) refuses a missing or empty file and never writes; an SQLite error is one line (a
full disk is `disk_full` with the transaction rolled back, so a rerun resumes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
from collections.abc import Iterable
from typing import Any

from bfnas.bench.device.contract import DistrustReason, MeasurementResult
from bfnas.bench.store import sqlite_file
from bfnas.bench.store.latency_row import STAT_COLUMNS, LatencyRow
from bfnas.bench.store.sqlite_file import SqliteStore, guarded, now
from bfnas.models.space.subnet import SubnetConfig

__all__ = ["LATENCY_UNITS", "STAT_COLUMNS", "LatencyRow", "LatencyStore", "now"]

SCHEMA_VERSION = 2

# Every latency a user sees says which it is (columns, JSON `unit` fields, report axes).
LATENCY_UNITS = {
    "median_ms": "raw median ms on the device",
    "normalized_ms": "anchor-normalized ms",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    imported INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subnets (
    key TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    space TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_hash TEXT NOT NULL REFERENCES profiles(hash),
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id),
    profile_hash TEXT NOT NULL REFERENCES profiles(hash),
    subnet_key TEXT NOT NULL REFERENCES subnets(key),
    role TEXT NOT NULL DEFAULT 'sample',
    status TEXT NOT NULL,
    median_ms REAL, mean_ms REAL, std_ms REAL, cov REAL, min_ms REAL,
    p90_ms REAL, p95_ms REAL, p99_ms REAL, runs INTEGER, outliers INTEGER,
    median_rel_ci REAL, first_ms REAL,
    ratio REAL, ratio_rel_ci REAL, anchor_ms REAL, anchor_key TEXT,
    reference_ms REAL,
    samples TEXT,
    stats TEXT,
    environment TEXT,
    artifact TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);
-- One sample measurement per (profile, subnet): the database itself refuses duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS one_sample
    ON measurements(profile_hash, subnet_key) WHERE role = 'sample';
CREATE INDEX IF NOT EXISTS by_profile ON measurements(profile_hash, status);
CREATE TABLE IF NOT EXISTS claims (
    profile_hash TEXT NOT NULL,
    subnet_key TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (profile_hash, subnet_key)
);
"""

TABLES = ("meta", "profiles", "subnets", "runs", "measurements", "claims")
# This module's own setting (a test shortens it): see `LatencyStore.busy_timeout_s`.
BUSY_TIMEOUT_S = sqlite_file.BUSY_TIMEOUT_S


def normalized_ms(ratio: float | None, anchor_baseline_ms: float | None) -> float | None:
    """The one place a latency is anchor-normalized: the paired ratio to the anchor times the
    anchor's usual time in the store (`LatencyStore.anchor_baselines`), i.e. the latency at
    the device's typical speed; None without either."""
    if ratio is None or not anchor_baseline_ms:
        return None
    return ratio * anchor_baseline_ms


class LatencyStore(SqliteStore):
    """The latency store at `path`.

    By default it is opened for writing (`profile`, `import`, `bench`): a missing or 0-byte
    file becomes a new store (`create=False`: refused instead), and runs left `running` by
    processes of this host that are gone are marked `interrupted`. `read_only=True` opens an
    existing store without writing anything to it (`db summary`, `db export`, `predictor`,
    `report`). The file is guarded as every store is (`sqlite_file.SqliteStore`).
    """

    KIND = "latency store"
    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    TABLES = TABLES
    MAKE_HINT = "profile or import into it to make one"
    ANOTHER = "give another latency store"

    def busy_timeout_s(self) -> float:
        return BUSY_TIMEOUT_S

    # -- profiles and subnets -----------------------------------------------------------
    @guarded
    def add_profile(
        self, name: str, resolved: dict, profile_hash: str, imported: bool = False
    ) -> str:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO profiles(hash, name, json, imported, created) VALUES "
                "(?,?,?,?,?)",
                (profile_hash, name, json.dumps(resolved, sort_keys=True), int(imported), now()),
            )
        return profile_hash

    @guarded
    def profiles(self) -> list[dict]:
        rows = self.db.execute("SELECT hash, name, imported, json FROM profiles ORDER BY name")
        return [dict(r) for r in rows]

    def _add_subnet(self, db: sqlite3.Connection, cfg: SubnetConfig, space: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO subnets(key, json, space) VALUES (?,?,?)",
            (cfg.key(), cfg.to_json(), space),
        )

    # -- runs ---------------------------------------------------------------------------
    @guarded
    def start_run(
        self, profile_hash: str, kind: str, args: dict, started: str | None = None
    ) -> int:
        """A run's row; `started` (a `now()` string) when the work began before the row
        was written (a search writes it once it has something to record)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs(profile_hash, kind, args, host, pid, started) VALUES "
                "(?,?,?,?,?,?)",
                (
                    profile_hash,
                    kind,
                    json.dumps(args, sort_keys=True),
                    self.host,
                    os.getpid(),
                    started or now(),
                ),
            )
        return int(cur.lastrowid)

    @guarded
    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (now(), status, json.dumps(summary, sort_keys=True), run_id),
            )

    # -- claims -------------------------------------------------------------------------
    @guarded
    def claim(self, profile_hash: str, cfg: SubnetConfig, retry: tuple[str, ...] = ()) -> bool:
        """Take the right to measure `cfg` for this profile. False when it is measured
        already (with a status not in `retry`) or another live process holds it."""
        key = cfg.key()
        with self.transaction() as db:
            done = db.execute(
                "SELECT status FROM measurements WHERE profile_hash = ? AND subnet_key = ? "
                "AND role = 'sample'",
                (profile_hash, key),
            ).fetchone()
            if done and done["status"] not in retry:
                return False
            return self._take_claim(db, {"profile_hash": profile_hash, "subnet_key": key})

    @guarded
    def release(self, profile_hash: str, cfg: SubnetConfig) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM claims WHERE profile_hash = ? AND subnet_key = ? AND pid = ?",
                (profile_hash, cfg.key(), os.getpid()),
            )

    # -- measurements -------------------------------------------------------------------
    @guarded
    def add_measurement(
        self,
        profile_hash: str,
        cfg: SubnetConfig,
        space: str,
        result: MeasurementResult,
        run_id: int | None = None,
        role: str = "sample",
        artifact: dict | None = None,
        reference_ms: float | None = None,
        supersede: bool = False,
    ) -> int:
        """Store one result and drop the claim on it, in one transaction. With `supersede`,
        an earlier sample of the same subnet is kept with role 'superseded' (a retried
        unstable or failed measurement stays on record)."""
        flat = result.to_dict()
        stats = {k: flat.get(k) for k in STAT_COLUMNS}
        if result.anchor:
            stats["anchor_ms"] = result.anchor["median_ms"]
        # Everything else it reported (memory, the device, distrust codes...), as JSON.
        extra = {
            k: v
            for k, v in flat.items()
            if k not in STAT_COLUMNS
            and k not in ("samples_ms", "environment", "status", "reason", "attempts")
        }
        with self.transaction() as db:
            self._add_subnet(db, cfg, space)
            if supersede and role == "sample":
                db.execute(
                    "UPDATE measurements SET role = 'superseded' WHERE profile_hash = ? "
                    "AND subnet_key = ? AND role = 'sample'",
                    (profile_hash, cfg.key()),
                )
            cur = db.execute(
                f"INSERT INTO measurements(run_id, profile_hash, subnet_key, role, status, "
                f"{', '.join(STAT_COLUMNS)}, reference_ms, samples, stats, environment, artifact, "
                f"reason, attempts, created) VALUES ({', '.join('?' * (len(STAT_COLUMNS) + 13))})",
                (
                    run_id,
                    profile_hash,
                    cfg.key(),
                    role,
                    result.status.value,
                    *stats.values(),
                    reference_ms,
                    json.dumps(result.samples_ms) if result.samples_ms is not None else None,
                    json.dumps(extra, sort_keys=True),
                    json.dumps(result.environment, sort_keys=True) if result.environment else None,
                    json.dumps(artifact, sort_keys=True) if artifact else None,
                    result.reason,
                    result.attempts or 1,
                    now(),
                ),
            )
            if role == "sample":
                db.execute(
                    "DELETE FROM claims WHERE profile_hash = ? AND subnet_key = ?",
                    (profile_hash, cfg.key()),
                )
        return int(cur.lastrowid)

    @guarded
    def mark_unstable(self, ids: list[int], reason: DistrustReason) -> int:
        """Mark trusted measurements unstable after the fact (a drift put them in doubt);
        returns how many were marked. Their numbers stay as they were; the reason is kept
        as its text and, beside the other statistics, as its code."""
        if not ids:
            return 0
        coded = json.dumps([reason.to_dict()])
        with self.transaction() as db:
            cur = db.executemany(
                "UPDATE measurements SET status = 'unstable', reason = ?, "
                "stats = json_set(COALESCE(stats, '{}'), '$.distrust', json(?)) "
                "WHERE id = ? AND status = 'ok'",
                [(reason.text(), coded, i) for i in ids],
            )
        return cur.rowcount

    @guarded
    def add_imported(
        self, profile_hash: str, space: str, rows: Iterable[tuple[SubnetConfig, dict]]
    ) -> tuple[int, int]:
        """Insert many imported measurements in one transaction: all or nothing.
        Returns (added, already present)."""
        added = skipped = 0
        with self.transaction() as db:
            for cfg, result in rows:
                self._add_subnet(db, cfg, space)
                cur = db.execute(
                    "INSERT OR IGNORE INTO measurements(profile_hash, subnet_key, role, status, "
                    "median_ms, mean_ms, runs, stats, reason, created) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?)",
                    (
                        profile_hash,
                        cfg.key(),
                        "sample",
                        result["status"],
                        result["median_ms"],
                        result.get("mean_ms"),
                        result.get("runs"),
                        json.dumps(result.get("stats", {}), sort_keys=True),
                        result.get("reason"),
                        now(),
                    ),
                )
                if cur.rowcount:
                    added += 1
                else:
                    skipped += 1
        return added, skipped

    @guarded
    def measured_keys(self, profile_hash: str, exclude: tuple[str, ...] = ()) -> set[str]:
        """Keys of the subnets measured for this profile, except those whose status is in
        `exclude` (what a job asked to measure again)."""
        rows = self.db.execute(
            "SELECT subnet_key, status FROM measurements WHERE profile_hash = ? AND role = "
            "'sample'",
            (profile_hash,),
        )
        return {r["subnet_key"] for r in rows if r["status"] not in exclude}

    @guarded
    def measurements(
        self,
        profile_hash: str | None = None,
        role: str = "sample",
        statuses: tuple[str, ...] = ("ok", "unstable", "imported", "failed"),
    ) -> list[LatencyRow]:
        """The stored measurements of one role (one profile's with `profile_hash`) whose
        status is in `statuses`, oldest first, typed, each with its normalized latency."""
        sql = (
            "SELECT m.*, p.name AS profile, s.json AS arch, s.space AS space FROM measurements m "
            "JOIN profiles p ON p.hash = m.profile_hash JOIN subnets s ON s.key = m.subnet_key "
            f"WHERE m.role = ? AND m.status IN ({', '.join('?' * len(statuses))})"
        )
        params: list[Any] = [role, *statuses]
        if profile_hash:
            sql += " AND m.profile_hash = ?"
            params.append(profile_hash)
        baseline = self.anchor_baselines()
        rows = []
        for r in self.db.execute(sql + " ORDER BY m.id", params):
            base = baseline.get((r["profile_hash"], r["anchor_key"]))
            rows.append(LatencyRow.from_sqlite(r, base, normalized_ms(r["ratio"], base)))
        return rows

    def normalized_of(self, profile_hash: str, result: MeasurementResult) -> float | None:
        """A measurement's anchor-normalized latency in this store (None without a ratio or
        an anchor baseline): what a search verifying a subnet compares with its budget."""
        base = self.anchor_baselines().get((profile_hash, result.anchor_key))
        return normalized_ms(result.ratio, base)

    @guarded
    def anchor_baselines(self) -> dict[tuple[str, str], float]:
        """Per profile and anchor, the median of every stored median of that anchor: its
        latency at the device's typical speed.

        A measurement's `normalized_ms` is its ratio to the anchor run beside it times this
        baseline: its latency at the device's typical speed, free of the speed swings that
        happened while it was measured. It moves only as the baseline gains data."""
        out: dict[tuple[str, str], list[float]] = {}
        for r in self.db.execute(
            "SELECT profile_hash, anchor_key, anchor_ms FROM measurements "
            "WHERE anchor_ms IS NOT NULL AND status IN ('ok', 'unstable')"
        ):
            out.setdefault((r["profile_hash"], r["anchor_key"]), []).append(r["anchor_ms"])
        return {k: float(statistics.median(v)) for k, v in out.items()}

    @guarded
    def counts(self) -> dict[str, Any]:
        """How much the store holds: per profile hash, its measurements by role and status
        (`{"h": {"sample": {"ok": 60, "failed": 1}, "reference": {"ok": 3}}}`), and how many
        subnets and runs in all."""
        by_profile: dict[str, dict[str, dict[str, int]]] = {}
        for r in self.db.execute(
            "SELECT profile_hash, role, status, COUNT(*) AS n FROM measurements "
            "GROUP BY profile_hash, role, status"
        ):
            roles = by_profile.setdefault(r["profile_hash"], {})
            roles.setdefault(r["role"], {})[r["status"]] = r["n"]
        runs = self.db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"]
        subnets = self.db.execute("SELECT COUNT(*) AS n FROM subnets").fetchone()["n"]
        return {"by_profile": by_profile, "subnets": subnets, "runs": runs}

    @guarded
    def runs(self, kind: str, profile_hash: str | None = None) -> list[dict]:
        """Every run of one kind (`search`, `profile`, ...), oldest first, with its profile's
        name; only one profile's with `profile_hash`."""
        sql = (
            "SELECT r.*, p.name AS profile FROM runs r JOIN profiles p ON p.hash = "
            "r.profile_hash WHERE r.kind = ?"
        )
        params = [kind]
        if profile_hash is not None:
            sql += " AND r.profile_hash = ?"
            params.append(profile_hash)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY r.id", params)]
