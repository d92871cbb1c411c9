"""A fork server for measurement workers: the device package's `forkserver` command
(`python -m bfnas.bench.device forkserver`, or `python DEVICE_CODE.pyz forkserver` on a device).

Starting a worker process costs ~0.3 s before anything is timed (interpreter, numpy,
onnxruntime). This server imports those once, never creates a session, and
forks one child per job, so every measurement still runs in its own process (its own
allocator, thread pools and crash) for a few milliseconds of start-up.

Protocol, one JSON object per line. Out on stdout first: `{"ready": true}` once the imports
are done. In on stdin: `{"job": JOB_JSON_TEXT, "timeout": SECONDS}`.
Out on stdout: `{"pid": PID}` when the child starts, then `{"returncode": RC, "out": TEXT}`
(RC < 0: killed by signal -RC) or `{"timeout": true}` after the child was killed for
overrunning. The server is single-threaded: a fork copies only the forking thread. The
same server runs on SSH devices, over the ssh session's pipes (`bench.runners.ssh`).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import time

# What every worker needs, imported before any fork; each backend's own modules are
# imported by `_preload`, as the backend registry lists them.
import numpy  # noqa: F401

from . import backends
from .worker import run_job_text


def _preload() -> None:
    """Import what the registered backends want loaded before a fork (ONNX Runtime and its
    harness), so a forked worker starts with them. A missing one stops the server at once,
    as a failed import always has."""
    for backend in backends.BACKENDS.values():
        for module in backend.preload:
            importlib.import_module(module, backends.__name__)


def _child(job: str, write_fd: int) -> None:
    # The server's stdout is the protocol channel: nothing the child prints may land there.
    os.dup2(2, 1)
    code = 1
    try:
        code, out = run_job_text(job)
        data = out.encode()
        while data:
            data = data[os.write(write_fd, data) :]
    finally:
        os._exit(code)


def _serve_one(request: dict) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(request["job"], write_fd)
    os.close(write_fd)
    _send({"pid": pid})
    deadline = time.monotonic() + float(request["timeout"])
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"timeout": True}
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:  # the child closed its end: finished or died
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"returncode": rc, "out": b"".join(chunks).decode(errors="replace")}


def _send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Serve jobs on stdin until it closes (`argv` takes no options: the protocol is the
    pipe's)."""
    _preload()
    _send({"ready": True})
    for line in sys.stdin:
        if line.strip():
            _send(_serve_one(json.loads(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
