"""Importing latency tables measured elsewhere: the AutoTinyBERT / Bigger&Faster format.

Each line is `<Python dict literal><TAB><milliseconds>`. The dict is parsed with
`ast.literal_eval` (data only, never code). Every line is checked before anything is
stored: one bad line and nothing is imported.
"""

from __future__ import annotations

import ast
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from bfnas.errors import InputError, read_text_input, short
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig

SEED_KEYS = {
    "sample_layer_num": "layers",
    "sample_hidden_size": "hidden",
    "sample_num_attention_heads": "heads",
    "sample_qkv_sizes": "qkv",
    "sample_intermediate_sizes": "ffn",
}
FORMATS = ("autotinybert",)


@dataclass(frozen=True)
class ImportedRow:
    line: int
    cfg: SubnetConfig
    ms: float


def parse_autotinybert(path: Path, space: SearchSpace) -> list[ImportedRow]:
    text = read_text_input(path)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        parts = line.split("\t")
        if len(parts) != 2:
            raise InputError(where, None, "expected '<dict><TAB><latency ms>'")
        try:
            d = ast.literal_eval(parts[0].strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            raise InputError(where, None, "the config is not a Python dict literal") from None
        if not isinstance(d, dict):
            raise InputError(where, None, "the config is not a dict")
        for key in SEED_KEYS:
            if key not in d:
                raise InputError(where, key, "missing")
        layers = d["sample_layer_num"]
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
            raise InputError(
                where, "sample_layer_num", f"must be a positive integer, got {short(layers)}"
            )
        fields: dict = {"layers": layers, "hidden": d["sample_hidden_size"]}
        for key, name in SEED_KEYS.items():
            if name in ("layers", "hidden"):
                continue
            value = d[key]
            if not isinstance(value, list) or not value:
                raise InputError(where, key, f"must be a non-empty list, got {short(value)}")
            # The seed writes one entry per layer; a single entry means every layer, passed
            # on as one value so the layer count is range-checked before it is expanded.
            if len(value) == 1:
                fields[name] = value[0]
                continue
            if len(value) < layers:
                raise InputError(where, key, f"has {len(value)} entries for {layers} layers")
            fields[name] = value[:layers]
        try:
            ms = float(parts[1])
        except ValueError:
            raise InputError(where, "latency", f"not a number: {parts[1].strip()!r}") from None
        if not math.isfinite(ms) or ms <= 0:
            raise InputError(where, "latency", f"must be a positive number, got {ms}")
        cfg = SubnetConfig.from_dict(fields, where=where)
        space.check(cfg, where=where)
        rows.append(ImportedRow(n, cfg, ms))
    if not rows:
        raise InputError(str(path), None, "no data lines")
    return rows


def imported_profile(label: str, source: Path) -> tuple[dict, str]:
    """Resolved JSON and hash of a profile for data measured elsewhere (no runtime known)."""
    resolved = {
        "name": label,
        "imported": True,
        "runtime": None,
        "note": "measured elsewhere; conditions unknown beyond the source file",
    }
    return resolved, "imported-" + hashlib.sha256(f"imported:{label}".encode()).hexdigest()[:16]
