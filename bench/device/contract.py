"""The measurement contract between a host and its devices: the version of the result a
worker reports, the statuses a measurement can have, and why one is not trusted, as codes.

A worker (the Python one here, or a native harness's output parsed on the host) reports one
JSON object: `contract` (this version), `status`, and for a failure `reason`; a successful
one its statistics, samples, environment and resources. The host judges it
(`bench.jobs.measurement`): each reason it does not trust a run is a `DistrustReason`, a code
and the numbers behind it, stored as both, so a report counts reasons by code and never by
parsing text. It lives in the device package because both sides import it (a device without
bfnas has its own copy, shipped by the host: the version says whether they agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

# The version of what a worker reports; a host refuses a result of another version.
CONTRACT_VERSION = 1


class Status(str, Enum):
    """A measurement's verdict. A str: stored and compared as its value ("ok")."""

    OK = "ok"
    UNSTABLE = "unstable"  # measured, and its own numbers say it cannot be trusted
    FAILED = "failed"  # no number: the model did not load or run, the worker died
    IMPORTED = "imported"  # a latency measured elsewhere, read from a table


class Distrust(str, Enum):
    """Why a successful run is not trusted, as a code; `label` is its fixed text."""

    STARVED = "starved"
    WIDE_RATIO_CI = "wide-ratio-ci"
    WIDE_MEDIAN_CI = "wide-median-ci"
    NOISY_ANCHOR = "noisy-anchor"
    DRIFTED = "drifted"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Distrust.STARVED: "worker starved of CPU",
    Distrust.WIDE_RATIO_CI: "paired-ratio CI too wide",
    Distrust.WIDE_MEDIAN_CI: "median CI too wide",
    Distrust.NOISY_ANCHOR: "anchor too noisy",
    Distrust.DRIFTED: "drift reference moved",
}


@dataclass(frozen=True)
class DistrustReason:
    """One reason not to trust a run: its code and the numbers that decided it."""

    code: Distrust
    detail: str

    def text(self) -> str:
        return f"{self.code.label}: {self.detail}"

    def to_dict(self) -> dict:
        return {"code": self.code.value, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> DistrustReason:
        return cls(Distrust(data["code"]), str(data.get("detail", "")))


@dataclass(frozen=True)
class MeasurementJob:
    """What a worker is asked to measure: a model file (checked against its sha256 when one
    is given) under a resolved profile (every setting filled in by the host), optionally
    beside an anchor model timed right before each of its runs. On the wire:
    `{"model", "sha256", "profile", "anchor": {"model", "sha256"}}`."""

    model: str
    profile: dict[str, Any]
    sha256: str | None = None
    anchor_model: str | None = None
    anchor_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "sha256": self.sha256, "profile": self.profile}
        if self.anchor_model is not None:
            out["anchor"] = {"model": self.anchor_model, "sha256": self.anchor_sha256}
        return out

    @classmethod
    def from_dict(cls, data: Any) -> MeasurementJob:
        """A job from its JSON object; ValueError naming the field that is missing or of the
        wrong kind."""
        if not isinstance(data, dict):
            raise ValueError("a job is a JSON object")
        anchor = data.get("anchor") or {}
        for where, value, kind in (
            ("model", data.get("model"), str),
            ("profile", data.get("profile"), dict),
            ("sha256", data.get("sha256", ""), (str, type(None))),
            ("anchor", anchor, dict),
            # An anchor, when there is one, names its model.
            (
                "anchor.model",
                anchor.get("model") if anchor and isinstance(anchor, dict) else "",
                str,
            ),
        ):
            if not isinstance(value, kind):
                raise ValueError(f"job field {where}: missing or of the wrong kind")
        return cls(
            model=data["model"],
            profile=data["profile"],
            sha256=data.get("sha256"),
            anchor_model=anchor.get("model"),
            anchor_sha256=anchor.get("sha256"),
        )


@dataclass
class MeasurementResult:
    """One measurement as every harness reports it and every runner returns it.

    On the wire (a worker's JSON line, a Ray actor's answer) it is the flat object
    `to_dict` writes, with `contract` and `status` always present and a field left out where
    it is None; `from_dict` reads it back, keeping what it does not know in `extra` (a
    harness's own figures, such as onnxruntime_perf_test's P99.9). The host fills in what
    only it knows: which anchor the ratio is to, the attempts and device time it took, the
    reasons not to trust it, where it ran."""

    status: Status
    # Why it failed or was not trusted (for people; the codes are in `distrust`).
    reason: str | None = None
    # Statistics of the timed runs in ms (`bench.device.stats.summarize`).
    runs: int | None = None
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cov: float | None = None
    min_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    outliers: int | None = None
    median_rel_ci: float | None = None
    samples_ms: list[float] | None = None
    # How the runs were taken: the first run, the session's creation, warm-up, stopping.
    first_ms: float | None = None
    session_ms: float | None = None
    warmup_runs: int | None = None
    stop_reason: str | None = None
    timed_seconds: float | None = None
    # Paired with an anchor timed right before each run: the median per-pair ratio, its
    # CI and spread, the anchor's own statistics and samples, and which anchor (the host's).
    ratio: float | None = None
    ratio_rel_ci: float | None = None
    ratio_cov: float | None = None
    anchor: dict[str, Any] | None = None
    anchor_samples_ms: list[float] | None = None
    anchor_key: str | None = None
    # What ran it and where: the provider that really ran, its threads, the CPU the timing
    # loop and other processes used, the machine, the backend's details.
    provider: str | None = None
    threads: int | None = None
    cpu: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    pid: int | None = None
    device: dict[str, Any] | None = None
    device_code: str | None = None
    harness: dict[str, Any] | None = None
    # Resources: peak resident memory (`bench.device.memory`) and the model file's bytes.
    memory: dict[str, Any] | None = None
    model_bytes: int | None = None
    # The host's record of it: tries, seconds of device time, reasons not to trust it.
    attempts: int | None = None
    device_s: float | None = None
    distrust: list[DistrustReason] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    contract: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of the wire and the store; None fields left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if f.name == "status":
                value = value.value
            elif f.name == "distrust":
                value = [r.to_dict() for r in value] or None
            if value is not None:
                out[f.name] = value
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasurementResult:
        """A result from its flat object (ValueError for an unknown status or reason code)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["distrust"] = [DistrustReason.from_dict(r) for r in data.get("distrust") or []]
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(extra=extra, **kwargs)


def failed(reason: str) -> MeasurementResult:
    """A failed result: what a worker reports when it has no number."""
    return MeasurementResult(Status.FAILED, reason=reason)


def contract_problem(result: dict) -> str | None:
    """Why a reported result cannot be read under this contract, or None."""
    version = result.get("contract")
    if version != CONTRACT_VERSION:
        return (
            f"the device reported measurement contract {version!r}, this bfnas reads "
            f"{CONTRACT_VERSION}: run the same bfnas on both sides"
        )
    if result.get("status") not in {s.value for s in Status}:
        return f"the device reported an unknown status {result.get('status')!r}"
    return None
