"""The settings of `bfnas profile --until` (`search.until_trusted`), kept light: the command
line takes its defaults from here without loading the predictor."""

from __future__ import annotations

from dataclasses import dataclass, fields

from bfnas.errors import InputError

# How a round's chosen subnets are picked (`search.until_trusted.CHOOSERS`), the default first.
CHOOSER_NAMES = ("design", "disagreement", "coverage", "random")


@dataclass(frozen=True)
class UntilSettings:
    """When to stop and how to choose (`search.until_trusted` says why it works so)."""

    target: float  # the share of predictions within `tolerance` to reach, in (0, 1)
    tolerance: float = 0.05
    confidence: float = 0.95
    first: int = 10  # random subnets measured before the first fit (a fit needs 10)
    # Small rounds: the chooser's picks pay off most in the first few dozen rows.
    round_size: int = 5
    max_subnets: int = 1000  # sample measurements of any status, earlier jobs' included
    max_device_s: float | None = None
    choose: str = CHOOSER_NAMES[0]
    # The share of a round drawn at random (what the estimate uses) while the estimate is
    # below the target; above it every row is. Measured on the fixed minilm-l6 set
    # (device_minutes.md, 10 splits): 0.4 reached 95 % held-out within 5 % after 24 rows and
    # stopped after 86; 0.8 reached it after 36 (as random sampling) and stopped after 76.
    audit: float = 0.4
    pool: int = 3000  # random candidates the next subnets are chosen from
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("target", "tolerance", "confidence"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise InputError.bad_setting(name, f"must be between 0 and 1, got {value}")
        for name in ("first", "round_size", "max_subnets", "pool"):
            if getattr(self, name) < 1:
                raise InputError.bad_setting(name, f"must be at least 1, got {getattr(self, name)}")
        if self.first < 10:
            raise InputError.bad_setting("first", f"a fit needs at least 10 rows, got {self.first}")
        if self.max_device_s is not None and self.max_device_s <= 0:
            raise InputError.bad_setting("max_device_s", f"must be positive: {self.max_device_s}")
        if not 0 < self.audit <= 1:
            raise InputError.bad_setting("audit", f"must be in (0, 1], got {self.audit}")
        if self.choose not in CHOOSER_NAMES:
            raise InputError.bad_setting(
                "choose", f"unknown {self.choose!r} (known: {', '.join(CHOOSER_NAMES)})"
            )


def until_defaults() -> dict:
    """Each setting's default, by field name."""
    return {f.name: f.default for f in fields(UntilSettings)}
