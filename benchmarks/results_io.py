"""What every benchmark does with its result: print the table, keep it as Markdown and the
numbers behind it as JSON in the results folder."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def publish(out: str | Path, name: str, lines: list[str], data: dict) -> None:
    text = "\n".join(lines)
    print(text)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(text + "\n")
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2))


def cov(xs: list[float]) -> float:
    """Coefficient of variation (sample std / mean)."""
    return statistics.stdev(xs) / statistics.mean(xs)
