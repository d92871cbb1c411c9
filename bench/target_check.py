"""`bfnas hw check` of a profile's target, wherever it is: this machine, an SSH device (the
device runs `bench.probe` itself, through its own Python), or the devices of a Ray cluster.

Apart from `bench.probe` because it reaches the runners, which run `bench.probe`'s checks on
their devices: kept in one module, that was an import cycle.
"""

from __future__ import annotations

import importlib.util

from bfnas.bench.probe import Check, local_checks
from bfnas.bench.profile import HardwareProfile


def probe(profile: HardwareProfile) -> list[Check]:
    """Is the profile usable? Local targets are checked here; SSH devices run this same
    check on the device (through the device's Python); Ray devices in one of their actors."""
    kind = profile.target.kind
    if kind == "ssh":
        from bfnas.bench.ssh_runner import SshRunner, remote_probe

        runner = SshRunner(profile.target, retries=0)
        try:
            return [Check.from_dict(c) for c in remote_probe(runner, profile)]
        finally:
            runner.close()
    if kind == "ray":
        if importlib.util.find_spec("ray") is None:
            return [Check("ray", False, "python package ray is not installed (pip install 'bfnas[ray]')")]
        from bfnas.bench.ray_runner import ray_probe

        return [Check.from_dict(c) for c in ray_probe(profile)]
    return local_checks(profile)
