"""What a latency store holds, for people and spreadsheets: its summary per profile (`bfnas db
summary`, the report's first lines) and every measurement as CSV (`bfnas db export`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bfnas.bench.store.latency_row import STAT_COLUMNS
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.models.outputs import atomic_path

# The CSV's columns: identity, the subnet's dimensions, status, the statistics, provenance.
CSV_FIELDS = (
    "profile",
    "profile_hash",
    "subnet_key",
    "space",
    "layers",
    "hidden",
    "heads",
    "qkv",
    "ffn",
    "status",
    *STAT_COLUMNS,
    "normalized_ms",
    "other_cores",
    "reference_ms",
    "attempts",
    "reason",
    "created",
    "arch",
)


def store_summary(store: LatencyStore) -> dict[str, Any]:
    """Per profile: its sample measurements by status and its drift references; and the
    store's subnets and runs."""
    counts = store.counts()
    profiles = []
    for p in store.profiles():
        roles = counts["by_profile"].get(p["hash"], {})
        by_status = roles.get("sample", {})
        profiles.append(
            {
                "profile": p["name"],
                "hash": p["hash"],
                "imported": bool(p["imported"]),
                "measurements": sum(by_status.values()),
                "by_status": by_status,
                "reference_measurements": sum(roles.get("reference", {}).values()),
            }
        )
    return {
        "db": str(store.path),
        "profiles": profiles,
        "subnets": counts["subnets"],
        "runs": counts["runs"],
    }


def export_csv(store: LatencyStore, path: Path) -> int:
    """Every sample measurement as one CSV row (lists space-separated, the subnet's JSON in
    `arch`), written whole or not at all; returns the rows written."""
    rows = store.measurements()
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "profile": r.profile,
                    "profile_hash": r.profile_hash,
                    "subnet_key": r.subnet_key,
                    "space": r.space,
                    **r.arch.csv_columns(),
                    "status": r.status.value,
                    **{k: getattr(r, k) for k in STAT_COLUMNS},
                    "normalized_ms": r.normalized_ms,
                    "other_cores": r.other_cores,
                    "reference_ms": r.reference_ms,
                    "attempts": r.attempts,
                    "reason": r.reason,
                    "created": r.created,
                    "arch": r.arch.to_json(),
                }
            )
    return len(rows)
