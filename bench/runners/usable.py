"""Is a profile usable where its runner measures? `bfnas hw check` of a profile's target,
wherever it is: this machine, an SSH device (the device runs `bench.device.probe` itself,
through its own Python), or the devices of a Ray cluster.

The same checks guard every job that measures (`bfnas profile`, `bfnas bench`, a search's
verification): `require_usable` runs them where the runner measures and refuses an unusable
profile in one line naming its file and field, before anything is written. Without it an
unknown provider or an unusable core is found by each worker in turn, stored as a failed
measurement, and the job "succeeds" with nothing measured.
"""

from __future__ import annotations

from bfnas.bench.device.backends import backend_named
from bfnas.bench.device.probe import Check
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import Runner
from bfnas.bench.runners.registry import runner_kind
from bfnas.errors import InputError, OperationFailed


def probe(profile: HardwareProfile) -> list[Check]:
    """Is the profile usable? Checked where its runner measures, as its `target.kind`
    registers (`registry`): local targets here; SSH devices run this same check on the device
    (through the device's Python); Ray devices in one of their actors."""
    checks = runner_kind(profile.target.kind).load_probe()(profile)
    return [Check.from_dict(c) for c in checks]


def refusal(profile: HardwareProfile, checks: list[Check]) -> InputError | OperationFailed | None:
    """Why the profile cannot be measured where `checks` ran, as the one error to raise (None:
    usable). A failure blamed on a field is bad input (the file and the field, exit 2); one
    that is not (a device that stopped answering mid-check) is work that cannot go on."""
    failed = [c for c in checks if not c.ok]
    if not failed:
        return None
    first = failed[0]
    if first.field is None:
        return OperationFailed(
            f"{profile.source}: profile {profile.name} cannot be checked: "
            f"{first.name}: {first.detail}"
        )
    unavailable_as = backend_named(profile.runtime.backend).unavailable_as
    if first.field == "runtime.backend" and unavailable_as:
        # Everything the backend lacks here at once (TensorRT: a GPU, its driver, the Python
        # modules), as its registration asks.
        missing = "; ".join(c.detail for c in failed if c.field == first.field)
        return InputError(
            profile.source,
            first.field,
            f"not usable here: {unavailable_as} is not available ({missing})",
        )
    # Every failure in the one line (a device lacking numpy lacks onnxruntime too, often):
    # one round of fixing, not one per rerun.
    found = "; ".join(f"{c.name}: {c.detail}" for c in failed if c.field is not None)
    return InputError(profile.source, first.field, f"not usable here: {found}")


def require_usable(profile: HardwareProfile, runner: Runner) -> None:
    """Refuse `profile` unless the device `runner` measures on passes its checks: what
    `bfnas hw check` reports, run where the measurements will run (here, over SSH, in a
    Ray device's actor). Call it before anything is written. A runner that measures nowhere
    real (a test's scripted one) has no checks (`Runner.probe`'s default)."""
    error = refusal(profile, [Check.from_dict(c) for c in runner.probe(profile)])
    if error is not None:
        raise error
