"""adb runner: measurements on an Android phone over adb (`target.kind = "adb"`).

The phone has no Python: it runs ONNX Runtime's own benchmark, `onnxruntime_perf_test`,
built for Android by the user and pushed to it (`target.harness`). Each job pushes the model
to the phone unless a file with its sha256 is already there, runs the harness on it with the
profile's threads, provider and workload shape, and maps what the harness prints onto the
result dict the other runners return (`perf_test`: the mapping, and what it cannot give).

The transport is the Android SDK's `adb` client (`target.adb`), so the user's adb setup
applies (a server already running, a phone over USB or `adb connect` over Wi-Fi). Every
command runs through `adb -s SERIAL shell COMMAND`, which hands the device's `sh` one string:
every remote argument is quoted. A push goes to a part file that is renamed once its hash is
checked on the phone, so an interrupted push never leaves a file that looks complete. adb
failures that mean the phone went away (unplugged, offline, the connection closed) are
retried with backoff, as the SSH runner retries (`retries`, waiting 1x, 2x, 4x...
`retry_backoff_s`); a phone that stays away raises `DeviceUnreachable`, which stops the job
with every finished measurement stored. An unauthorized phone is refused at once: waiting
does not answer the USB-debugging prompt.

CPU affinity: where the profile names cores, the harness runs under Android's toybox
`taskset HEXMASK` (the whole process, every ONNX Runtime thread, on those cores: what the
Python worker's `sched_setaffinity` does), not under the harness's own `-T` per-thread
affinities, which place only the pool's extra threads and differ between versions.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bfnas.bench.device.contract import MeasurementResult, failed
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.runners.base import ConnectionLost, DeviceUnreachable, Retrying, Runner, T
from bfnas.bench.runners.perf_test import (
    BATCH_DIM,
    PROVIDER_FLAGS,
    SEQUENCE_DIM,
    exit_description,
    parse_per_run_file,
    parse_perf_test_output,
    perf_test_argv,
    provider_flag,
    tail,
)
from bfnas.bench.runners.targets import AdbTarget
from bfnas.errors import InputError

# What the harness's exit status is printed after, so that it is known whatever the phone's
# adb version (before Android 7 `adb shell` always exits 0).
EXIT_MARK = "bfnas-harness-exit:"

# adb's own messages (its client and server: transport.cpp, file_sync_client.cpp) when the
# phone is not there now: a reboot, a loose cable, a Wi-Fi connection that dropped. Retried.
GONE = re.compile(
    r"no devices/emulators found|device '.*' not found|device offline|error: closed"
    r"|device still (?:connecting|authorizing)|no response|failed to read copy response"
    r"|connection reset|cannot connect to daemon|protocol fault|failed to get feature set",
    re.IGNORECASE,
)
# adb's messages that waiting will not cure: retrying them only delays the error.
PERMANENT = (
    ("device unauthorized", "unauthorized: accept the USB debugging prompt on the phone"),
    ("no permissions", "no permissions on the USB device (udev rules, plugdev group)"),
    ("insufficient permissions", "no permissions on the USB device (udev rules, plugdev group)"),
)
# What the phone's `sh` or linker says of a binary that cannot run there (wrong ABI, a
# missing libonnxruntime.so).
CANNOT_START = (
    "CANNOT LINK EXECUTABLE",
    "not executable",
    "Exec format error",
    "cannot execute",
    # An Abseil-flags build (ONNX Runtime 1.23+) made without ABSL_FLAGS_STRIP_NAMES=0: on
    # Android, Abseil disables command-line flags by default, so no flag would be read.
    "command line flags are disabled",
)
# `adb devices -l` states that waiting will not cure.
PERMANENT_STATES = ("unauthorized", "no permissions")
# The device facts recorded with every measurement (`environment`), read once per runner.
PROPS = (
    ("model", "ro.product.model"),
    ("manufacturer", "ro.product.manufacturer"),
    ("android_release", "ro.build.version.release"),
    ("sdk", "ro.build.version.sdk"),
    ("soc_manufacturer", "ro.soc.manufacturer"),
    ("soc_model", "ro.soc.model"),
    ("board_platform", "ro.board.platform"),
    ("hardware_prop", "ro.hardware"),
    ("abi", "ro.product.cpu.abi"),
)


class _ConnectionLost(ConnectionLost):
    """adb could not reach the phone this time (retried)."""


class _NoAnswer(_ConnectionLost):
    """adb did not return within its time: the phone went away, or its command still runs."""


def adb_settings(profile: HardwareProfile) -> AdbTarget:
    """The adb target of `profile` (validated by the profile's schema)."""
    target = profile.target
    if not isinstance(target, AdbTarget):
        raise InputError(profile.source, "target.kind", "an adb runner needs an adb target")
    return target


@dataclass(frozen=True)
class AttachedDevice:
    """One line of `adb devices -l`: a serial, its state ("device" when usable) and the
    `key:value` facts adb adds (product, model, device, usb, transport_id)."""

    serial: str
    state: str
    info: dict = field(default_factory=dict)


def parse_devices(text: str) -> dict[str, AttachedDevice]:
    """`adb devices -l`'s listing by serial. A line is `SERIAL STATE [key:value ...]`; the
    state may have spaces ("no permissions (...); see [URL]"), the facts never do."""
    devices: dict[str, AttachedDevice] = {}
    for line in text.replace("\r", "").splitlines():
        if not line.strip() or line.startswith(("List of devices", "*", "adb ")):
            continue
        words = line.split()
        serial, rest = words[0], words[1:]
        state_words, info = [], {}
        for word in rest:
            m = re.fullmatch(r"([a-z_]+):(\S+)", word)
            if m and state_words:
                info[m.group(1)] = m.group(2)
            else:
                state_words.append(word)
        devices[serial] = AttachedDevice(serial, " ".join(state_words) or "unknown", info)
    return devices


def _adb_error(proc: subprocess.CompletedProcess) -> str | None:
    """adb's own error line when adb itself failed (not the command it ran), else None.

    adb prints its errors as `error: ...` or `adb: error: ...` (Debian's adb 29 puts a
    push's on stdout); a remote command's own failure exits non-zero without them."""
    if proc.returncode == 0:
        return None
    text = (proc.stderr or b"").decode(errors="replace") + "\n"
    text += (proc.stdout or b"").decode(errors="replace")
    for line in text.replace("\r", "").splitlines():
        if (
            line.startswith(("error:", "adb: error:", "adb: "))
            or "cannot connect to daemon" in line
        ):
            return line.strip()
    return None


class AdbTransport:
    """Commands and files on one phone through the adb client. Not thread-safe: one phone
    runs one job at a time."""

    def __init__(
        self,
        settings: AdbTarget,
        retries: int | None = None,
        backoff_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.retries = settings.retries if retries is None else retries
        self.backoff_s = settings.retry_backoff_s if backoff_s is None else backoff_s
        self.uploads = 0  # models pushed (the rest were on the phone already)
        self._retrying = Retrying(self.retries, self.backoff_s, self._gave_up, sleep)
        self._present: set[str] = set()  # hashes known to be on the phone

    # -- adb ---------------------------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return [self.settings.adb, "-s", self.settings.serial, *args]

    def _run(
        self, argv: list[str], stdin: bytes | None, timeout: float | None
    ) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv,
                input=stdin,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise _NoAnswer(f"adb gave no answer within {timeout:.0f} s") from None
        except OSError as exc:  # no adb client there
            raise DeviceUnreachable(
                f"adb device {self.settings.serial}: cannot run the adb client "
                f"{self.settings.adb!r} ({exc.strerror or exc}): install it (Debian: "
                "apt-get install adb) or set target.adb"
            ) from None

    def _adb(
        self, *args: str, stdin: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """`adb -s SERIAL ARGS...` once: `_ConnectionLost` when adb says the phone is not
        there, DeviceUnreachable at once when waiting cannot help (unauthorized)."""
        proc = self._run(self.argv(*args), stdin, timeout)
        error = _adb_error(proc)
        if error is None:
            return proc
        every = (proc.stderr or b"").decode(errors="replace") + (proc.stdout or b"").decode(
            errors="replace"
        )
        for needle, why in PERMANENT:
            if needle in every:
                raise DeviceUnreachable(f"adb device {self.settings.serial}: {why} ({error})")
        if GONE.search(every):
            raise _ConnectionLost(error)
        return proc  # adb ran and reported the command's own failure: the caller reads it

    @property
    def retried(self) -> int:
        """adb calls repeated after the phone went away."""
        return self._retrying.retried

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        return self._retrying(what, fn)

    def _gave_up(self, what: str, attempts: int, last: str) -> str:
        return (
            f"adb device {self.settings.serial}: {what} failed {attempts} "
            f"time{'s' if attempts > 1 else ''}; last: {last}{self._whereabouts()}"
        )

    def _whereabouts(self) -> str:
        """What `adb devices` says of the serial, for the line that gives up on it."""
        try:
            devices = self.devices()
        except (DeviceUnreachable, _ConnectionLost):
            return ""
        return f"; {self.describe(devices)}"

    def describe(self, devices: dict[str, AttachedDevice]) -> str:
        """The serial's state in `devices`, in words, naming what is attached instead."""
        serial = self.settings.serial
        found = devices.get(serial)
        if found is not None:
            return f"adb devices lists {serial} as {found.state}"
        others = ", ".join(f"{d.serial} ({d.state})" for d in devices.values()) or "nothing"
        return f"{serial} is not attached (adb devices lists {others})"

    def devices(self) -> dict[str, AttachedDevice]:
        """Every device the adb server sees (`adb devices -l`), by serial."""
        proc = self._run(
            [self.settings.adb, "devices", "-l"], None, self.settings.connect_timeout_s + 20
        )
        if proc.returncode != 0:
            raise DeviceUnreachable(
                f"adb device {self.settings.serial}: `adb devices` failed: "
                f"{tail(proc.stderr.decode(errors='replace'), 1)}"
            )
        return parse_devices(proc.stdout.decode(errors="replace"))

    def require_attached(self) -> AttachedDevice:
        """The phone's `adb devices` entry once it is usable ("device"). An unauthorized phone
        raises DeviceUnreachable at once; one that is missing or offline is waited for with
        the retries, then raises naming its state."""

        def once() -> AttachedDevice:
            devices = self.devices()
            found = devices.get(self.settings.serial)
            if found is not None and found.state == "device":
                return found
            if found is not None and found.state.startswith(PERMANENT_STATES):
                raise DeviceUnreachable(
                    f"adb device {self.settings.serial}: {found.state}"
                    + (
                        ": accept the USB debugging prompt on the phone, then run again"
                        if found.state == "unauthorized"
                        else ""
                    )
                )
            raise _ConnectionLost(self.describe(devices))

        return self._with_retries("finding the phone", once)

    def call(
        self, command: str, stdin: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """`command` in the phone's `sh` (one string: its arguments quoted by the caller), with
        the retries. The result is the command's own, whatever its exit status."""
        timeout = self.settings.connect_timeout_s + 30 if timeout is None else timeout
        what = f"adb shell {command.split()[0]}" if command.split() else "adb shell"
        return self._with_retries(
            what, lambda: self._adb("shell", command, stdin=stdin, timeout=timeout)
        )

    def _shell_word(self, command: str, words: tuple[str, ...], timeout: float) -> str:
        """The one word `command` prints as its last line, among `words`, once: a missing
        word with no output is the connection (retried), with output the phone's refusal."""
        proc = self._adb("shell", command, timeout=timeout)
        out = proc.stdout.decode(errors="replace").strip().splitlines()
        if out and out[-1].strip() in words:
            return out[-1].strip()
        said = tail(proc.stderr.decode(errors="replace") + "\n" + "\n".join(out), 2)
        if said == "no output":
            raise _ConnectionLost("the command ended without its answer")
        raise DeviceUnreachable(
            f"adb device {self.settings.serial}: cannot keep files in {self.settings.workdir}: "
            f"{said}"
        )

    # -- files -------------------------------------------------------------------------------
    def blob_path(self, sha256: str, suffix: str = ".onnx") -> str:
        return f"{self.settings.workdir.rstrip('/')}/blobs/{sha256}{suffix}"

    def ensure(self, local_path: str, sha256: str, suffix: str = ".onnx") -> str:
        """The phone's path of `local_path` (content `sha256`), pushed when missing there.

        A file of that name on the phone is kept when its hash matches (or the phone has no
        `sha256sum` to check it with); otherwise the push goes to `NAME.part-PID` and is
        renamed only after its hash is checked, so a push that is cut off leaves only a part
        file, never one that looks complete."""
        remote = self.blob_path(sha256, suffix)
        if sha256 in self._present:
            return remote
        q = shlex.quote
        folder, part = remote.rsplit("/", 1)[0], f"{remote}.part-{os.getpid()}"
        timeout = self.settings.connect_timeout_s + 30
        look = (
            f"mkdir -p {q(folder)} && if [ -f {q(remote)} ]; then "
            f"set -- $(sha256sum {q(remote)} 2>/dev/null); "
            f'if [ -z "$1" ] || [ "$1" = {sha256} ]; then echo present; '
            f"else rm -f {q(remote)} && echo damaged; fi; else echo missing; fi"
        )
        settle = (
            f"set -- $(sha256sum {q(part)} 2>/dev/null); "
            f'if [ -n "$1" ] && [ "$1" != {sha256} ]; then rm -f {q(part)}; echo mismatch; '
            f"else mv -f {q(part)} {q(remote)} && echo stored; fi"
        )

        def once() -> str:
            if self._shell_word(look, ("present", "damaged", "missing"), timeout) == "present":
                return "present"
            # adb push takes the phone's path as it is (no shell): not quoted.
            proc = self._adb("push", local_path, part, timeout=timeout + 600)
            if proc.returncode != 0:
                raise DeviceUnreachable(
                    f"adb device {self.settings.serial}: cannot push the model to "
                    f"{self.settings.workdir}: {_adb_error(proc) or tail(proc.stderr.decode())}"
                )
            if self._shell_word(settle, ("stored", "mismatch"), timeout) == "mismatch":
                raise _ConnectionLost("the pushed file's sha256 did not match")
            return "uploaded"

        if self._with_retries("push", once) == "uploaded":
            self.uploads += 1
        self._present.add(sha256)
        return remote

    def forget(self, sha256: str, suffix: str = ".onnx") -> None:
        """Drop a model from the phone (after the harness could not read it, say)."""
        self._present.discard(sha256)
        self.call(f"rm -f {shlex.quote(self.blob_path(sha256, suffix))}")


@dataclass
class _Job:
    """What one measurement runs with, read from the profile (duck-typed: see `adb_settings`)."""

    runs: int
    intra_op_threads: int
    inter_op_threads: int
    provider: str
    batch: int
    seq_len: int
    cpu_affinity: list[int] | None
    warmup_runs: int | None
    timeout_s: float

    @classmethod
    def of(cls, profile: HardwareProfile) -> _Job:
        runtime, workload, measure = profile.runtime, profile.workload, profile.measure
        providers = list(getattr(runtime, "providers", None) or ["CPUExecutionProvider"])
        affinity = getattr(runtime, "cpu_affinity", None)
        return cls(
            runs=int(measure.min_runs),
            intra_op_threads=int(runtime.intra_op_threads),
            inter_op_threads=int(getattr(runtime, "inter_op_threads", 1) or 1),
            provider=providers[0],
            batch=int(workload.batch),
            seq_len=int(workload.seq_len),
            cpu_affinity=sorted({int(c) for c in affinity}) if affinity else None,
            warmup_runs=getattr(measure, "warmup_runs", None),
            timeout_s=float(measure.timeout_s),
        )


def affinity_mask(cores: list[int]) -> str:
    """toybox taskset's mask for `cores`: hex digits, no 0x (toybox refuses an `x`)."""
    return format(sum(1 << c for c in set(cores)), "x")


class AdbRunner(Runner):
    """Runs jobs on one Android phone over adb. Not thread-safe: one phone, one job at a time."""

    lanes = 1

    def __init__(
        self,
        settings: AdbTarget,
        retries: int | None = None,
        backoff_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.transport = AdbTransport(settings, retries, backoff_s, sleep)
        self._environment: dict | None = None
        self._runs = itertools.count(1)

    def run(
        self,
        model: str,
        sha256: str,
        profile: HardwareProfile,
        anchor: tuple[str, str] | None = None,
    ) -> MeasurementResult:
        """One measurement of `model` on the phone, as every runner returns one."""
        try:
            job = _Job.of(profile)
        except (AttributeError, TypeError, ValueError) as exc:
            return failed(f"profile not usable for adb: {exc}")
        if provider_flag(job.provider) is None:
            return failed(
                f"onnxruntime_perf_test has no -e value for {job.provider} "
                f"(it takes {', '.join(PROVIDER_FLAGS)})"
            )
        # The file's hash was checked on the phone when it was pushed (ensure): a model the
        # harness cannot load is that model's failure, not a damaged copy to send again.
        result = self._measure(self.transport.ensure(model, sha256), job)
        self._add_context(result, model, job, anchor)
        return result

    def _measure(self, remote_model: str, job: _Job) -> MeasurementResult:
        t, q = self.settings, shlex.quote
        result_file = f"{t.workdir.rstrip('/')}/runs/{os.getpid()}-{next(self._runs)}.csv"
        argv = perf_test_argv(
            t.harness,
            remote_model,
            runs=job.runs,
            intra_op_threads=job.intra_op_threads,
            inter_op_threads=job.inter_op_threads,
            provider=job.provider,
            batch=job.batch,
            seq_len=job.seq_len,
            result_file=result_file,
        )
        harness = " ".join(q(a) for a in argv)
        if job.cpu_affinity:
            harness = f"taskset {affinity_mask(job.cpu_affinity)} {harness}"
        # The exit status after a line break of its own: a harness that died mid-line
        # leaves its last line unterminated.
        command = (
            f"mkdir -p {q(result_file.rsplit('/', 1)[0])}; rm -f {q(result_file)}; "
            f'{harness} 2>&1; rc=$?; echo; echo "{EXIT_MARK}$rc"'
        )
        timeout = job.timeout_s + t.connect_timeout_s

        def once() -> MeasurementResult:
            try:
                proc = self.transport._adb("shell", command, timeout=timeout)
            except _NoAnswer:
                # The harness may still run on the phone: stop it before the next job. The
                # pattern's first letter in brackets matches the harness's command line (which
                # names the result file) but not the shell that runs pkill with the pattern.
                folder, name = result_file.rsplit("/", 1)
                pattern = f"{folder}/[{name[0]}]{name[1:]}"
                with contextlib.suppress(DeviceUnreachable, _ConnectionLost):
                    self.transport._adb(
                        "shell", f"pkill -f {q(pattern)}", timeout=t.connect_timeout_s + 10
                    )
                return failed(f"timeout after {timeout:.0f} s (on the phone)")
            out = proc.stdout.decode(errors="replace").replace("\r", "")
            lines = out.rstrip("\n").splitlines()
            if not lines or not lines[-1].startswith(EXIT_MARK):
                # The output ended before the harness did: the connection, not the model.
                raise _ConnectionLost(f"the harness's output was cut off: {tail(out, 1)}")
            try:
                code = int(lines[-1][len(EXIT_MARK) :])
            except ValueError:
                raise _ConnectionLost(f"unreadable exit status: {lines[-1]}") from None
            text = "\n".join(lines[:-1])
            if proc.stderr:
                text += "\n" + proc.stderr.decode(errors="replace")
            result = parse_perf_test_output(text)
            if code != 0:
                result = failed(f"onnxruntime_perf_test {exit_description(code)}: {tail(text)}")
            result.harness = {**(result.harness or {}), "exit_code": code}
            return result

        result = self.transport._with_retries("measurement", once)
        if result.ok:
            result = self._check_shape(result, job)
        if result.ok:
            self._add_samples(result, result_file)  # and removes the file
        else:
            with contextlib.suppress(DeviceUnreachable):
                self.transport.call(f"rm -f {q(result_file)}")
        result.harness = {**(result.harness or {}), "path": t.harness, "argv": argv}
        return result

    @staticmethod
    def _check_shape(result: MeasurementResult, job: _Job) -> MeasurementResult:
        """Refuse a measurement under other settings than the profile's, where the harness
        says what it set: a build that applied only one `-f` override times inputs with a free
        dimension of 1, and the thread count it reports must be the profile's."""
        reported = (result.harness or {}).get("reported", {})
        said = reported.get("dimension_overrides")
        wanted = {BATCH_DIM: job.batch, SEQUENCE_DIM: job.seq_len}
        why = None
        if said is not None and any(said.get(k) != v for k, v in wanted.items()):
            why = (
                f"onnxruntime_perf_test overrode the dimensions {said}, not {wanted}: a build "
                "that keeps only the last -f (ONNX Runtime PR #25716 fixed it) times another "
                "shape than the workload's"
            )
        threads = reported.get("threads_set")
        if threads is not None and threads != job.intra_op_threads:
            why = (
                f"onnxruntime_perf_test set {threads} intra-op threads, not the profile's "
                f"{job.intra_op_threads}"
            )
        return failed(why) if why else result

    def _add_samples(self, result: MeasurementResult, result_file: str) -> None:
        """The per-run latencies from the harness's result file, and what they give that its
        printout does not: the median's confidence interval (the trust rule needs it), the
        spread, the outliers. Without the file the interval is unknown (infinite: the job
        marks the measurement unstable rather than trusting it blind)."""
        from bfnas.bench.device.stats import summarize

        proc = self.transport.call(
            f"cat {shlex.quote(result_file)} 2>/dev/null; rm -f {shlex.quote(result_file)}"
        )
        samples = parse_per_run_file(proc.stdout.decode(errors="replace"))
        if len(samples) < 1:
            result.median_rel_ci = float("inf")
            note = "no per-run file from the harness"
            result.details = {**(result.details or {}), "samples": note}
            return
        summary = summarize(samples)
        result.samples_ms = samples
        result.std_ms, result.cov = summary["std_ms"], summary["cov"]
        result.outliers, result.median_rel_ci = summary["outliers"], summary["median_rel_ci"]
        if len(samples) != result.runs:
            result.details = {
                **(result.details or {}),
                "samples": f"the per-run file has {len(samples)} rows for {result.runs} runs",
            }

    def _add_context(
        self, result: MeasurementResult, model: str, job: _Job, anchor: tuple[str, str] | None
    ) -> None:
        """What every result records besides its figures: the phone, the provider and
        threads, the model's size, and what this runner cannot do as the Python worker does."""
        details = {
            "timing": "onnxruntime_perf_test: C++ clock around each session Run, inputs made "
            "once by the harness (-I: int64 zeros of [batch, sequence])",
            "warmup": "the harness's own: one untimed run (measure.warmup_runs "
            f"{job.warmup_runs} not applied)",
            "stop_rule": f"a fixed count: measure.min_runs = {job.runs} timed runs "
            "(min_seconds, max_seconds and target_rel_ci are not applied)",
        }
        if anchor:
            details["anchor"] = (
                "not paired: onnxruntime_perf_test times one model per process, so the "
                "anchor cannot run right before each run; no ratio is given"
            )
        with contextlib.suppress(DeviceUnreachable):
            if self._environment is None:
                self._environment = self._read_environment()
        environment = {
            **(self._environment or {}),
            "affinity": job.cpu_affinity,
            "threads": job.intra_op_threads,
            "provider": job.provider,
        }
        result.provider, result.threads = job.provider, job.intra_op_threads
        result.model_bytes = Path(model).stat().st_size
        result.device = {"serial": self.settings.serial}
        result.environment = environment
        # What the harness's output added (a note on its per-run file) is kept beside these.
        result.details = {**details, **(result.details or {})}

    def _read_environment(self) -> dict:
        """The phone's model, Android version, SoC and CPU cores, once per runner."""
        props = "; ".join(f'echo "{key}=$(getprop {prop})"' for key, prop in PROPS)
        command = (
            f'{props}; echo "cores=$(ls -d /sys/devices/system/cpu/cpu[0-9]* 2>/dev/null | '
            'wc -l)"; echo "governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/'
            'scaling_governor 2>/dev/null)"; '
            'for tool in sha256sum taskset pkill; do command -v "$tool" >/dev/null && '
            'echo "tool=$tool"; done; '
            "grep -E '^(Hardware|CPU implementer|CPU part|model name)[[:space:]]*:' "
            "/proc/cpuinfo 2>/dev/null"
        )
        out = self.transport.call(command).stdout.decode(errors="replace")
        env: dict = {"serial": self.settings.serial}
        parts: dict[str, int] = {}
        tools = []
        for line in out.replace("\r", "").splitlines():
            key, eq, value = line.partition("=")
            if eq and key in {k for k, _ in PROPS} | {"cores", "governor"}:
                env[key] = value.strip() or None
            elif eq and key == "tool":
                tools.append(value.strip())
            elif ":" in line:
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                if name == "CPU part":
                    parts[value] = parts.get(value, 0) + 1
                elif name in ("Hardware", "model name"):
                    env.setdefault("cpu_" + name.lower().replace(" ", "_"), value)
        env["soc"] = env.get("soc_model") or env.get("board_platform")
        env["cpu_parts"] = parts or None
        if env.get("cores"):
            with contextlib.suppress(ValueError):
                env["cores"] = int(env["cores"])
        env["tools"] = tools
        return env

    # -- checks ------------------------------------------------------------------------------
    def probe(self, profile: HardwareProfile) -> list[dict]:
        """The phone's checks of `profile` (`bench.runners.usable.require_usable`): rows like
        `bench.device.probe.Check.to_dict()`. Finding the phone gets the retries first: one
        that stays away stops the job as DeviceUnreachable, as a measurement would."""
        self.transport.require_attached()
        return adb_checks(self, profile)

    def close(self) -> None:
        """Nothing is held open between jobs (each adb call is its own process)."""


def adb_runner(profile: HardwareProfile) -> AdbRunner:
    """The runner of an `adb` target (`registry.RUNNER_KINDS`)."""
    return AdbRunner(adb_settings(profile))


def adb_probe(profile: HardwareProfile) -> list[dict]:
    """`hw check` of an `adb` target (`registry.RUNNER_KINDS`). Tried once: a check reports
    a missing phone rather than waiting through a job's retries."""
    runner = AdbRunner(adb_settings(profile), retries=0)
    try:
        return adb_checks(runner, profile)
    finally:
        runner.close()


# The answers of the check's one shell command, one `key=value` line each.
_ANSWER = re.compile(r"^(abi|harness|workdir|taskset)=(.*)$")


def _row(name: str, ok: bool, detail: str, field_name: str | None = None) -> dict:
    return {"name": name, "ok": ok, "detail": detail, "field": field_name}


def adb_checks(runner: AdbRunner, profile: HardwareProfile) -> list[dict]:
    """The checks `hw check` reports for an adb profile, in order; where one fails that later
    ones need (no adb client, no phone), it is the last row."""
    t, transport = runner.settings, runner.transport
    client = _client_row(t)
    if not client["ok"]:
        return [client]
    rows = [client]
    try:
        devices = transport.devices()
    except DeviceUnreachable as exc:
        return [*rows, _row("adb server", False, str(exc))]
    found = devices.get(t.serial)
    if found is None or found.state != "device":
        hint = {
            "unauthorized": ": accept the USB debugging prompt on the phone",
            "offline": ": reconnect it (or `adb reconnect`)",
        }.get(found.state if found else "", "")
        return [*rows, _row("phone", False, transport.describe(devices) + hint, "target.serial")]
    facts = " ".join(f"{k}:{v}" for k, v in found.info.items() if k in ("model", "product"))
    rows.append(_row("phone", True, f"{t.serial}: attached ({facts or 'device'})", "target.serial"))

    q = shlex.quote
    look = (
        'echo "abi=$(getprop ro.product.cpu.abi)"; '
        f"if [ ! -e {q(t.harness)} ]; then echo harness=missing; "
        f"elif [ ! -x {q(t.harness)} ]; then echo harness=not-executable; "
        f"else echo harness=present; {q(t.harness)} -h 2>&1 | head -n 5; fi; "
        f"mkdir -p {q(t.workdir)} && touch {q(t.workdir + '/.bfnas-check')} && "
        f"rm -f {q(t.workdir + '/.bfnas-check')} && echo workdir=ok; "
        "command -v taskset >/dev/null && echo taskset=yes; "
        "grep Cpus_allowed_list /proc/self/status 2>/dev/null"
    )
    try:
        out = transport._adb("shell", look, timeout=t.connect_timeout_s + 30)
    except (DeviceUnreachable, _ConnectionLost) as exc:
        return [*rows, _row("phone", False, f"{t.serial}: {exc}")]
    text = out.stdout.decode(errors="replace").replace("\r", "")
    lines = text.splitlines()
    answers = {m[1]: m[2].strip() for ln in lines if (m := _ANSWER.match(ln))}
    other_lines = [ln for ln in lines if not _ANSWER.match(ln)]
    abi = answers.get("abi", "")
    rows.append(
        _row(
            "phone ABI",
            bool(abi),
            f"{abi}: the harness must be built for it (build.py --android_abi {abi})"
            if abi
            else "getprop ro.product.cpu.abi said nothing",
        )
    )
    rows.append(_harness_row(t.harness, answers.get("harness", "missing"), other_lines))
    writable = answers.get("workdir") == "ok"
    rows.append(
        _row(
            "workdir",
            writable,
            f"{t.workdir} is writable" if writable else f"cannot write in {t.workdir}",
            "target.workdir",
        )
    )
    allowed_line = next((ln for ln in other_lines if ln.startswith("Cpus_allowed_list")), "")
    return rows + _profile_rows(
        profile, answers.get("taskset") == "yes", _cpu_list(allowed_line.partition(":")[2])
    )


def _client_row(t: AdbTarget) -> dict:
    """Whether the adb client runs (`adb version`)."""
    try:
        version = subprocess.run(
            [t.adb, "version"], capture_output=True, timeout=t.connect_timeout_s + 10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        said = str(getattr(exc, "strerror", None) or exc)
        return _row(
            "adb client",
            False,
            f"{t.adb}: {said} (install it: apt-get install adb; or set target.adb)",
            "target.adb",
        )
    said = tail(version.stdout.decode(errors="replace"), 2)
    ok = version.returncode == 0
    return _row("adb client", ok, f"{shutil.which(t.adb) or t.adb}: {said}", "target.adb")


def _harness_row(harness: str, state: str, output: list[str]) -> dict:
    """Whether the harness is on the phone and starts (its `-h` output is `output`)."""
    if state == "missing":
        detail = (
            f"{harness} is not on the phone: build onnxruntime_perf_test for Android and "
            "adb push it there (docs/phones.md)"
        )
        return _row("harness", False, detail, "target.harness")
    if state == "not-executable":
        return _row(
            "harness", False, f"{harness} is not executable: chmod 755 it", "target.harness"
        )
    broken = [ln for ln in output if any(mark in ln for mark in CANNOT_START)]
    if broken:
        return _row(
            "harness", False, f"{harness} does not start: {tail(broken[-1])}", "target.harness"
        )
    return _row("harness", True, f"{harness} present and executable", "target.harness")


def _profile_rows(profile: HardwareProfile, has_taskset: bool, allowed: set[int] | None) -> list:
    """Whether the phone can run the profile's provider and CPU affinity."""
    try:
        job = _Job.of(profile)
    except (AttributeError, TypeError, ValueError) as exc:
        return [_row("profile", False, f"not readable for adb: {exc}")]
    flag = provider_flag(job.provider)
    rows = [
        _row(
            "provider",
            flag is not None,
            f"{job.provider}: onnxruntime_perf_test -e {flag}"
            if flag
            else f"{job.provider}: onnxruntime_perf_test takes {', '.join(PROVIDER_FLAGS)}",
            "runtime.providers",
        )
    ]
    if job.cpu_affinity:
        outside = [c for c in job.cpu_affinity if allowed is not None and c not in allowed]
        if not has_taskset:
            ok, detail = False, "the phone has no taskset (Android's toybox has one)"
        elif outside:
            ok, detail = (
                False,
                (
                    f"cores {outside} are not allowed to adb's shell (its Cpus_allowed_list is "
                    f"{sorted(allowed or [])})"
                ),
            )
        else:
            ok, detail = (
                True,
                f"taskset {affinity_mask(job.cpu_affinity)} (cores {job.cpu_affinity})",
            )
        rows.append(_row("cpu affinity", ok, detail, "runtime.cpu_affinity"))
    return rows


def _cpu_list(text: str) -> set[int] | None:
    """A kernel CPU list ("0-3,6") as a set, or None when there is none."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            cores |= set(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return None
    return cores or None
