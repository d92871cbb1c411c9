"""Where a device is: the `[target]` table of a profile, one settings class per runner kind.

`kind` picks the class (`registry.RUNNER_KINDS` names each kind's), so an SSH target has
SSH's settings and nothing of Ray's, and a new kind of device brings its own class rather
than fields in a shared one. Defaults are written here, once.

A profile's hash (`HardwareProfile.hash`) reads a target through `LEGACY_TARGET`: the flat
table every target was before each kind had its own, so a profile measured then keeps its
hash, and its store its measurements (a golden test holds the shipped profiles to theirs).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PositiveFloat = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(gt=0, lt=65536)]

# The cache folder on the device: models and the device code by sha256, TensorRT engines.
DEFAULT_WORKDIR = "~/.cache/bfnas"


class TargetSettings(BaseModel):
    """What every kind's settings are: strict (unknown keys refused), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


class LocalTarget(TargetSettings):
    """This machine."""

    kind: Literal["local"] = "local"
    workdir: str = DEFAULT_WORKDIR


class SshTarget(TargetSettings):
    """A device reached over SSH, running the device code the host ships with its own Python."""

    kind: Literal["ssh"] = "ssh"
    host: str
    user: str | None = None
    port: Port = 22
    identity_file: str | None = None
    known_hosts: str | None = None
    # Host keys are checked against known_hosts; trusting a first-seen key is opt-in.
    accept_new_host_key: bool = False
    # A failed or dropped connection is tried again this often, waiting 1x, 2x, 4x... backoff.
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    retry_backoff_s: PositiveFloat = 1.0
    python: str = "python3"
    workdir: str = DEFAULT_WORKDIR
    # SSH's ConnectTimeout.
    connect_timeout_s: PositiveFloat = 10.0

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value:
            raise ValueError("an ssh target needs host")
        return value


class RayTarget(TargetSettings):
    """A node of a Ray cluster advertising `resource` (the profile's name by default)."""

    kind: Literal["ray"] = "ray"
    resource: str
    # The cluster (HOST:PORT, ray://HOST:PORT or auto); None: the cluster Ray finds itself.
    address: str | None = None
    # How long the cluster's address may take to answer.
    connect_timeout_s: PositiveFloat = 10.0
    workdir: str = DEFAULT_WORKDIR

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "a ray target needs resource (the custom resource its node advertises)"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ray_address(value)
        return value


class AdbTarget(TargetSettings):
    """An Android phone reached through the adb client, running the native harness the user
    pushed there (ONNX Runtime's `onnxruntime_perf_test`; `runners.adb`)."""

    kind: Literal["adb"] = "adb"
    # The phone's serial as `adb devices` lists it.
    serial: str
    # The adb client: a name on PATH or a path (Debian: `apt-get install adb`).
    adb: str = "adb"
    # Where models are kept on the phone, by hash (/data/local/tmp is the shell user's).
    workdir: str = "/data/local/tmp/bfnas"
    # The phone's onnxruntime_perf_test, built for Android and pushed there by the user.
    harness: str = "/data/local/tmp/onnxruntime_perf_test"
    # How long a quick adb command may take (adb has no connect timeout of its own).
    connect_timeout_s: PositiveFloat = 10.0
    # A failed or dropped connection is tried again this often, waiting 1x, 2x, 4x... backoff.
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    retry_backoff_s: PositiveFloat = 1.0

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "an adb target needs serial: the phone's serial as `adb devices` lists it"
            )
        return value

    @field_validator("workdir", "harness")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path on the phone")
        return value


def parse_ray_address(text: str) -> tuple[str, int] | None:
    """A Ray cluster's address as (host, GCS port), or None for `auto` (the cluster this
    machine runs or RAY_ADDRESS names: Ray finds it). ValueError says what is wrong (the
    caller echoes the text); only the form is checked, not whether anything answers."""
    if text == "auto":
        return None
    rest = text.removeprefix("ray://")  # Ray Client: the same host:port form
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [::1]:6379
        host = host[1:-1]
    if not sep or not host or any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError("not a Ray address: give HOST:PORT (e.g. 127.0.0.1:6379) or auto")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not a Ray address: the port must be a number from 1 to 65535")
    return host, int(port)


# Every target before each kind had its own settings: one flat table, these defaults. The
# hash of a profile reads its target over these, so it is what it was then.
LEGACY_TARGET: dict[str, object] = {
    "kind": "local",
    "host": None,
    "user": None,
    "port": 22,
    "identity_file": None,
    "known_hosts": None,
    "accept_new_host_key": False,
    "retries": 4,
    "retry_backoff_s": 1.0,
    "python": "python3",
    "workdir": DEFAULT_WORKDIR,
    "connect_timeout_s": 10.0,
    "address": None,
    "resource": None,
}
# Target settings that say how to connect, not what is measured: left out of the hash.
CONNECTION_POLICY = ("accept_new_host_key", "retries", "retry_backoff_s")


def hashed_target(target: TargetSettings) -> dict:
    """The target as a profile's hash reads it: over the legacy flat table, the connection
    policy left out."""
    out = {**LEGACY_TARGET, **target.model_dump(mode="json")}
    for key in CONNECTION_POLICY:
        out.pop(key, None)
    return out
