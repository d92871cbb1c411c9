"""`SearchSpace`: which subnets exist, how to sample, mutate and cross them, loaded from TOML.

A space file names five dimensions. Each is a single integer, a list of choices, or a
`{min, max, step}` range. `qkv` may instead be tied: `qkv = "hidden"` (the seed's grid) or
`qkv = {head_size = 32}` (qkv = 32 x heads, as in a pretrained checkpoint's heads).
`uniform = true` gives every layer the same heads/qkv/FFN.

    name = "bigger-faster"
    uniform = true
    layers = {min = 1, max = 5}
    hidden = {min = 120, max = 564, step = 12}
    heads = 12
    qkv = "hidden"
    ffn = {min = 128, max = 1016, step = 12}
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from bfnas.errors import InputError, read_text_input, short
from bfnas.models.space.subnet import MAX_LAYERS, MAX_WIDTH, SubnetConfig

SPACE_KEYS = ("name", "description", "uniform", "layers", "hidden", "heads", "qkv", "ffn")


@dataclass(frozen=True)
class Choices:
    """The allowed values of one dimension, sorted and unique."""

    values: tuple[int, ...]
    step: int | None = None  # set when the values came from a range, for display

    @classmethod
    def parse(cls, spec: Any, where: str, field: str, limit: int = MAX_WIDTH) -> Choices:
        """Choices from a TOML value; every value must be at most `limit`, checked before a
        range is expanded."""
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = [spec]
        if isinstance(spec, list):
            if not spec or not all(_pos_int(v) for v in spec):
                raise InputError(
                    where, field, f"choices must be positive integers, got {short(spec)}"
                )
            if max(spec) > limit:
                raise InputError(where, field, f"must be at most {limit}, got {max(spec)}")
            return cls(tuple(sorted(set(spec))))
        if isinstance(spec, dict):
            extra = sorted(set(spec) - {"min", "max", "step"})
            if extra:
                raise InputError(
                    where, f"{field}.{extra[0]}", "unknown key (allowed: min, max, step)"
                )
            for k in ("min", "max"):
                if k not in spec:
                    raise InputError(where, f"{field}.{k}", "missing")
            lo, hi, step = spec["min"], spec["max"], spec.get("step", 1)
            for k, v in (("min", lo), ("max", hi), ("step", step)):
                if not _pos_int(v):
                    raise InputError(
                        where, f"{field}.{k}", f"must be a positive integer, got {short(v)}"
                    )
            if hi < lo:
                raise InputError(where, f"{field}.max", f"{hi} is below min {lo}")
            if hi > limit:
                raise InputError(where, f"{field}.max", f"must be at most {limit}, got {hi}")
            return cls(tuple(range(lo, hi + 1, step)), step)
        raise InputError(
            where, field, f"expected an integer, a list or {{min, max, step}}, got {short(spec)}"
        )

    def describe(self) -> str:
        v = self.values
        if len(v) == 1:
            return str(v[0])
        if self.step is not None:
            return f"{v[0]}..{v[-1]} step {self.step} ({len(v)} values)"
        return "{" + ", ".join(map(str, v)) + "}"

    def __contains__(self, value: object) -> bool:
        return value in self._set

    @cached_property
    def _set(self) -> frozenset[int]:
        return frozenset(self.values)


@dataclass(frozen=True)
class QkvRule:
    """How a layer's qkv width is chosen: free choices, tied to hidden, or heads x head_size."""

    kind: str  # "choices" | "hidden" | "head_size"
    choices: Choices | None = None
    head_size: int | None = None

    def options(self, heads: int, hidden: int) -> tuple[int, ...]:
        """The qkv values a layer with `heads` heads may take in a subnet of width `hidden`."""
        if self.kind == "hidden":
            return (hidden,) if hidden % heads == 0 else ()
        if self.kind == "head_size":
            assert self.head_size is not None
            return (self.head_size * heads,)
        assert self.choices is not None
        return tuple(q for q in self.choices.values if q % heads == 0)

    def describe(self) -> str:
        if self.kind == "hidden":
            return "= hidden"
        if self.kind == "head_size":
            return f"= {self.head_size} x heads"
        assert self.choices is not None
        return self.choices.describe() + ", divisible by heads"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    uniform: bool
    layers: Choices
    hidden: Choices
    heads: Choices
    qkv: QkvRule
    ffn: Choices
    source: str = "<memory>"

    # -- loading ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> SearchSpace:
        unknown = sorted(set(data) - set(SPACE_KEYS))
        if unknown:
            raise InputError(where, unknown[0], f"unknown key (allowed: {', '.join(SPACE_KEYS)})")
        for key in ("name", "layers", "hidden", "heads", "qkv", "ffn"):
            if key not in data:
                raise InputError(where, key, "missing")
        name = data["name"]
        if not isinstance(name, str) or not name.strip():
            raise InputError(where, "name", f"must be a non-empty string, got {name!r}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise InputError(where, "description", "must be a string")
        uniform = data.get("uniform", False)
        if not isinstance(uniform, bool):
            raise InputError(where, "uniform", f"must be true or false, got {uniform!r}")
        space = cls(
            name=name,
            description=description,
            uniform=uniform,
            layers=Choices.parse(data["layers"], where, "layers", MAX_LAYERS),
            hidden=Choices.parse(data["hidden"], where, "hidden"),
            heads=Choices.parse(data["heads"], where, "heads"),
            qkv=_parse_qkv(data["qkv"], where),
            ffn=Choices.parse(data["ffn"], where, "ffn"),
            source=where,
        )
        for h in space.hidden.values:
            if not space.layer_pairs(h):
                raise InputError(where, "qkv", f"no (heads, qkv) pair is allowed when hidden = {h}")
        return space

    @classmethod
    def from_toml(cls, path: str | Path) -> SearchSpace:
        where = str(path)
        text = read_text_input(path, where)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(where, None, f"not valid TOML ({exc})") from None
        return cls.from_dict(data, where)

    # -- shape of the space ---------------------------------------------------------
    def layer_pairs(self, hidden: int) -> tuple[tuple[int, int], ...]:
        """Every allowed (heads, qkv) of one layer in a subnet of width `hidden`."""
        return tuple((a, q) for a in self.heads.values for q in self.qkv.options(a, hidden))

    def count(self) -> int:
        """Number of distinct architectures in the space."""
        total = 0
        for h in self.hidden.values:
            per_layer = len(self.layer_pairs(h)) * len(self.ffn.values)
            for n in self.layers.values:
                total += per_layer if self.uniform else per_layer**n
        return total

    def largest(self) -> SubnetConfig:
        """The widest, deepest member: the supernet must hold at least this."""
        h = self.hidden.values[-1]
        a, q = max(self.layer_pairs(h), key=lambda p: (p[1], p[0]))
        return SubnetConfig.uniform(self.layers.values[-1], h, a, q, self.ffn.values[-1])

    def smallest(self) -> SubnetConfig:
        h = self.hidden.values[0]
        a, q = min(self.layer_pairs(h), key=lambda p: (p[1], p[0]))
        return SubnetConfig.uniform(self.layers.values[0], h, a, q, self.ffn.values[0])

    def max_qkv(self) -> int:
        return max(q for h in self.hidden.values for _, q in self.layer_pairs(h))

    # -- membership -----------------------------------------------------------------
    def check(self, cfg: SubnetConfig, where: str = "arch") -> None:
        """Raise InputError naming the first field of `cfg` that is outside this space."""
        if cfg.layers not in self.layers:
            raise InputError(
                where, "layers", f"{cfg.layers} not in space {self.name} ({self.layers.describe()})"
            )
        if cfg.hidden not in self.hidden:
            raise InputError(
                where, "hidden", f"{cfg.hidden} not in space {self.name} ({self.hidden.describe()})"
            )
        for i in range(cfg.layers):
            if cfg.heads[i] not in self.heads:
                raise InputError(
                    where,
                    f"heads[{i}]",
                    f"{cfg.heads[i]} not in space {self.name} ({self.heads.describe()})",
                )
            if cfg.qkv[i] not in self.qkv.options(cfg.heads[i], cfg.hidden):
                raise InputError(
                    where,
                    f"qkv[{i}]",
                    f"{cfg.qkv[i]} not allowed with heads {cfg.heads[i]}, hidden {cfg.hidden} "
                    f"in space {self.name} (qkv {self.qkv.describe()})",
                )
            if cfg.ffn[i] not in self.ffn:
                raise InputError(
                    where,
                    f"ffn[{i}]",
                    f"{cfg.ffn[i]} not in space {self.name} ({self.ffn.describe()})",
                )
        if self.uniform and (
            len(set(cfg.heads)) > 1 or len(set(cfg.qkv)) > 1 or len(set(cfg.ffn)) > 1
        ):
            raise InputError(
                where,
                "heads/qkv/ffn",
                f"space {self.name} is uniform: every layer must be the same",
            )

    def contains(self, cfg: SubnetConfig) -> bool:
        try:
            self.check(cfg)
        except InputError:
            return False
        return True

    # -- sampling and evolution ---------------------------------------------------------
    def sample(self, rng: random.Random) -> SubnetConfig:
        layers = rng.choice(self.layers.values)
        hidden = rng.choice(self.hidden.values)
        genes = [self._sample_gene(rng, hidden) for _ in range(1 if self.uniform else layers)]
        return self._build(layers, hidden, genes)

    def mutate(self, cfg: SubnetConfig, rng: random.Random, rate: float = 0.3) -> SubnetConfig:
        """Resample each gene with probability `rate`; retries until the result differs
        from `cfg` (when the space has more than one member)."""
        for _ in range(20):
            child = self._mutate_once(cfg, rng, rate)
            if child != cfg:
                return child
        return child

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: depth and width from either parent, each layer's attention
        (heads with its qkv) and FFN from either parent that has that layer."""
        layers = rng.choice((a.layers, b.layers))
        hidden = rng.choice((a.hidden, b.hidden))
        ga, gb = _genes(a), _genes(b)
        n = 1 if self.uniform else layers
        genes = []
        for i in range(n):
            options = [g for g in (ga, gb) if i < len(g)]
            attn = rng.choice(options)[i][:2]
            ffn = rng.choice(options)[i][2]
            genes.append(self._repair((attn[0], attn[1], ffn), hidden, rng))
        return self._build(layers, hidden, genes)

    # -- internals ------------------------------------------------------------------------
    def _sample_gene(self, rng: random.Random, hidden: int) -> tuple[int, int, int]:
        a, q = rng.choice(self.layer_pairs(hidden))
        return a, q, rng.choice(self.ffn.values)

    def _repair(
        self, gene: tuple[int, int, int], hidden: int, rng: random.Random
    ) -> tuple[int, int, int]:
        """Keep a gene valid after its subnet's hidden size changed (qkv may be tied to it)."""
        a, q, f = gene
        if q in self.qkv.options(a, hidden):
            return gene
        a, q = rng.choice(self.layer_pairs(hidden))
        return a, q, f

    def _mutate_once(self, cfg: SubnetConfig, rng: random.Random, rate: float) -> SubnetConfig:
        layers = rng.choice(self.layers.values) if rng.random() < rate else cfg.layers
        hidden = rng.choice(self.hidden.values) if rng.random() < rate else cfg.hidden
        genes = _genes(cfg)[: 1 if self.uniform else layers]
        while len(genes) < (1 if self.uniform else layers):
            genes.append(genes[-1])  # a new layer starts as a copy of the last one
        out = []
        for a, q, f in genes:
            if rng.random() < rate:
                a, q = rng.choice(self.layer_pairs(hidden))
            if rng.random() < rate:
                f = rng.choice(self.ffn.values)
            out.append(self._repair((a, q, f), hidden, rng))
        return self._build(layers, hidden, out)

    def _build(self, layers: int, hidden: int, genes: list[tuple[int, int, int]]) -> SubnetConfig:
        if self.uniform:
            genes = genes[:1] * layers
        return SubnetConfig(
            layers=layers,
            hidden=hidden,
            heads=tuple(g[0] for g in genes),
            qkv=tuple(g[1] for g in genes),
            ffn=tuple(g[2] for g in genes),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "uniform": self.uniform,
            "layers": self.layers.describe(),
            "hidden": self.hidden.describe(),
            "heads": self.heads.describe(),
            "qkv": self.qkv.describe(),
            "ffn": self.ffn.describe(),
            "architectures": self.count(),
            "largest": self.largest().to_dict(),
            "smallest": self.smallest().to_dict(),
        }


def _genes(cfg: SubnetConfig) -> list[tuple[int, int, int]]:
    return list(zip(cfg.heads, cfg.qkv, cfg.ffn, strict=True))


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _parse_qkv(spec: Any, where: str) -> QkvRule:
    if spec == "hidden":
        return QkvRule("hidden")
    if isinstance(spec, str):
        raise InputError(where, "qkv", f'the only tie is "hidden", got {spec!r}')
    if isinstance(spec, dict) and "head_size" in spec:
        if set(spec) != {"head_size"} or not _pos_int(spec["head_size"]):
            raise InputError(where, "qkv.head_size", "must be the only key, a positive integer")
        return QkvRule("head_size", head_size=spec["head_size"])
    return QkvRule("choices", choices=Choices.parse(spec, where, "qkv"))


# -- shipped spaces and lookup ------------------------------------------------------------
def shipped_spaces() -> dict[str, Path]:
    folder = resources.files("bfnas.models.space.presets")
    if not folder.is_dir():  # an install without its data: no shipped names, no traceback
        return {}
    return {
        p.name.removesuffix(".toml"): Path(str(p))
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".toml")
    }


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name, or a TOML file by path."""
    shipped = shipped_spaces()
    key = str(name_or_path)
    if key in shipped:
        return SearchSpace.from_toml(shipped[key])
    if key.endswith(".toml") or Path(key).exists():
        return SearchSpace.from_toml(key)
    raise InputError.bad_setting(
        "space",
        f"no space named {key!r} (shipped: {', '.join(shipped)}; or give a .toml path)",
    )
