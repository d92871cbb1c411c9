import os
from pathlib import Path

import pytest

# Tests run offline: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_SPACE = """
name = "tiny"
description = "small enough to export in a second"
uniform = false
layers = {min = 1, max = 2}
hidden = {min = 64, max = 128, step = 32}
heads = [1, 2, 4]
qkv = {min = 32, max = 128, step = 32}
ffn = {min = 64, max = 256, step = 64}
"""


@pytest.fixture(scope="session")
def tiny_space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.toml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture(scope="session")
def tiny_space(tiny_space_file):
    from bfnas.models.space.search_space import SearchSpace

    return SearchSpace.from_toml(tiny_space_file)


@pytest.fixture(scope="session")
def tiny_supernet(tiny_space):
    from bfnas.models.nn.supernet import SuperBert, SupernetDims

    return SuperBert.random(SupernetDims.for_space(tiny_space), seed=0)


@pytest.fixture(scope="session")
def minilm_supernet():
    from bfnas.models.nn.checkpoint import load_supernet

    return load_supernet("minilm")


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


FAST_PROFILE = """
name = "test-cpu-int8"
description = "this machine, measured briefly: for tests only"
precision = "int8"
[runtime]
intra_op_threads = 1
[quantization]
recipe = "dynamic"
[measure]
warmup_runs = 2
warmup_seconds = 0.0
min_runs = 10
min_seconds = 0.02
max_seconds = 0.3
timeout_s = 120
drift_every = 3
drift_threshold = 0.5
# Tests check the pipeline, not how quiet the machine is: a busy CI host must not turn
# their brief measurements "unstable" (tests of the trust rule use their own profiles).
max_rel_ci = 0.5
max_anchor_rel_ci = 1.0
"""


@pytest.fixture(scope="session")
def fast_profile_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hw") / "test-cpu-int8.toml"
    path.write_text(FAST_PROFILE)
    return path


# The seed latency table ships with the repository (benchmarks/data/README.md says what it is).
REPO = Path(__file__).resolve().parents[1]
SEED_FILE = REPO / "benchmarks" / "data" / "seed-latency-fp32.tsv"


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory) -> tuple[Path, dict]:
    """The standard library's docstrings as a corpus (real prose, made here, offline), and
    the counts `stdlib_docstrings` reported."""
    from bfnas.models.train.pretraining_data import stdlib_docstrings

    path = tmp_path_factory.mktemp("corpus") / "stdlib.txt"
    return path, stdlib_docstrings(path)


def corpus_head(corpus: Path, lines: int, out: Path) -> Path:
    """The first `lines` lines of a corpus, as a file of their own."""
    out.write_text("\n".join(corpus.read_text().splitlines()[:lines]) + "\n")
    return out


class SshServer:
    """A real OpenSSH server on 127.0.0.1 with its own host key, one authorized user key and
    a known_hosts line for it; can be stopped (dropping every connection) and started again
    on the same port."""

    def __init__(self, folder: Path) -> None:
        import getpass
        import shutil
        import socket
        import subprocess

        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).is_file():
            pytest.fail("sshd is not installed (.ci/run installs Debian's openssh-server)")
        self.sshd, self.folder, self.user = sshd, folder, getpass.getuser()
        self.home = folder / "home"
        self.home.mkdir()
        for name in ("host_key", "user_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                check=True,
            )
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = folder / "sshd_config"
        self.config.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PrintMotd no
# Sessions get a home of their own: the user's shell start-up files (a pyenv rehash in
# ~/.bashrc, say, whose lock a killed session can leave behind) stay out of the tests.
SetEnv HOME={self.home}
""")
        host_pub = " ".join((folder / "host_key.pub").read_text().split()[:2])
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.identity = folder / "user_key"
        self.proc = None
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        self.start()

    def start(self) -> None:
        import socket
        import subprocess
        import time

        with open(self.folder / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.config)], stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited: {(self.folder / 'sshd.log').read_text()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail("sshd did not listen within 15 s")

    def stop(self) -> None:
        """Kill sshd and every session it started: open connections drop as in a network cut."""
        import contextlib
        import signal

        if self.proc is None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def target(self, **extra) -> dict:
        import sys

        return {
            "kind": "ssh",
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "python": sys.executable,
            **extra,
        }


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def bare_python(folder: Path, packages: tuple[str, ...]) -> Path:
    """A Python holding nothing but `packages` (exact pins, installed without their
    dependencies): a device that has only its runtime. A virtual environment of this
    interpreter's base Python, so no bfnas, pydantic or torch can leak in."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    if packages:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "-q",
                "--no-deps",
                *packages,
            ],
            check=True,
            capture_output=True,
        )
    return python


@pytest.fixture(scope="session")
def runtime_only_python(tmp_path_factory) -> Path:
    """A device Python with only numpy and onnxruntime, at this machine's versions."""
    from importlib import metadata

    pins = tuple(f"{p}=={metadata.version(p)}" for p in ("numpy", "onnxruntime"))
    return bare_python(tmp_path_factory.mktemp("runtime-only"), pins)


@pytest.fixture(scope="session")
def arm64_python() -> Path:
    """An emulated ARM64 device's Python (Debian's aarch64 Python 3.11 with only numpy and
    onnxruntime, under qemu-aarch64-static): built by tests/devices/arm64_device.py once,
    then kept in ~/.cache (the build checks itself and is redone when incomplete)."""
    import shutil
    import sys
    from importlib import metadata

    if shutil.which("qemu-aarch64-static") is None:
        pytest.fail(
            "qemu-aarch64-static is not installed (make test installs Debian's qemu-user-static)"
        )
    sys.path.insert(0, str(Path(__file__).parent / "devices"))
    try:
        from arm64_device import BuildError, build_arm64_device
    finally:
        sys.path.pop(0)
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bfnas-tests" / "arm64"
    try:
        return build_arm64_device(
            root, metadata.version("numpy"), metadata.version("onnxruntime"), on_line=lambda s: None
        )
    except BuildError as exc:
        pytest.fail(f"the ARM64 device could not be built: {exc}")
