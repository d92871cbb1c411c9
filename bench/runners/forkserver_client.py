"""The client of a fork server (`bench.device.forkserver`): one process that imported what a
worker needs once, forking a worker per job. Local and SSH runners both talk to one."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time

from bfnas.bench.device.contract import MeasurementResult, failed
from bfnas.bench.runners.base import parse_worker_output


class ForkServerLost(Exception):
    """The fork server went away or stopped answering. `started`: it had been ready (so a job,
    not the start-up, was interrupted)."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


class ForkServerClient:
    """The client of a `bench.device.forkserver` process reached through `argv`'s pipes: a local
    process, or `ssh DEVICE python -m bfnas.bench.device.forkserver`. Started on the first job."""

    def __init__(
        self, argv: list[str], env: dict | None = None, start_timeout: float = 60.0, stderr=None
    ) -> None:
        self.argv, self.env, self.start_timeout, self.stderr = argv, env, start_timeout, stderr
        self.proc: subprocess.Popen | None = None
        self.active_pid: int | None = None  # the worker running now, if any
        self._pending = b""  # bytes read past the last full line

    def run(self, job: str, timeout: float) -> dict:
        """The server's answer for one job: `{"returncode", "out"}` or `{"timeout": true}`."""
        started = False
        try:
            self._start()
            started = True
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({"job": job, "timeout": timeout}) + "\n").encode())
            self.proc.stdin.flush()
            self.active_pid = self._answer(60)["pid"]
            return self._answer(timeout + 60)
        except (OSError, ValueError, KeyError) as exc:
            self.close()
            raise ForkServerLost(str(exc) or type(exc).__name__, started) from None
        finally:
            self.active_pid = None

    def _start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        # A process group of its own: the terminal's Ctrl-C (SIGINT to the foreground process
        # group) reaches only the job, which decides (stops, stores nothing half-done, closes
        # this server and its worker), instead of every worker printing a KeyboardInterrupt.
        # The same session, not a new one: with the kernel's autogroup scheduling a session
        # is a CPU share of its own, and the workers would no longer compete with the user's
        # other processes as measured (a busy machine would look idle to them).
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=self.env,
            bufsize=0,
            process_group=0,
        )
        self._pending = b""
        if not self._answer(self.start_timeout).get("ready"):
            raise ValueError("the fork server did not say it was ready")

    def _answer(self, timeout: float) -> dict:
        """The server's next line as JSON. Read from the raw pipe with an own buffer: a
        buffered reader could swallow the next line too, and select() would then wait on
        an empty pipe for an answer already read."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise OSError(f"no answer within {timeout:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise OSError("it exited")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def close(self) -> None:
        """Stop the server and the worker it forked, if one is running (a new server starts
        on the next job). They are one process group (`_start`): both go at once."""
        if self.proc is not None:
            if self.proc.poll() is None:  # not reaped: its pid, so its group's id, is still ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def forked_result(done: dict, timeout: float, where: str = "") -> MeasurementResult:
    """A measurement result from a fork server's answer."""
    if done.get("timeout"):
        return failed(f"timeout after {timeout:.0f} s{where}")
    return parse_worker_output(done["returncode"], done["out"], "")
