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

from dataclasses import dataclass
from enum import Enum

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


def failed(reason: str) -> dict:
    """A failed result: what a worker reports when it has no number."""
    return {"contract": CONTRACT_VERSION, "status": Status.FAILED.value, "reason": reason}


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
