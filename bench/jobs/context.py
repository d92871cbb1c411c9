"""What every measuring job needs, wired in one place.

A job that measures subnets (`ProfileJob`, a search's `DeviceVerifier`, `measure_subnet`)
needs the same five things: the profile it measures under, the space its subnets come from,
the supernet whose weights they carry, the artifact cache their ONNX files go to and the
runner that times them on the profile's device. `MeasurementSetup` holds them; `open_setup`
builds one from names or ready objects, and is what the CLI, the demo pipeline and a notebook
all call, so a job is wired the same way wherever it starts.

The latency store is not part of it: the CLI opens the store only once the device has passed
its checks (opening creates the file), so it is handed to each job beside the setup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bfnas.bench.hardware_profile import HardwareProfile, load_profile
from bfnas.bench.runners.base import Runner, runner_for
from bfnas.bench.runners.usable import require_usable
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.space.search_space import SearchSpace, load_space


@dataclass
class MeasurementSetup:
    """The profile, space, supernet, artifact cache and runner a measuring job works with.

    Closing it closes the runner (its worker processes, SSH connections or Ray actors); it is
    a context manager for that."""

    profile: HardwareProfile
    space: SearchSpace
    supernet: SuperBert
    cache: ArtifactCache
    runner: Runner

    def check_device(self) -> None:
        """Refuse the profile unless the runner's device passes its checks (what `bfnas hw
        check` reports): a job calls it before it writes anything."""
        require_usable(self.profile, self.runner)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> MeasurementSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def space_and_supernet(
    space: SearchSpace | str, supernet: SuperBert | str | None = None, supernet_seed: int = 0
) -> tuple[SearchSpace, SuperBert]:
    """The space (a shipped name or a .toml path, or one already loaded) and the supernet its
    subnets are cut from: one given as is, a checkpoint folder (or 'minilm') loaded and
    checked against the space, or, with None, a random one sized for the space."""
    if not isinstance(space, SearchSpace):
        space = load_space(space)
    if isinstance(supernet, SuperBert):
        return space, supernet
    if supernet:  # an empty checkpoint name means none, as `--checkpoint ""` always did
        from bfnas.models.nn.checkpoint import load_supernet

        loaded = load_supernet(supernet)
        loaded.check_space(space)
        return space, loaded
    from bfnas.models.nn.supernet import SupernetDims

    return space, SuperBert.random(SupernetDims.for_space(space), seed=supernet_seed)


def artifact_cache(
    folder: str | Path, threshold: float = 0.99, seq_len: int = 128
) -> ArtifactCache:
    """An artifact cache in `folder` (nothing is created until the first export) whose
    fidelity check runs at `seq_len` (a job's: its profile's workload)."""
    return ArtifactCache(
        Path(folder), fidelity=FidelitySettings(threshold=threshold, seq_len=seq_len)
    )


def open_setup(
    profile: HardwareProfile | str,
    space: SearchSpace | str,
    *,
    artifacts: ArtifactCache | str | Path,
    supernet: SuperBert | str | None = None,
    supernet_seed: int = 0,
    make_runner: Callable[[HardwareProfile], Runner] = runner_for,
) -> MeasurementSetup:
    """Everything a measuring job needs, from names or ready objects.

    `profile`: a profile name or .toml path, or a loaded one. `space`: see
    `space_and_supernet`, as is `supernet` (an object, a checkpoint, or None for a random one
    seeded with `supernet_seed`). `artifacts`: a cache folder or a cache. The runner is made
    last, once everything else loaded (a Ray runner connects to its cluster as it is made);
    by default the one the profile's `target.kind` registers (`bench.runners.base.runner_for`).
    Nothing is written and the device is not checked: a job checks it before its first row.
    """
    if not isinstance(profile, HardwareProfile):
        profile = load_profile(profile)
    space, supernet = space_and_supernet(space, supernet, supernet_seed)
    cache = (
        artifacts
        if isinstance(artifacts, ArtifactCache)
        else artifact_cache(artifacts, seq_len=profile.workload.seq_len)
    )
    return MeasurementSetup(profile, space, supernet, cache, make_runner(profile))
