"""Search objectives: a float per `SubnetConfig`, bigger is better.

Registered here (`@objective(name)`, the one place an objective is added): `params`
(encoder parameters: the Bigger&Faster thesis that under a latency budget the bigger model
is the better one; embeddings are left out because their count follows `hidden` alone and
would dominate small subnets), `neg-macs` (the cheapest architecture), and `oneshot` (the
subnet's one-shot closeness to the teacher with inherited weights,
`bfnas.models.train.oneshot`; it needs held-out pretraining data). A plugin is
`module:function`, imported by path: a callable taking a `SubnetConfig`, returning a float.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bfnas.errors import InputError, short
from bfnas.models.space.subnet import SubnetConfig

Objective = Callable[[SubnetConfig], float]


@dataclass(frozen=True)
class ObjectiveSettings:
    """What a registered objective may be made from: the workload's shape, the setting a
    refusal names, and the one-shot scorer (made by the caller: it needs a supernet and
    held-out data)."""

    seq_len: int = 128
    batch: int = 1
    setting: str = "objective"
    oneshot: Objective | None = None


ObjectiveFactory = Callable[[ObjectiveSettings], Objective]
OBJECTIVES: dict[str, ObjectiveFactory] = {}


def objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Register the decorated factory as the objective called `name` (`--objective NAME`)."""

    def register(factory: ObjectiveFactory) -> ObjectiveFactory:
        OBJECTIVES[name] = factory
        return factory

    return register


@objective("params")
def encoder_params(settings: ObjectiveSettings) -> Objective:
    return lambda cfg: float(cfg.params(embeddings=False))


@objective("neg-macs")
def negative_macs(settings: ObjectiveSettings) -> Objective:
    seq_len, batch = settings.seq_len, settings.batch
    return lambda cfg: -float(cfg.total_macs(seq_len, batch))


@objective("oneshot")
def oneshot_fidelity(settings: ObjectiveSettings) -> Objective:
    if settings.oneshot is None:
        raise InputError.bad_setting(
            settings.setting,
            "oneshot needs held-out pretraining data: pass --data DIR (made by `bfnas data build`)",
        )
    return settings.oneshot


def load_objective(
    name: str,
    seq_len: int = 128,
    batch: int = 1,
    setting: str = "objective",
    oneshot: Objective | None = None,
) -> Objective:
    """The objective called `name` (a registered one or `module:function`), or InputError.
    `oneshot` is the scorer behind the `oneshot` objective (it needs a supernet and data)."""
    factory = OBJECTIVES.get(name)
    if factory is not None:
        return factory(ObjectiveSettings(seq_len, batch, setting, oneshot))
    if ":" not in name:
        raise InputError.bad_setting(
            setting,
            f"unknown objective {name!r} (built in: {', '.join(OBJECTIVES)}; "
            "or a plugin as module:function)",
        )
    return load_plugin(name, setting)


def load_plugin(name: str, setting: str = "objective") -> Objective:
    """The plugin objective `module:function`, its results checked (`checked`), or
    InputError in one line: the module does not import, has no such name, or it is not
    callable."""
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
