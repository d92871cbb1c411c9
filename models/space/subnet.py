"""`SubnetConfig`: the identity of one architecture, with analytic size and cost."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bfnas.errors import InputError, short
from bfnas.models.space.cost import embedding_params, encoder_macs, encoder_params

KEYS = ("layers", "hidden", "heads", "qkv", "ffn")
PER_LAYER = ("heads", "qkv", "ffn")
# Bounds checked before anything is expanded or built: far beyond any BERT, far below what
# would exhaust memory (a per-layer list of 10^9 entries, a 10^12-wide layer).
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 16

# BERT's vocabulary and embedding tables (bert-base-uncased and all-MiniLM-L6-v2 share them).
BERT_VOCAB = 30522
BERT_MAX_POSITIONS = 512
BERT_TYPE_VOCAB = 2


@dataclass(frozen=True)
class SubnetConfig:
    """A dense BERT encoder: `layers` layers over a residual stream of width `hidden`.

    Layer i has `heads[i]` attention heads whose Q/K/V projections are `qkv[i]` wide
    (head size qkv/heads, independent of hidden, as in AutoTinyBERT) and an FFN of `ffn[i]`.
    """

    layers: int
    hidden: int
    heads: tuple[int, ...]
    qkv: tuple[int, ...]
    ffn: tuple[int, ...]

    def __post_init__(self) -> None:
        check_structure(self.to_dict(), where="arch")

    # -- identity -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": list(self.heads),
            "qkv": list(self.qkv),
            "ffn": list(self.ffn),
        }

    def to_json(self) -> str:
        """Canonical JSON: fixed key order and separators, so equal configs give equal text."""
        return json.dumps(self.to_dict())

    def csv_columns(self) -> dict[str, int | str]:
        """Its dimensions as spreadsheet cells: per-layer lists space-separated (what both
        stores' CSV exports write beside the canonical JSON)."""
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": " ".join(map(str, self.heads)),
            "qkv": " ".join(map(str, self.qkv)),
            "ffn": " ".join(map(str, self.ffn)),
        }

    def key(self) -> str:
        """Stable identity used by caches, stores and search (16 hex digits of sha256)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, where: str = "arch") -> SubnetConfig:
        """Build from a dict; a per-layer field may be a single int meaning every layer."""
        if not isinstance(data, dict):
            raise InputError(where, None, f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise InputError(where, unknown[0], f"unknown key (allowed: {', '.join(KEYS)})")
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise InputError(where, missing[0], "missing")
        layers = data["layers"]
        if not _is_int(layers) or layers < 1:
            raise InputError(where, "layers", f"must be an integer >= 1, got {short(layers)}")
        if layers > MAX_LAYERS:
            raise InputError(where, "layers", f"must be at most {MAX_LAYERS}, got {layers}")
        fields: dict[str, Any] = {"layers": layers, "hidden": data["hidden"]}
        for name in PER_LAYER:
            value = data[name]
            fields[name] = tuple([value] * layers) if _is_int(value) else value
        check_structure(fields, where)
        return cls(
            layers=layers,
            hidden=fields["hidden"],
            heads=tuple(fields["heads"]),
            qkv=tuple(fields["qkv"]),
            ffn=tuple(fields["ffn"]),
        )

    @classmethod
    def from_json(cls, text: str, where: str = "arch") -> SubnetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(where, None, f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        except RecursionError:  # the parser recurses per level: a hostile file nests deeply
            raise InputError(where, None, "JSON nested too deeply for an architecture") from None
        return cls.from_dict(data, where)

    @classmethod
    def uniform(cls, layers: int, hidden: int, heads: int, qkv: int, ffn: int) -> SubnetConfig:
        return cls(layers, hidden, (heads,) * layers, (qkv,) * layers, (ffn,) * layers)

    # -- analytic cost (models.space.cost) ----------------------------------------
    def params(
        self,
        embeddings: bool = True,
        vocab_size: int = BERT_VOCAB,
        max_positions: int = BERT_MAX_POSITIONS,
        type_vocab: int = BERT_TYPE_VOCAB,
    ) -> int:
        """Parameter count of the dense subnet (weights, biases, LayerNorms)."""
        total = encoder_params(self.layers, self.hidden, sum(self.qkv), sum(self.ffn))
        if embeddings:
            total += embedding_params(self.hidden, vocab_size, max_positions, type_vocab)
        return total

    def macs(self, seq_len: int = 128, batch: int = 1) -> dict[str, int]:
        """Multiply-accumulates of the encoder per op class (embedding lookups cost none)."""
        return encoder_macs(self.hidden, sum(self.qkv), sum(self.ffn), seq_len, batch)

    def total_macs(self, seq_len: int = 128, batch: int = 1) -> int:
        return sum(self.macs(seq_len, batch).values())

    def __str__(self) -> str:
        if len(set(self.heads)) == len(set(self.qkv)) == len(set(self.ffn)) == 1:
            return f"L{self.layers} H{self.hidden} A{self.heads[0]} Q{self.qkv[0]} F{self.ffn[0]}"
        return (
            f"L{self.layers} H{self.hidden} A{list(self.heads)} Q{list(self.qkv)} F{list(self.ffn)}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_structure(data: dict[str, Any], where: str) -> None:
    """Shape checks every config must pass, whatever the space."""
    layers = data["layers"]
    if not _is_int(layers) or layers < 1:
        raise InputError(where, "layers", f"must be an integer >= 1, got {layers!r}")
    hidden = data["hidden"]
    if not _is_int(hidden) or hidden < 1:
        raise InputError(where, "hidden", f"must be a positive integer, got {short(hidden)}")
    if hidden > MAX_WIDTH:
        raise InputError(where, "hidden", f"must be at most {MAX_WIDTH}, got {hidden}")
    for name in PER_LAYER:
        values = data[name]
        if not isinstance(values, list | tuple) or len(values) != layers:
            raise InputError(
                where,
                name,
                f"must be a list of {layers} integers (one per layer), got {short(values)}",
            )
        for i, v in enumerate(values):
            if not _is_int(v) or v < 1:
                raise InputError(
                    where, f"{name}[{i}]", f"must be a positive integer, got {short(v)}"
                )
            if v > MAX_WIDTH:
                raise InputError(where, f"{name}[{i}]", f"must be at most {MAX_WIDTH}, got {v}")
    for i, (q, a) in enumerate(zip(data["qkv"], data["heads"], strict=True)):
        if q % a:
            raise InputError(where, f"qkv[{i}]", f"{q} is not divisible by heads[{i}]={a}")
