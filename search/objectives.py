"""Search objectives: a float per `SubnetConfig`, bigger is better.

Built in: `params` (encoder parameters: the Bigger&Faster thesis that under a latency budget
the bigger model is the better one; embeddings are left out because their count follows
`hidden` alone and would dominate small subnets), `neg-macs` (the cheapest architecture),
and `oneshot` (the subnet's one-shot closeness to the teacher with inherited weights,
`bfnas.models.oneshot`; it needs held-out pretraining data). A plugin is `module:function`,
imported by path: a callable taking a `SubnetConfig`, returning a float.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bfnas.models.errors import InputError
from bfnas.models.subnet import SubnetConfig

Objective = Callable[[SubnetConfig], float]
BUILTIN = ("params", "neg-macs", "oneshot")


def load_objective(name: str, seq_len: int = 128, batch: int = 1, where: str = "--objective",
                   oneshot: Objective | None = None) -> Objective:
    """The objective called `name` (a built-in or `module:function`), or InputError.
    `oneshot` is the scorer behind the `oneshot` objective (it needs a supernet and data)."""
    if name == "params":
        return lambda cfg: float(cfg.params(embeddings=False))
    if name == "neg-macs":
        return lambda cfg: -float(cfg.total_macs(seq_len, batch))
    if name == "oneshot":
        if oneshot is None:
            raise InputError(where, None, "oneshot needs held-out pretraining data: pass --data DIR "
                                          "(made by `bfnas data build`)")
        return oneshot
    if ":" not in name:
        raise InputError(where, None, f"unknown objective {name!r} (built in: {', '.join(BUILTIN)}; "
                                      "or a plugin as module:function)")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(where, None, f"cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise InputError(where, None, f"module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise InputError(where, None, f"{name} is not callable")
    return checked(fn, name)


def checked(fn: Callable, name: str) -> Objective:
    """`fn` with its results checked: a plugin returning something else than a finite
    number fails with its name and the architecture, not deep inside the search."""
    import math

    def call(cfg: SubnetConfig) -> float:
        try:
            value = float(fn(cfg))
        except (TypeError, ValueError) as exc:
            raise InputError("--objective", None, f"{name} did not return a number for {cfg}: {exc}") from None
        if not math.isfinite(value):
            raise InputError("--objective", None, f"{name} returned {value} for {cfg}")
        return value

    return call
