"""Ray runner: measurements on the device nodes of a Ray cluster (`target.kind = "ray"`, or
`bfnas profile --ray ADDRESS`).

A device node advertises a custom resource named after the profile (the target's
`resource`, else the profile's name) with capacity 1 per device:

    ray start --address HEAD:6379 --resources '{"rpi4-ort-int8": 1}'

The runner places one `DeviceActor` per unit of that resource; an actor holds its unit for
its lifetime and runs one job at a time, so each device measures one subnet at a time. The
actor runs every job in a fresh worker process forked on its node (as `LocalRunner` does
here) and keeps received models by sha256, so a model crosses the network once per device
(not at all when the node can read the driver's file itself: same host or shared storage).
Only the driver writes the store: actors return results. `BFNAS_CPU_AFFINITY=0,1` in a
node's environment pins its actor (and so its workers) to those cores: several "devices"
on one many-core machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import queue
import threading
from pathlib import Path
from typing import Any

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import DeviceUnreachable, Runner
from bfnas.bench.runners.targets import RayTarget
from bfnas.errors import InputError, OperationFailed

AFFINITY_ENV = "BFNAS_CPU_AFFINITY"
BLOB_DIR_ENV = "BFNAS_RAY_BLOBS"  # where a node keeps received models (default below)
DEFAULT_BLOB_DIR = "~/.cache/bfnas/ray-blobs"


def ray_target(profile: HardwareProfile) -> RayTarget:
    """The profile's Ray settings: its target's, or, for a profile of another kind measured
    through a cluster, the defaults with the profile's name as the resource."""
    t = profile.target
    return t if isinstance(t, RayTarget) else RayTarget(resource=profile.name, workdir=t.workdir)


def resource_name(profile: HardwareProfile) -> str:
    """The custom resource the profile's device nodes advertise."""
    return ray_target(profile).resource


def parse_affinity(text: str) -> list[int]:
    """ "0,2-3" -> [0, 2, 3]."""
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            cores.extend(range(int(lo), int(hi) + 1))
        elif part:
            cores.append(int(part))
    return cores


def pin_process(cores: list[int]) -> None:
    """Pin every thread of this process to `cores`. sched_setaffinity(0) pins only the calling
    thread; a Ray worker's own threads (RPC, heartbeats) started before it, and left free, would
    wake up on the cores of the other devices and disturb their measurements."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cores)
    os.sched_setaffinity(0, cores)


class DeviceHost:
    """What a device actor does on its node (plain class: testable without Ray)."""

    def __init__(self, blob_dir: str | None = None) -> None:
        from bfnas.bench.runners.local import LocalRunner

        affinity = os.environ.get(AFFINITY_ENV)
        if affinity:
            pin_process(parse_affinity(affinity))
        self.blobs = Path(blob_dir or os.environ.get(BLOB_DIR_ENV) or DEFAULT_BLOB_DIR).expanduser()
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.runner = LocalRunner()  # its fork server inherits this process's affinity
        self.paths: dict[str, str] = {}  # models read where the driver keeps them

    def info(self) -> dict[str, Any]:
        import socket

        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "affinity": sorted(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
        }

    def has(self, sha256: str, path: str | None = None) -> bool:
        """Whether this node holds the model: received earlier, or readable at the driver's
        `path` with the same hash (a node on the driver's host or a shared file system),
        which saves sending it through the object store."""
        if sha256 in self.paths or (self.blobs / f"{sha256}.onnx").is_file():
            return True
        from bfnas.models.digest import file_sha256

        if path and Path(path).is_file() and file_sha256(Path(path)) == sha256:
            self.paths[sha256] = path
            return True
        return False

    def _model(self, sha256: str) -> str:
        return self.paths.get(sha256) or str(self.blobs / f"{sha256}.onnx")

    def put(self, sha256: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"received model does not hash to {sha256}")
        part = self.blobs / f".part-{sha256}-{os.getpid()}"
        part.write_bytes(data)
        part.replace(self.blobs / f"{sha256}.onnx")

    def measure(self, sha256: str, profile: dict, anchor_sha256: str | None) -> dict:
        """The result as its flat object (`MeasurementResult.to_dict`): what crosses to the
        driver is plain data, read back there as the contract says."""
        import time

        prof = HardwareProfile.model_validate(profile)
        anchor = (self._model(anchor_sha256), anchor_sha256) if anchor_sha256 else None
        started = time.time()
        result = self.runner.run(self._model(sha256), sha256, prof, anchor)
        result.device = {**self.info(), "started": started, "finished": time.time()}
        return result.to_dict()

    def probe(self, profile: dict) -> list[dict]:
        from bfnas.bench.device.probe import local_checks
        from bfnas.bench.device.settings import DeviceSettings

        resolved = HardwareProfile.model_validate(profile).resolved()
        return [c.to_dict() for c in local_checks(DeviceSettings(resolved))]


def _actor_class():
    import ray

    # No CPU reserved: the device resource is what serializes measurements on a node.
    return ray.remote(num_cpus=0, max_restarts=0)(DeviceHost)


def check_reachable(address: str, timeout_s: float) -> None:
    """OperationFailed unless a Ray cluster answers at `address` (HOST:PORT) within about
    `timeout_s`: a plain TCP connection first (refused or silent: said at once), then the
    first question `ray.init` asks the cluster's GCS (its cluster id). Without this,
    `ray.init` retries an unreachable or wrong address for many minutes, warning all along."""
    import socket

    from bfnas.bench.runners.targets import parse_ray_address

    host, port = parse_ray_address(address) or ("", 0)
    where = f"the Ray cluster at {address}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise OperationFailed(
            f"cannot reach {where}: unknown host {host!r} ({exc.strerror})"
        ) from None
    except TimeoutError:
        raise OperationFailed(
            f"cannot reach {where}: no answer within {timeout_s:g} s (target.connect_timeout_s)"
        ) from None
    except ConnectionRefusedError:
        raise OperationFailed(
            f"cannot reach {where}: connection refused (is its head node "
            f"running? ray start --head --port {port})"
        ) from None
    except OSError as exc:
        raise OperationFailed(f"cannot reach {where}: {exc.strerror or exc}") from None
    tls = os.environ.get("RAY_USE_TLS", "0") not in ("", "0")
    if address.startswith("ray://") or tls:
        return  # Ray Client's server, or TLS first: the TCP connection is what is checked
    why = _ask_gcs(host, port, timeout_s)
    if why:
        raise OperationFailed(
            f"cannot reach {where}: something listens on port {port}, but it "
            f"does not answer as a Ray cluster's GCS ({why})"
        )


def _ask_gcs(host: str, port: int, timeout_s: float) -> str | None:
    """Why the GCS at host:port did not tell its cluster id (None: it did, or this Ray has no
    stubs to ask with, and `ray.init` is left to find out)."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # Direct, as Ray's own clients connect (an HTTP proxy in the environment is not theirs).
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            details = (exc.details() or "").strip().splitlines()
            return f"{exc.code().name}: {details[0][:200]}" if details else exc.code().name
    return None


def connect(address: str | None, timeout_s: float = 10.0) -> None:
    """Connect this process to the Ray cluster at `address` (HOST:PORT, or None/"auto" for the
    one Ray finds), or OperationFailed in one line within about `timeout_s`: the address is
    checked first, and Ray's own logging stays off the terminal."""
    import ray

    if ray.is_initialized():
        return
    address = address or "auto"
    target = _auto_address() if address == "auto" else address
    if target is not None:
        check_reachable(target, timeout_s)
    try:
        ray.init(
            address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False
        )
    except Exception as exc:  # ConnectionError, RuntimeError, ...: Ray's, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OperationFailed(
            f"cannot connect to the Ray cluster at {address}: {first[:300]}"
        ) from None


def _auto_address() -> str | None:
    """The HOST:PORT that `address="auto"` means here (RAY_ADDRESS, else the cluster this
    machine started last), OperationFailed when there is none, or None when this Ray cannot
    tell (its helper moved): then `ray.init` finds it itself."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    from bfnas.bench.runners.targets import parse_ray_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "none found"
        raise OperationFailed(
            f"no Ray cluster to connect to (address auto): {first[:300]}"
        ) from None
    except Exception:
        return None
    try:
        return found if found and parse_ray_address(found) else None
    except ValueError:  # a form this check does not know: left to ray.init
        return None


class RayRunner(Runner):
    """Spreads jobs over every device advertising the profile's resource; `run` may be called
    from `lanes` threads at once (the profiling job does that)."""

    def __init__(
        self,
        profile: HardwareProfile,
        address: str | None = None,
        max_devices: int | None = None,
        blob_dir: str | None = None,
        wait_s: float = 60.0,
        shared_files: bool = True,
    ) -> None:
        import ray

        target = ray_target(profile)
        connect(address or target.address, target.connect_timeout_s)
        self.resource = resource_name(profile)
        available = int(ray.cluster_resources().get(self.resource, 0))
        if available < 1:
            raise DeviceUnreachable(
                f"no node of the Ray cluster advertises resource {self.resource!r} "
                f"(start one with: ray start --address ... --resources "
                f"'{{\"{self.resource}\": 1}}')"
            )
        n = min(available, max_devices) if max_devices else available
        cls = _actor_class()
        actors = [cls.options(resources={self.resource: 1}).remote(blob_dir) for _ in range(n)]
        try:
            self.devices = ray.get([a.info.remote() for a in actors], timeout=wait_s)
        except Exception as exc:
            for a in actors:
                ray.kill(a)
            raise DeviceUnreachable(
                f"device actors for {self.resource!r} did not start: {exc}"
            ) from None
        self.lanes = n
        self._idle: queue.Queue = queue.Queue()
        for a in actors:
            self._idle.put(a)
        self._alive = n
        self._lock = threading.Lock()
        self._sent: set[tuple[int, str]] = set()  # (actor id, sha256) known to be on that device
        self._last_loss = ""
        self.shared_files = shared_files  # let nodes read the driver's files where they can

    def run(
        self,
        model: str,
        sha256: str,
        profile: HardwareProfile,
        anchor: tuple[str, str] | None = None,
    ) -> MeasurementResult:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        while True:
            try:
                actor = self._idle.get(timeout=1.0)
            except queue.Empty:
                with self._lock:
                    if self._alive == 0:
                        raise DeviceUnreachable(
                            f"every device advertising {self.resource!r} was lost "
                            f"(last: {self._last_loss})"
                        ) from None
                continue
            try:
                self._ensure(actor, model, sha256)
                if anchor:
                    self._ensure(actor, anchor[0], anchor[1])
                ref = actor.measure.remote(
                    sha256, profile.resolved(), anchor[1] if anchor else None
                )
                # The worker on the node has its own timeout; this one guards the node itself.
                result = ray.get(ref, timeout=profile.measure.timeout_s + 120)
            except (RayActorError, GetTimeoutError) as exc:
                # A lost node is not the subnet's fault: drop the device, run the job elsewhere.
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                with self._lock:
                    self._alive -= 1
                self._last_loss = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue
            self._idle.put(actor)
            return MeasurementResult.from_dict(result)

    @property
    def alive(self) -> int:
        """Devices still in use (a lost node's device is dropped)."""
        with self._lock:
            return self._alive

    def _ensure(self, actor, path: str, sha256: str) -> None:
        import ray

        key = (id(actor), sha256)
        if key in self._sent:
            return
        offered = str(Path(path).resolve()) if self.shared_files else None
        if not ray.get(actor.has.remote(sha256, offered)):
            ray.get(actor.put.remote(sha256, Path(path).read_bytes()))
        self._sent.add(key)

    def probe(self, profile: HardwareProfile) -> list[dict]:
        import ray

        actor = self._idle.get()
        try:
            return ray.get(actor.probe.remote(profile.resolved()), timeout=120)
        finally:
            self._idle.put(actor)

    def close(self) -> None:
        import ray

        while True:
            try:
                actor = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_runner(profile: HardwareProfile) -> RayRunner:
    """The runner of a `ray` target (`registry.RUNNER_KINDS`), or InputError without the ray
    package."""
    if not _ray_installed():
        raise InputError(
            profile.source,
            "target.kind",
            "ray targets need the ray package (pip install 'bfnas[ray]')",
        )
    return RayRunner(profile)


def ray_probe(profile: HardwareProfile) -> list[dict]:
    """`hw check` of a Ray target (`registry.RUNNER_KINDS`): ray is installed, the cluster is
    reachable, devices advertise the resource, and each device's own check (run in its
    actor)."""
    if not _ray_installed():
        return [
            {
                "name": "ray",
                "ok": False,
                "detail": "python package ray is not installed (pip install 'bfnas[ray]')",
            }
        ]
    import ray

    target = ray_target(profile)
    addr = target.address
    try:
        connect(addr, target.connect_timeout_s)
    except Exception as exc:
        return [
            {
                "name": "ray",
                "ok": False,
                "detail": f"cannot connect to {addr or 'auto'}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            }
        ]
    checks = [
        {"name": "ray", "ok": True, "detail": f"ray {ray.__version__}, cluster at {addr or 'auto'}"}
    ]
    res = resource_name(profile)
    try:
        runner = RayRunner(profile, addr)
    except DeviceUnreachable as exc:
        return [*checks, {"name": f"resource {res}", "ok": False, "detail": str(exc)}]
    try:
        checks.append(
            {
                "name": f"resource {res}",
                "ok": True,
                "detail": f"{runner.lanes} device(s): "
                + ", ".join(f"{d['host']} cores {d['affinity']}" for d in runner.devices),
            }
        )
        remote = runner.probe(profile)
        return checks + [{**c, "name": f"device {c['name']}"} for c in remote]
    finally:
        runner.close()
