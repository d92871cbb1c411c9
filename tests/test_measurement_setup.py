"""`open_setup`, the one place a measuring job is wired: what it builds from names, what it
refuses, that it makes the runner last and writes nothing; `measure_subnet`'s refusals."""

from __future__ import annotations

import tomllib

import pytest
from conftest import FAST_PROFILE

from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.jobs.context import MeasurementSetup, open_setup
from bfnas.bench.jobs.profiling import ProfileJob, measure_subnet
from bfnas.bench.runners.base import Runner
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.loop import DeviceVerifier

# A provider no ONNX Runtime has: the device's checks refuse the profile.
NO_PROVIDER = FAST_PROFILE.replace(
    "[runtime]\n", '[runtime]\nproviders = ["NoSuchExecutionProvider"]\n'
)


class ScriptedRunner(Runner):
    """Stands for a remote device's runner: records nothing but that it was made."""

    lanes = 1

    def __init__(self) -> None:
        self.closed = False

    def run(self, *args, **kwargs) -> dict:
        raise AssertionError("nothing should be measured here")

    def close(self) -> None:
        self.closed = True


def test_from_names_it_builds_what_the_jobs_need_and_writes_nothing(tmp_path, tiny_space_file):
    # seq_len 64, not the cache's default 128: the cache must check fidelity at the profile's.
    hw = tmp_path / "short.toml"
    hw.write_text(FAST_PROFILE + "[workload]\nseq_len = 64\n")
    setup = open_setup(str(hw), str(tiny_space_file), artifacts=tmp_path / "art", supernet_seed=3)
    try:
        assert setup.profile.name == "test-cpu-int8" and setup.profile.workload.seq_len == 64
        assert setup.space.name == "tiny"
        assert setup.supernet.source == {"kind": "random", "seed": 3}
        setup.supernet.check_space(setup.space)  # wide and deep enough for every member
        assert setup.cache.root == tmp_path / "art" and setup.cache.fidelity.seq_len == 64
        assert isinstance(setup.runner, LocalRunner)
        assert setup.runner.server.proc is None  # no worker started
        assert not (tmp_path / "art").exists()  # nothing exported
    finally:
        setup.close()


def test_ready_objects_are_used_as_they_are(tmp_path, tiny_space, tiny_supernet):
    profile = parse_profile(tomllib.loads(FAST_PROFILE), "<fast>")
    cache = ArtifactCache(tmp_path / "mine", fidelity=FidelitySettings(seq_len=32))
    runner = ScriptedRunner()
    with open_setup(
        profile, tiny_space, artifacts=cache, supernet=tiny_supernet, make_runner=lambda p: runner
    ) as setup:
        assert setup.profile is profile and setup.space is tiny_space
        assert setup.supernet is tiny_supernet and setup.cache is cache and setup.runner is runner
    assert runner.closed  # leaving the block closed the runner


def test_the_runner_is_the_one_the_target_kind_registers(tmp_path, tiny_space, tiny_supernet):
    from bfnas.bench.runners.ssh import SshRunner

    ssh = parse_profile(
        {**tomllib.loads(FAST_PROFILE), "target": {"kind": "ssh", "host": "device"}}, "<ssh>"
    )
    # By default the registry's runner for the kind (an SSH runner connects on its first job).
    setup = open_setup(ssh, tiny_space, artifacts=tmp_path / "art", supernet=tiny_supernet)
    assert isinstance(setup.runner, SshRunner) and setup.runner.target.host == "device"
    setup.close()
    asked = []
    setup = open_setup(
        ssh,
        tiny_space,
        artifacts=tmp_path / "art",
        supernet=tiny_supernet,
        make_runner=lambda p: asked.append(p) or ScriptedRunner(),
    )
    assert asked == [ssh] and isinstance(setup.runner, ScriptedRunner)


def test_the_runner_is_made_last(tmp_path, fast_profile_file):
    # A Ray runner connects to its cluster as it is made: bad input is refused before that.
    asked = []
    with pytest.raises(InputError):
        open_setup(
            str(fast_profile_file),
            str(tmp_path / "no-such-space.toml"),
            artifacts=tmp_path / "art",
            make_runner=lambda p: asked.append(p) or ScriptedRunner(),
        )
    assert asked == []


def test_measure_subnet_refuses_before_it_exports(tmp_path, tiny_space, tiny_supernet):
    fast = parse_profile(tomllib.loads(FAST_PROFILE), "<fast>")
    unusable = parse_profile(tomllib.loads(NO_PROVIDER), str(tmp_path / "npu.toml"))
    inside = SubnetConfig.uniform(1, 64, 2, 64, 128)
    cases = [
        (fast, SubnetConfig.uniform(1, 768, 12, 768, 128), ("cfg", "hidden")),
        (unusable, inside, (str(tmp_path / "npu.toml"), "runtime.providers")),
    ]
    for profile, cfg, (where, field) in cases:
        cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
        setup = MeasurementSetup(profile, tiny_space, tiny_supernet, cache, LocalRunner())
        with pytest.raises(InputError) as err:
            measure_subnet(setup, cfg)
        assert (err.value.where, err.value.field) == (where, field)
        assert setup.runner.server.proc is None and not (tmp_path / "arts").exists()


def test_the_jobs_take_keyword_arguments_only(tmp_path, tiny_space, tiny_supernet):
    # Eleven positional values were easy to pass in the wrong order; now each is named.
    profile = parse_profile(tomllib.loads(FAST_PROFILE), "<fast>")
    setup = MeasurementSetup(
        profile, tiny_space, tiny_supernet, ArtifactCache(tmp_path / "a"), ScriptedRunner()
    )
    with LatencyStore(tmp_path / "s.db") as store:
        with pytest.raises(TypeError):
            ProfileJob(setup, store, 2)  # type: ignore[misc]
        with pytest.raises(TypeError):
            DeviceVerifier(setup, store)  # type: ignore[misc]
        assert ProfileJob(setup=setup, store=store, samples=2).setup is setup
