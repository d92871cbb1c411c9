"""`LatencyRow`: one stored measurement as the latency store reads it back.

What a runner returned (`bench.device.contract.MeasurementResult`) goes into the store as
columns and JSON; it comes back typed: its subnet as a `SubnetConfig`, its status as a
`Status`, its samples, environment and artifact decoded, and the two figures only the store
can give: the anchor's usual time on that profile (`anchor_baseline_ms`) and with it the
anchor-normalized latency (`normalized_ms`, computed in `latency_store.normalized_ms`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from bfnas.bench.device.contract import Status
from bfnas.models.space.subnet import SubnetConfig

# The statistics columns of the measurements table, in its order.
STAT_COLUMNS = (
    "median_ms",
    "mean_ms",
    "std_ms",
    "cov",
    "min_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "runs",
    "outliers",
    "median_rel_ci",
    "first_ms",
    "ratio",
    "ratio_rel_ci",
    "anchor_ms",
    "anchor_key",
)


@dataclass(frozen=True)
class LatencyRow:
    """A stored measurement of one subnet under one profile, with its provenance."""

    id: int
    profile_hash: str
    profile: str  # the profile's name
    subnet_key: str
    arch: SubnetConfig
    space: str
    role: str  # sample | reference | verify | superseded | bench | ticket
    status: Status
    run_id: int | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cov: float | None = None
    min_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    runs: int | None = None
    outliers: int | None = None
    median_rel_ci: float | None = None
    first_ms: float | None = None
    ratio: float | None = None
    ratio_rel_ci: float | None = None
    anchor_ms: float | None = None
    anchor_key: str | None = None
    reference_ms: float | None = None
    samples_ms: list[float] | None = None
    environment: dict[str, Any] | None = None
    artifact: dict[str, Any] | None = None
    reason: str | None = None
    attempts: int = 1
    created: str = ""
    # Everything else the harness and runner reported (memory, model bytes, the device, the
    # distrust codes, the CPU other processes used, device seconds), as stored.
    extra: dict[str, Any] = field(default_factory=dict)
    # The anchor's usual time on this profile (the unit of `normalized_ms`), and the latency
    # at the device's typical speed; None without a paired anchor.
    anchor_baseline_ms: float | None = None
    normalized_ms: float | None = None

    @classmethod
    def from_sqlite(
        cls, r: sqlite3.Row, anchor_baseline_ms: float | None, normalized_ms: float | None
    ) -> LatencyRow:
        """A row of `LatencyStore.measurements`' query (the measurements table joined with
        its profile's name and its subnet)."""

        def decoded(column: str) -> Any:
            return json.loads(r[column]) if r[column] else None

        return cls(
            id=r["id"],
            run_id=r["run_id"],
            profile_hash=r["profile_hash"],
            profile=r["profile"],
            subnet_key=r["subnet_key"],
            arch=SubnetConfig.from_json(r["arch"]),
            space=r["space"],
            role=r["role"],
            status=Status(r["status"]),
            **{k: r[k] for k in STAT_COLUMNS},
            reference_ms=r["reference_ms"],
            samples_ms=decoded("samples"),
            environment=decoded("environment"),
            artifact=decoded("artifact"),
            reason=r["reason"],
            attempts=r["attempts"],
            created=r["created"],
            extra=decoded("stats") or {},
            anchor_baseline_ms=anchor_baseline_ms,
            normalized_ms=normalized_ms,
        )

    @property
    def other_cores(self) -> float | None:
        """What other processes used while it was measured: reported beside it, never a
        verdict (None where not recorded)."""
        cpu = self.extra.get("cpu")
        return cpu.get("other_cores") if isinstance(cpu, dict) else None

    @property
    def device_s(self) -> float | None:
        """Seconds the device spent on it, every attempt (None: imported, or stored before
        bfnas recorded it)."""
        return self.extra.get("device_s")

    def latency(self, unit: str) -> float | None:
        """Its latency in `unit`: "median_ms" (raw) or "normalized_ms" (`LATENCY_UNITS`)."""
        return {"median_ms": self.median_ms, "normalized_ms": self.normalized_ms}[unit]
