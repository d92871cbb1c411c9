"""Search objectives: a float per `SubnetConfig`, bigger is better, in a named unit.

Registered here (`@objective(name, unit)`, the one place an objective is added): `params`
(encoder parameters: the Bigger&Faster thesis that under a latency budget the bigger model
is the better one; embeddings are left out because their count follows `hidden` alone and
would dominate small subnets), `neg-macs` (the cheapest architecture), `oneshot` (the
subnet's one-shot closeness to the teacher with inherited weights,
`bfnas.models.train.oneshot`; it needs held-out pretraining data), `task` (the subnet's dev
accuracy on a task with the inherited weights of a task supernet, made by `bfnas supernet
finetune`, and its classifier slice refitted on the subnet's own features: one-shot, about a
second a subnet) and `task-finetune` (the original
Bigger&Faster fitness: dev accuracy after a short fine-tune of each candidate from inherited
weights, cached on disk, several candidates at once: `models.train.finetune_fitness`). A
plugin is `module:function`, imported by path: a callable taking a `SubnetConfig`,
returning a float.

An objective may also score a batch: `many(cfgs) -> list[float]` (the search calls it with
every new feasible candidate of a generation at once; `task-finetune` runs those fine-tunes
in parallel). One holding processes or files has `close()`, called when the search ends.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bfnas.errors import InputError, short
from bfnas.models.space.subnet import SubnetConfig

if TYPE_CHECKING:
    from bfnas.models.space.search_space import SearchSpace
    from bfnas.models.train.finetune_fitness import FitnessSettings

Objective = Callable[[SubnetConfig], float]


@dataclass(frozen=True)
class ObjectiveSettings:
    """What a registered objective may be made from: the workload's shape, the setting a
    refusal names, the one-shot scorer (made by the caller: it needs a supernet and
    held-out data), and for the task objectives the task supernet folder, the task folder,
    the stage-1 supernet (`checkpoint`: what `task-finetune` inherits from without a task
    supernet), the search space (checked to fit) and the fine-tune settings."""

    seq_len: int = 128
    batch: int = 1
    setting: str = "objective"
    oneshot: Objective | None = None
    task_supernet: str | None = None
    task_dir: str | None = None
    checkpoint: str | None = None
    space: SearchSpace | None = None
    fitness: FitnessSettings | None = None
    accuracy_model: str | None = None  # an accuracy predictor's folder (`accuracy fit`)


ObjectiveFactory = Callable[[ObjectiveSettings], Objective]
OBJECTIVES: dict[str, ObjectiveFactory] = {}
# What each registered objective's numbers are, for reports and JSON.
OBJECTIVE_UNITS: dict[str, str] = {}
PLUGIN_UNIT = "objective (plugin: unit not declared)"


def objective(name: str, unit: str = "objective") -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Register the decorated factory as the objective called `name` (`--objective NAME`),
    whose values are in `unit`."""

    def register(factory: ObjectiveFactory) -> ObjectiveFactory:
        OBJECTIVES[name] = factory
        OBJECTIVE_UNITS[name] = unit
        return factory

    return register


def objective_unit(name: str) -> str:
    """The unit of the objective called `name` (a plugin's is not known)."""
    return OBJECTIVE_UNITS.get(name, PLUGIN_UNIT)


@objective("params", "encoder parameters")
def encoder_params(settings: ObjectiveSettings) -> Objective:
    return lambda cfg: float(cfg.params(embeddings=False))


@objective("neg-macs", "negative MACs")
def negative_macs(settings: ObjectiveSettings) -> Objective:
    seq_len, batch = settings.seq_len, settings.batch
    return lambda cfg: -float(cfg.total_macs(seq_len, batch))


@objective("oneshot", "linear CKA to the teacher")
def oneshot_fidelity(settings: ObjectiveSettings) -> Objective:
    if settings.oneshot is None:
        raise InputError.bad_setting(
            "oneshot",
            "the oneshot objective needs a one-shot scorer, made from held-out pretraining data "
            "(a folder made by `bfnas data build`)",
        )
    return settings.oneshot


@objective("task", "dev accuracy (one-shot: inherited weights, classifier refitted)")
def task_accuracy(settings: ObjectiveSettings) -> Objective:
    from bfnas.models.train.task_supernet import load_task_supernet, task_scorer

    if settings.task_supernet is None:
        raise InputError.bad_setting(
            "task_supernet",
            "the task objective needs a task supernet (a folder made by `bfnas supernet finetune`)",
        )
    tsn = load_task_supernet(settings.task_supernet)
    if settings.space is not None:
        tsn.supernet.check_space(settings.space, setting="task_supernet")
    return task_scorer(tsn, settings.task_dir)


@objective("task-finetune", "dev accuracy (after a short fine-tune)")
def task_finetune_accuracy(settings: ObjectiveSettings) -> Objective:
    from pathlib import Path

    from bfnas.models.nn.checkpoint import read_task_manifest, resolve_checkpoint
    from bfnas.models.train.finetune_fitness import FinetuneFitness, FitnessSettings, FitnessSource

    source = settings.task_supernet or settings.checkpoint
    if source is None:
        raise InputError.bad_setting(
            "task_supernet",
            "task-finetune fine-tunes candidates from a supernet's weights: give a task supernet "
            "(made by `bfnas supernet finetune`), or a stage-1 supernet as the checkpoint",
        )
    folder = resolve_checkpoint(source)
    if not folder.is_dir():
        raise InputError.bad_setting(
            "task_supernet" if settings.task_supernet else "checkpoint",
            f"{source}: not a directory",
        )
    manifest = read_task_manifest(folder)  # refuses a damaged task.json
    if settings.task_supernet is not None and manifest is None:
        raise InputError(
            str(folder / "task.json"),
            None,
            "missing: not a task supernet (make one with `bfnas supernet finetune`)",
        )
    task_dir = settings.task_dir or (manifest["task"]["folder"] if manifest else None)
    if task_dir is None:
        raise InputError.bad_setting(
            "task_dir", "task-finetune needs the task folder (a stage-1 supernet names none)"
        )
    tokenizer = next(
        (folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()), None
    )
    if tokenizer is None:
        raise InputError(str(folder), None, "holds no tokenizer.json or vocab.txt")
    fitness = FinetuneFitness(
        FitnessSource(str(folder), str(tokenizer), str(Path(task_dir))),
        settings.fitness or FitnessSettings(),
    )
    if settings.space is not None:
        fitness.loaded.supernet.check_space(settings.space, setting="task_supernet")
    return fitness


class PredictedAccuracy:
    """An accuracy predictor as an objective: `many` scores a generation in one batched call,
    as fast as latency scoring."""

    def __init__(self, model: object) -> None:
        self.model = model

    def __call__(self, cfg: SubnetConfig) -> float:
        return float(self.model.predict([cfg])[0])  # type: ignore[attr-defined]

    def many(self, cfgs: list[SubnetConfig]) -> list[float]:
        return [float(v) for v in self.model.predict(list(cfgs))]  # type: ignore[attr-defined]


@objective("accuracy", "dev accuracy (predicted from fine-tunes under a protocol)")
def predicted_accuracy(settings: ObjectiveSettings) -> Objective:
    from bfnas.search.accuracy_predictor import AccuracyPredictor

    if settings.accuracy_model is None:
        raise InputError.bad_setting(
            "accuracy_model",
            "the accuracy objective needs an accuracy predictor "
            "(a folder made by `bfnas accuracy fit` or `bfnas accuracy collect`)",
        )
    model = AccuracyPredictor.load(settings.accuracy_model)
    where = str(settings.accuracy_model)
    if settings.space is not None and model.scope.space != settings.space.name:
        raise InputError(
            where,
            "scope.space",
            f"predicts space {model.scope.space}, the search is over {settings.space.name}",
        )
    if model.scope.seq_len != settings.seq_len:
        raise InputError(
            where,
            "scope.seq_len",
            f"fine-tuned at {model.scope.seq_len} tokens, the latencies are of "
            f"{settings.seq_len}: budget the workload the model will serve (a profile at "
            "the task's length)",
        )
    return PredictedAccuracy(model)


def load_objective(
    name: str,
    seq_len: int = 128,
    batch: int = 1,
    setting: str = "objective",
    oneshot: Objective | None = None,
    **task: object,
) -> Objective:
    """The objective called `name` (a registered one or `module:function`), or InputError.
    `oneshot` is the scorer behind the `oneshot` objective (it needs a supernet and data);
    `task` holds the task objectives' fields of `ObjectiveSettings` (task_supernet,
    task_dir, checkpoint, space, fitness)."""
    factory = OBJECTIVES.get(name)
    if factory is not None:
        return factory(ObjectiveSettings(seq_len, batch, setting, oneshot, **task))  # type: ignore[arg-type]
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
