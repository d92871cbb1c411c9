"""The runner kinds a profile's `target.kind` may name: the one place a kind is registered.

Each kind names its code as "module:function", imported only when a profile of that kind
is used, so a local job never imports the SSH or Ray code (nor Ray itself): the function
that builds its runner for a profile (`base.runner_for` calls it), the function that checks
a profile where that runner measures (`usable.probe`, what `bfnas hw check` reports), and
the class of its `[target]` settings (`targets`). This module imports nothing of the profile
schema: the schema builds its `target` from the classes registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bfnas.bench.device.lazy_import import load_entry, registered


@dataclass(frozen=True)
class RunnerKind:
    """Where one kind of target measures. Both entries are "module:function"."""

    # (profile) -> a `base.Runner` for it; bad input raises InputError naming the profile.
    build: str
    # (profile) -> the checks of the profile where the runner measures, as dicts
    # (`bench.device.probe.Check.to_dict`: what a device sends back).
    probe: str
    # "module:Class": the kind's `[target]` settings, a `targets.TargetSettings`.
    settings: str

    def load_build(self) -> Callable[..., Any]:
        return load_entry(self.build)

    def load_probe(self) -> Callable[..., list[dict]]:
        return load_entry(self.probe)

    def load_settings(self) -> type:
        return load_entry(self.settings)


RUNNER_KINDS: dict[str, RunnerKind] = {
    "local": RunnerKind(
        build="bfnas.bench.runners.local:local_runner",
        probe="bfnas.bench.runners.local:local_probe",
        settings="bfnas.bench.runners.targets:LocalTarget",
    ),
    "ssh": RunnerKind(
        build="bfnas.bench.runners.ssh:ssh_runner",
        probe="bfnas.bench.runners.ssh:ssh_probe",
        settings="bfnas.bench.runners.targets:SshTarget",
    ),
    "ray": RunnerKind(
        build="bfnas.bench.runners.ray:ray_runner",
        probe="bfnas.bench.runners.ray:ray_probe",
        settings="bfnas.bench.runners.targets:RayTarget",
    ),
    "adb": RunnerKind(
        build="bfnas.bench.runners.adb:adb_runner",
        probe="bfnas.bench.runners.adb:adb_probe",
        settings="bfnas.bench.runners.targets:AdbTarget",
    ),
}


def registered_kinds() -> str:
    """The registered names, for the line that refuses an unknown one."""
    return ", ".join(RUNNER_KINDS)


def runner_kind(name: str) -> RunnerKind:
    """The kind registered as `name`; ValueError naming the registered ones."""
    return registered(RUNNER_KINDS, name, "runner kind")
