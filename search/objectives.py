"""Search objectives: a float per `SubnetConfig`, bigger is better.

Built in: `params` (encoder parameters: the Bigger&Faster thesis that under a latency budget
the bigger model is the better one; embeddings are left out because their count follows
`hidden` alone and would dominate small subnets), `neg-macs` (the cheapest architecture),
and `oneshot` (the subnet's one-shot closeness to the teacher with inherited weights,
`bfnas.models.train.oneshot`; it needs held-out pretraining data). A plugin is `module:function`,
imported by path: a callable taking a `SubnetConfig`, returning a float.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from bfnas.errors import InputError, short
from bfnas.models.space.subnet import SubnetConfig

Objective = Callable[[SubnetConfig], float]
BUILTIN = ("params", "neg-macs", "oneshot")


def load_objective(
    name: str,
    seq_len: int = 128,
    batch: int = 1,
    setting: str = "objective",
    oneshot: Objective | None = None,
) -> Objective:
    """The objective called `name` (a built-in or `module:function`), or InputError.
    `oneshot` is the scorer behind the `oneshot` objective (it needs a supernet and data)."""
    if name == "params":
        return lambda cfg: float(cfg.params(embeddings=False))
    if name == "neg-macs":
        return lambda cfg: -float(cfg.total_macs(seq_len, batch))
    if name == "oneshot":
        if oneshot is None:
            raise InputError.bad_setting(
                setting,
                "oneshot needs held-out pretraining data: pass --data DIR "
                "(made by `bfnas data build`)",
            )
        return oneshot
    if ":" not in name:
        raise InputError.bad_setting(
            setting,
            f"unknown objective {name!r} (built in: {', '.join(BUILTIN)}; "
            "or a plugin as module:function)",
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise InputError.bad_setting(
            setting, f"{short(name)}: a plugin is module:function (both named)"
        )
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # ImportError, or whatever the module's code raised
        hint = (
            " (a plugin's module must be importable: installed, or on PYTHONPATH)"
            if isinstance(exc, ModuleNotFoundError)
            else ""
        )
        raise InputError.bad_setting(
            setting, f"cannot import {module_name!r}: {_what(exc)}{hint}"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise InputError.bad_setting(setting, f"module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise InputError.bad_setting(setting, f"{name} is not callable: it is {short(fn, 60)}")
    return checked(fn, name, setting)


def _what(exc: BaseException) -> str:
    """`Type: first line of the message`, cut: what a plugin did, in one line."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 200:
        first = first[:200] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def checked(fn: Callable, name: str, setting: str = "objective") -> Objective:
    """`fn` with its results checked: a plugin that raises, or returns something else than a
    finite number, fails with its name, what it did and the architecture, not deep inside the
    search. A string or None is refused even where float() would take it: "3.5" is a bug."""
    import math

    def call(cfg: SubnetConfig) -> float:
        try:
            value = fn(cfg)
        except (Exception, SystemExit) as exc:  # the plugin's own code: named, not traced
            raise InputError.bad_setting(
                setting, f"{name} raised {_what(exc)} (for {cfg})"
            ) from None
        number = None
        if value is not None and not isinstance(value, (str, bytes, bool)):
            try:
                number = float(value)
            except Exception:  # TypeError, OverflowError, a tensor's RuntimeError, ...
                number = None
        if number is None:
            raise InputError.bad_setting(
                setting,
                f"{name} did not return a number: it returned {_kind(value)} (for {cfg})",
            )
        if not math.isfinite(number):
            raise InputError.bad_setting(
                setting,
                f"{name} did not return a finite number: it returned {number} (for {cfg})",
            )
        return number

    return call


def _kind(value: object) -> str:
    """ "None", "a str '3.5'", "an int 3": what came back, in a few words."""
    if value is None:
        return "None"
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} {short(value, 60)}"
