"""SSH runner: measurements on a device reached over SSH (`target.kind = "ssh"`).

Each job uploads the model to the device unless a file with its sha256 is already there,
then has it measured by the device's own Python running the device code the host ships
(`device_code`: the device package as a zip, sent by hash like a model, so the device needs
only Python and its runtime): a fork server (`bench.device.forkserver`) started
once over a long-lived ssh session forks one fresh worker process per measurement, as
locally, so a device pays its interpreter and ONNX Runtime imports (seconds on a small
board) once per job rather than once per subnet. The OpenSSH client does the transport, so
the user's ssh setup (agents, jump hosts in ~/.ssh/config) applies; connections are
multiplexed over one master connection per runner, which makes the per-job round trips cheap.

Host keys are checked (`StrictHostKeyChecking=yes`, the profile's known_hosts file or the
user's); every remote argument is quoted. A connection that fails or drops is retried with
backoff and the same job is run again; when the device stays unreachable the runner raises
`DeviceUnreachable`, which stops the job with every finished measurement stored, so a rerun
resumes without duplicating anything.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bfnas.bench.device.contract import MeasurementResult, failed
from bfnas.bench.device.probe import OLDEST_PYTHON
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import (
    ConnectionLost,
    DeviceUnreachable,
    Retrying,
    Runner,
    T,
    job_json,
)
from bfnas.bench.runners.device_code import EPHEMERAL_RUN, device_code
from bfnas.bench.runners.forkserver_client import ForkServerClient, ForkServerLost, forked_result
from bfnas.bench.runners.targets import LocalTarget, SshTarget

# ssh failures that waiting will not cure: retrying them only delays the error.
PERMANENT = (
    "Host key verification failed",
    "Permission denied",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
)


def remote_path(path: str) -> str:
    """`path` quoted for the remote shell, keeping a leading `~/` meaning the home folder."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class SshRunner(Runner):
    """Runs jobs on one SSH device. Not thread-safe: one device measures one job at a time."""

    lanes = 1

    def __init__(
        self,
        target: SshTarget,
        retries: int | None = None,
        backoff_s: float | None = None,
        ssh: str = "ssh",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if target.kind != "ssh" or not target.host:
            raise ValueError("SshRunner needs an ssh target with a host")
        self.target = target
        self.retries = target.retries if retries is None else retries
        self.backoff_s = target.retry_backoff_s if backoff_s is None else backoff_s
        self.ssh = ssh
        self.uploads = 0  # files sent, models and device code (the rest were there already)
        self._retrying = Retrying(self.retries, self.backoff_s, self._gave_up, sleep)
        self._present: set[str] = set()  # hashes known to be on the device
        self._server: ForkServerClient | None = None
        self._server_log = None
        # Control sockets need a short path (108 bytes on Linux): not under a deep tmp dir.
        self._control = tempfile.mkdtemp(
            prefix="bfnas-ssh-", dir="/tmp" if Path("/tmp").is_dir() else None
        )

    # -- transport ---------------------------------------------------------------------------
    def ssh_argv(self, command: str) -> list[str]:
        t = self.target
        argv = [
            self.ssh,
            "-p",
            str(t.port),
            "-o",
            "BatchMode=yes",
            "-o",
            f"StrictHostKeyChecking={'accept-new' if t.accept_new_host_key else 'yes'}",
            "-o",
            f"ConnectTimeout={max(1, math.ceil(t.connect_timeout_s))}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control}/%C",
            "-o",
            "ControlPersist=120",
        ]
        if t.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(t.known_hosts)}"]
        if t.identity_file:
            argv += ["-i", os.path.expanduser(t.identity_file), "-o", "IdentitiesOnly=yes"]
        if t.user:
            argv += ["-l", t.user]
        return [*argv, "--", t.host, command]

    def _call(
        self, command: str, stdin: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """Run `command` on the device once; `ConnectionLost` when ssh itself failed (255)."""
        try:
            proc = subprocess.run(
                self.ssh_argv(command),
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ConnectionLost(f"no answer within {timeout:.0f} s") from None
        if proc.returncode == 255:
            err = proc.stderr.decode(errors="replace")
            why = next((p for p in PERMANENT if p in err), None)
            if why:
                raise DeviceUnreachable(
                    f"{self.target.host}:{self.target.port}: {why} ({_last_line(proc.stderr)})"
                )
            raise ConnectionLost(_last_line(proc.stderr) or "ssh exited 255")
        return proc

    @property
    def retried(self) -> int:
        """Calls repeated after a failed or dropped connection."""
        return self._retrying.retried

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        return self._retrying(what, fn)

    def _gave_up(self, what: str, attempts: int, last: str) -> str:
        t = self.target
        return (
            f"{t.user + '@' if t.user else ''}{t.host}:{t.port}: {what} failed "
            f"{attempts} times; last: {last}"
        )

    def call(self, command: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """`command` on the device, with the runner's retries."""
        return self._with_retries(command.split()[0], lambda: self._call(command, timeout=timeout))

    # -- files -------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> str:
        return f"{self.target.workdir.rstrip('/')}/blobs/{sha256}.onnx"

    def ensure(self, local: str, sha256: str) -> str:
        """The device's path of `local` (content `sha256`), uploading it when missing."""
        remote = self.blob_path(sha256)
        if sha256 not in self._present:
            self._store(remote, lambda: Path(local).read_bytes(), "the model")
            self._present.add(sha256)
        return remote

    def ensure_code(self) -> str:
        """The device's path of the device code this host ships, uploading it when missing."""
        code = device_code()
        remote = f"{self.target.workdir.rstrip('/')}/code/{code.file_name}"
        if code.sha256 not in self._present:
            self._store(remote, lambda: code.data, "bfnas's device code")
            self._present.add(code.sha256)
        return remote

    def _store(self, remote: str, data: Callable[[], bytes], what: str) -> None:
        """`remote` on the device, written from `data()` unless a file of that name (which
        carries its hash) is there already."""
        folder = remote.rsplit("/", 1)[0]
        part = f"{remote}.part-{os.getpid()}"
        # Present already (by name = hash) or written to a part file and renamed, so an
        # interrupted upload never leaves a file that looks complete.
        command = (
            f"mkdir -p {remote_path(folder)} && if [ -f {remote_path(remote)} ]; then echo "
            "present; "
            f"else cat > {remote_path(part)} && mv {remote_path(part)} {remote_path(remote)} "
            f"&& echo uploaded; fi"
        )
        payload = data()

        def send() -> str:
            proc = self._call(command, stdin=payload, timeout=self.target.connect_timeout_s + 600)
            out = proc.stdout.decode(errors="replace").strip()
            if proc.returncode != 0 or out not in ("present", "uploaded"):
                raise DeviceUnreachable(
                    f"{self.target.host}: cannot store {what} in "
                    f"{self.target.workdir}: {_last_line(proc.stderr) or out}"
                )
            return out

        if self._with_retries("upload", send) == "uploaded":
            self.uploads += 1

    def forget(self, sha256: str) -> None:
        """Drop a file from the device (after its hash did not match there)."""
        self._present.discard(sha256)
        self.call(
            f"rm -f {remote_path(self.blob_path(sha256))}",
            timeout=self.target.connect_timeout_s + 30,
        )

    # -- jobs --------------------------------------------------------------------------------
    def _fork_server(self) -> ForkServerClient:
        if self._server is None:
            t = self.target
            code = remote_path(self.ensure_code())
            command = f"OPENBLAS_NUM_THREADS=1 exec {shlex.quote(t.python)} {code} forkserver"
            # The device's stderr, for error lines; kept open as long as the server runs.
            self._server_log = tempfile.TemporaryFile()  # noqa: SIM115
            # Starting it imports numpy and ONNX Runtime on the device: slow on a small board.
            self._server = ForkServerClient(
                self.ssh_argv(command),
                start_timeout=t.connect_timeout_s + 60,
                stderr=self._server_log,
            )
        return self._server

    @property
    def active_pid(self) -> int | None:
        """The device-side pid of the worker measuring now, if any."""
        return self._server.active_pid if self._server else None

    def run(
        self,
        model: str,
        sha256: str,
        profile: HardwareProfile,
        anchor: tuple[str, str] | None = None,
    ) -> MeasurementResult:
        for attempt in (1, 2):
            remote_model = self.ensure(model, sha256)
            remote_anchor = (self.ensure(anchor[0], anchor[1]), anchor[1]) if anchor else None
            result = self._measure(remote_model, sha256, profile, remote_anchor)
            mismatch = "does not match" in (result.reason or "")
            if not (mismatch and attempt == 1):
                return result
            # A file damaged on the device: send it again once.
            self.forget(sha256)
            if anchor:
                self.forget(anchor[1])
        return result

    def _measure(
        self, model: str, sha256: str, profile: HardwareProfile, anchor: tuple[str, str] | None
    ) -> MeasurementResult:
        timeout = profile.measure.timeout_s
        job = job_json(model, sha256, profile, anchor)

        def once() -> MeasurementResult:
            server = self._fork_server()
            try:
                return forked_result(server.run(job, timeout), timeout, " (on the device)")
            except ForkServerLost as exc:
                if server.returncode == 255:  # ssh's own failure: the connection
                    raise ConnectionLost(self._server_error() or str(exc)) from None
                if exc.started:
                    # The device's server died under a job (the OOM killer, say): that job
                    # failed, and a new server starts with the next one.
                    return failed(f"device fork server died: {self._server_error() or exc}")
                error = self._server_error()
                raise DeviceUnreachable(
                    f"{self.target.host}: bfnas's device code did not start under "
                    f"{self.target.python}{python_hint(error)}: {error or exc}"
                ) from None

        result = self._with_retries("measurement", once)
        result.device = {"host": self.target.host, "port": self.target.port}
        result.device_code = device_code().sha256
        return result

    def probe(self, profile: HardwareProfile) -> list[dict]:
        """The device's checks of `profile` (`bench.runners.usable.require_usable`). Reaching
        the device gets the runner's retries first: one that stays unreachable stops the job as
        DeviceUnreachable, as a measurement would."""
        t = self.target
        self._with_retries("ssh", lambda: self._call("true", timeout=t.connect_timeout_s + 10))
        return remote_probe(self, profile)

    def _server_error(self) -> str:
        if self._server_log is None:
            return ""
        self._server_log.seek(0)
        return _last_line(self._server_log.read())

    def close(self) -> None:
        """Stop the device's fork server, end the master connection, remove its socket folder."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._server_log is not None:
            self._server_log.close()
            self._server_log = None
        argv = self.ssh_argv("true")
        # The options, then the control command, then the host: `-O` must come before `--`.
        control = [*argv[: argv.index("--")], "-O", "exit", "--", self.target.host]
        with contextlib.suppress(Exception):
            subprocess.run(control, capture_output=True, timeout=10)
        shutil.rmtree(self._control, ignore_errors=True)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def ssh_runner(profile: HardwareProfile) -> SshRunner:
    """The runner of an `ssh` target (`registry.RUNNER_KINDS`)."""
    return SshRunner(profile.target)


def ssh_probe(profile: HardwareProfile) -> list[dict]:
    """`hw check` of an `ssh` target (`registry.RUNNER_KINDS`): the device runs the check
    itself, through its own Python. Tried once: a check reports an unreachable device
    rather than waiting through a job's retries."""
    runner = SshRunner(profile.target, retries=0)
    try:
        return remote_probe(runner, profile)
    finally:
        runner.close()


def remote_probe(runner: SshRunner, profile: HardwareProfile) -> list[dict]:
    """The device's own `hw check` for the profile (as a local target there), as dicts;
    the first entries say whether ssh and the device's Python work at all."""
    t = runner.target
    checks: list[dict] = []
    try:
        proc = runner._call("echo ok", timeout=t.connect_timeout_s + 10)
    except (ConnectionLost, DeviceUnreachable) as exc:
        return [{"name": "ssh", "ok": False, "detail": f"{t.host}:{t.port}: {exc}"}]
    checks.append(
        {"name": "ssh", "ok": True, "detail": f"{t.host}:{t.port} reached, host key verified"}
    )
    local = profile.model_copy(update={"target": LocalTarget(workdir=t.workdir)}).resolved()
    code = device_code()
    # The code runs from a temporary file that is deleted again: a check leaves the device as
    # it found it (a job keeps the code by its hash, as it keeps models).
    command = (
        f"{shlex.quote(t.python)} -c {shlex.quote(EPHEMERAL_RUN)} {len(code.data)} probe --json -"
    )
    try:
        proc = runner._call(
            command, stdin=code.data + json.dumps(local).encode(), timeout=t.connect_timeout_s + 60
        )
    except (ConnectionLost, DeviceUnreachable) as exc:
        return [*checks, {"name": "device probe", "ok": False, "detail": str(exc)}]
    try:
        remote = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = _last_line(proc.stderr)
        return [
            *checks,
            {
                "name": "device python",
                "ok": False,
                "field": "target.python",
                "detail": f"{t.python}: {err or 'no output'}{python_hint(err)}",
            },
        ]
    checks.append(
        {
            "name": "device code",
            "ok": True,
            "detail": f"bfnas device code {device_code().sha256[:16]} runs under {t.python}",
        }
    )
    return checks + [{**c, "name": f"device {c['name']}"} for c in remote["checks"]]


def python_hint(error: str) -> str:
    """What a device Python's start-up error says to do, or nothing."""
    oldest = ".".join(map(str, OLDEST_PYTHON))
    if "No module named" in error:
        return " (install what it names for that Python on the device)"
    if "SyntaxError" in error or "future feature" in error:
        return f" (bfnas's device code needs Python {oldest} or newer)"
    if "not found" in error or "No such file" in error:
        return " (target.python names no Python on the device)"
    return ""


def _last_line(data: bytes) -> str:
    lines = [ln for ln in data.decode(errors="replace").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
