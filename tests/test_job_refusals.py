"""Jobs that measure or search refuse what cannot work before they write anything.

Cause 8: a profile the device cannot run (a provider this onnxruntime lacks, cores it does
not have, more threads than cores, TensorRT where there is none) is refused by `profile`,
`bench` and a search's verification in one line naming the profile file and field, exit 2,
with no store, run or profile row written. Cause 11: an objective plugin that cannot be
loaded, raises, or returns no finite number is one line naming it, exit 2, and the store is
untouched. Cause 13: `--ray` with a malformed address is exit 2; one nobody answers at is
one line within seconds, exit 1, with none of Ray's warnings. And Ctrl-C to the whole
process group of `bfnas profile` is one line, exit 130, the run marked interrupted.
"""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

import pytest
from conftest import FAST_PROFILE, TINY_SPACE
from refusals import Refusal, check_refusal

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.device.gpu import tensorrt_missing
from bfnas.bench.device.probe import Check
from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.profiling import ProfileJob
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.runners.usable import refusal
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.space.search_space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0))
ARCH = '{"layers": 1, "hidden": 64, "heads": 1, "qkv": 32, "ffn": 64}'


def profile_text(runtime: str = "", top: str = "", name: str = "test-cpu-int8") -> str:
    """The fast test profile with lines added to its [runtime] table (and at the top)."""
    text = FAST_PROFILE.replace('name = "test-cpu-int8"', f'name = "{name}"\n{top}')
    return text.replace("[runtime]\n", f"[runtime]\n{runtime}\n")


NO_PROVIDER = profile_text('providers = ["NoSuchExecutionProvider"]')
BAD_CORE = profile_text("cpu_affinity = [999]")
TOO_MANY_THREADS = FAST_PROFILE.replace("intra_op_threads = 1", f"intra_op_threads = {CORES + 1}")
TENSORRT = profile_text('backend = "tensorrt"').replace(
    'recipe = "dynamic"', 'recipe = "qdq-symmetric"'
)


def has_tensorrt() -> str | None:
    return "this machine has TensorRT: nothing to refuse" if not tensorrt_missing() else None


def profile_argv(hw: str, *extra: str) -> list[str]:
    return [
        "profile",
        "--hw",
        f"{{tmp}}/{hw}",
        "--space",
        "{tmp}/tiny.toml",
        "--samples",
        "2",
        "--db",
        "{tmp}/lat.db",
        "--artifacts",
        "{tmp}/art",
        *extra,
    ]


def bench_argv(hw: str) -> list[str]:
    return [
        "bench",
        "--hw",
        f"{{tmp}}/{hw}",
        "--space",
        "{tmp}/tiny.toml",
        "--arch",
        ARCH,
        "--db",
        "{tmp}/lat.db",
        "--artifacts",
        "{tmp}/art",
    ]


def old_store(path: Path) -> None:
    """A store holding an earlier run: a refused job must leave it byte-identical."""
    profile = parse_profile(tomllib.loads(FAST_PROFILE), "<earlier>")
    with LatencyStore(path) as store:
        phash = store.add_profile(profile.name, profile.resolved(), profile.hash())
        store.finish_run(store.start_run(phash, "profile", {}), "finished", {})


def trained_store(profile_toml: str, rows: int = 40):
    """A maker of a store with `rows` trusted measurements of the profile in the tiny space
    (latency follows MACs): what a search fits its predictor from, made in milliseconds."""

    def make(path: Path) -> None:
        import random

        profile = parse_profile(tomllib.loads(profile_toml), "<made>")
        space = SearchSpace.from_dict(tomllib.loads(TINY_SPACE), "<tiny>")
        rng = random.Random(0)
        with LatencyStore(path) as store:
            phash = store.add_profile(profile.name, profile.resolved(), profile.hash())
            seen: set[str] = set()
            while len(seen) < rows:
                cfg = space.sample(rng)
                if cfg.key() in seen:
                    continue
                seen.add(cfg.key())
                ms = cfg.total_macs(128) / 2e8
                store.add_measurement(
                    phash,
                    cfg,
                    space.name,
                    MeasurementResult.from_dict(
                        {
                            "status": "ok",
                            "median_ms": ms,
                            "mean_ms": ms,
                            "runs": 10,
                            "median_rel_ci": 0.01,
                        }
                    ),
                )

    return make


DEVICE = [
    Refusal(
        "profile-unknown-provider",
        profile_argv("npu.toml"),
        "{tmp}/npu.toml: runtime.providers",
        {"tiny.toml": TINY_SPACE, "npu.toml": NO_PROVIDER},
    ),
    Refusal(
        "profile-core-not-here",
        profile_argv("pinned.toml"),
        "{tmp}/pinned.toml: runtime.cpu_affinity",
        {"tiny.toml": TINY_SPACE, "pinned.toml": BAD_CORE},
    ),
    Refusal(
        "profile-more-threads-than-cores",
        profile_argv("many.toml"),
        "{tmp}/many.toml: runtime.intra_op_threads",
        {"tiny.toml": TINY_SPACE, "many.toml": TOO_MANY_THREADS},
    ),
    Refusal(
        "profile-tensorrt-missing",
        profile_argv("trt.toml"),
        "TensorRT is not available",
        {"tiny.toml": TINY_SPACE, "trt.toml": TENSORRT},
        needs=has_tensorrt,
    ),
    # An existing store stays byte-identical: no profile row, no run row.
    Refusal(
        "profile-into-an-existing-store",
        profile_argv("npu.toml"),
        "runtime.providers",
        {"tiny.toml": TINY_SPACE, "npu.toml": NO_PROVIDER, "lat.db": old_store},
    ),
    Refusal(
        "bench-unknown-provider",
        bench_argv("npu.toml"),
        "{tmp}/npu.toml: runtime.providers",
        {"tiny.toml": TINY_SPACE, "npu.toml": NO_PROVIDER},
    ),
    Refusal(
        "bench-core-not-here",
        bench_argv("pinned.toml"),
        "runtime.cpu_affinity",
        {"tiny.toml": TINY_SPACE, "pinned.toml": BAD_CORE},
    ),
    Refusal(
        "search-verify-unknown-provider",
        [
            "search",
            "--hw",
            "{tmp}/npu.toml",
            "--space",
            "{tmp}/tiny.toml",
            "--db",
            "{tmp}/lat.db",
            "--max-latency-ms",
            "100",
            "--verify",
            "1",
            "--population",
            "10",
            "--parents",
            "4",
            "--generations",
            "1",
            "--artifacts",
            "{tmp}/art",
            "--out",
            "{tmp}/out",
        ],
        "{tmp}/npu.toml: runtime.providers",
        {"tiny.toml": TINY_SPACE, "npu.toml": NO_PROVIDER, "lat.db": trained_store(NO_PROVIDER)},
    ),
]


@pytest.mark.parametrize("case", DEVICE, ids=lambda c: c.id)
def test_a_profile_the_device_cannot_run_is_refused_before_anything_is_written(
    case, tmp_path, capsys, monkeypatch
):
    line = check_refusal(case, tmp_path, capsys, monkeypatch)
    assert "not usable here" in line


def test_the_job_itself_checks_before_its_first_row(tmp_path, tiny_space, tiny_supernet):
    """ProfileJob used as a library (no CLI in front) refuses as well, store untouched."""
    profile = parse_profile(tomllib.loads(NO_PROVIDER), str(tmp_path / "npu.toml"))
    runner = LocalRunner()
    cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
    with LatencyStore(tmp_path / "lib.db") as store:
        with pytest.raises(InputError) as err:
            setup = MeasurementSetup(profile, tiny_space, tiny_supernet, cache, runner)
            ProfileJob(setup=setup, store=store, samples=2).run()
        assert err.value.field == "runtime.providers"
        assert store.db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 0
        assert store.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert runner.server.proc is None  # no worker was started for it
    assert not (tmp_path / "arts").exists()  # nor anything exported


def test_hw_check_and_the_jobs_say_the_same_line(tmp_path, capsys):
    from bfnas.cli import main

    (tmp_path / "npu.toml").write_text(NO_PROVIDER)
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    assert main(["hw", "check", str(tmp_path / "npu.toml")]) == 2
    checked = capsys.readouterr().err.strip()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in profile_argv("npu.toml")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == checked


def test_a_failure_that_is_not_the_profiles_is_work_that_cannot_go_on():
    profile = parse_profile(tomllib.loads(FAST_PROFILE), "dev.toml")
    lost = refusal(profile, [Check("ssh", True, "reached"), Check("device probe", False, "gone")])
    assert type(lost).__name__ == "OperationFailed" and "device probe: gone" in str(lost)
    assert refusal(profile, [Check("cpu", True, "fine")]) is None


@pytest.mark.ssh
def test_a_device_over_ssh_is_checked_on_the_device(sshd, tmp_path, capsys, monkeypatch):
    """The checks run where the measurements would: the device's onnxruntime lacks the
    provider, named with the local profile's file and field."""
    import json

    target = "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in sshd.target(workdir=str(tmp_path / "device")).items()
    )
    text = profile_text('providers = ["NoSuchExecutionProvider"]', name="test-ssh-int8")
    case = Refusal(
        "ssh-unknown-provider",
        profile_argv("ssh.toml"),
        "{tmp}/ssh.toml: runtime.providers: not usable here: device provider",
        {"tiny.toml": TINY_SPACE, "ssh.toml": text + f"\n[target]\n{target}\n"},
    )
    check_refusal(case, tmp_path, capsys, monkeypatch)


# -- objective plugins (cause 11) ---------------------------------------------------------------


def search_argv(objective: str) -> list[str]:
    return [
        "search",
        "--hw",
        "{tmp}/fast.toml",
        "--space",
        "{tmp}/tiny.toml",
        "--db",
        "{tmp}/lat.db",
        "--max-latency-ms",
        "100",
        "--verify",
        "0",
        "--population",
        "10",
        "--parents",
        "4",
        "--generations",
        "2",
        "--objective",
        objective,
        "--out",
        "{tmp}/out",
    ]


def plugin(module: str, body: str, objective: str, names: str) -> Refusal:
    # Each row's module has its own name: an imported module stays in sys.modules.
    name = f"bfnas_test_{module.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    files = {
        "tiny.toml": TINY_SPACE,
        "fast.toml": FAST_PROFILE,
        "lat.db": trained_store(FAST_PROFILE),
        f"plugins/{name}.py": body,
    }
    return Refusal(
        module, search_argv(objective.replace("MOD", name)), names.replace("MOD", name), files
    )


PLUGINS = [
    plugin(
        "raises",
        "def score(cfg):\n    return 1 / 0\n",
        "MOD:score",
        "--objective: MOD:score raised ZeroDivisionError: division by zero",
    ),
    plugin(
        "raises-later",
        "calls = []\ndef score(cfg):\n    calls.append(cfg)\n"
        "    if len(calls) > 3:\n        raise KeyError('no table for ' + str(cfg.layers))\n"
        "    return 1.0\n",
        "MOD:score",
        "MOD:score raised KeyError",
    ),
    plugin(
        "nan",
        "def score(cfg):\n    return float('nan')\n",
        "MOD:score",
        "MOD:score did not return a finite number: it returned nan",
    ),
    plugin(
        "none",
        "def score(cfg):\n    pass\n",
        "MOD:score",
        "MOD:score did not return a number: it returned None",
    ),
    plugin(
        "str",
        "def score(cfg):\n    return '3.5'\n",
        "MOD:score",
        "MOD:score did not return a number: it returned a str '3.5'",
    ),
    plugin(
        "list", "def score(cfg):\n    return [1, 2]\n", "MOD:score", "it returned a list [1, 2]"
    ),
    plugin("not-callable", "score = 3\n", "MOD:score", "MOD:score is not callable: it is 3"),
    plugin("no-such-function", "def other(cfg):\n    return 1.0\n", "MOD:score", "has no 'score'"),
    plugin(
        "fails-on-import",
        "raise RuntimeError('needs a GPU table')\n",
        "MOD:score",
        "cannot import 'MOD': RuntimeError: needs a GPU table",
    ),
    plugin(
        "syntax-error",
        "def score(cfg)\n    return 1\n",
        "MOD:score",
        "cannot import 'MOD': SyntaxError",
    ),
    plugin(
        "exits-on-import",
        "import sys\nsys.exit(3)\n",
        "MOD:score",
        "cannot import 'MOD': SystemExit",
    ),
    plugin(
        "no-such-module", "", "bfnas_test_nowhere_at_all:score", "cannot import 'bfnas_test_nowhere"
    ),
    plugin("no-function-named", "", "MOD:", "a plugin is module:function"),
]


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """`{tmp}/plugins` importable, without __pycache__ written into the checked folder."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield
    for name in set(sys.modules) - before:
        if name.startswith("bfnas_test_"):
            del sys.modules[name]


@pytest.mark.parametrize("case", PLUGINS, ids=lambda c: c.id)
def test_an_objective_plugin_that_fails_is_one_line_and_no_run(
    case, tmp_path, capsys, monkeypatch, plugin_path
):
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_a_plugin_that_answers_is_used(tmp_path, capsys, monkeypatch, plugin_path):
    """The same harness with a working plugin: the search runs, and its run is stored."""
    from bfnas.cli import main

    name = f"bfnas_test_ok_{uuid.uuid4().hex[:8]}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text("def score(cfg):\n    return cfg.hidden\n")
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    (tmp_path / "fast.toml").write_text(FAST_PROFILE)
    trained_store(FAST_PROFILE)(tmp_path / "lat.db")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in search_argv(f"{name}:score")]
    assert main(argv) == 0, capsys.readouterr().err
    con = sqlite3.connect(tmp_path / "lat.db")
    runs = con.execute("SELECT kind, status, started <= finished FROM runs").fetchall()
    con.close()
    assert runs == [("search", "finished", 1)]


# -- Ray addresses (cause 13) -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_MALFORMED = [
    ("no-port", "127.0.0.1"),
    ("port-not-a-number", "127.0.0.1:gcs"),
    ("port-out-of-range", "127.0.0.1:70000"),
    ("no-host", ":6379"),
    ("empty", ""),
]


@pytest.mark.parametrize(("case_id", "address"), RAY_MALFORMED)
def test_a_malformed_ray_address_is_bad_input(case_id, address, tmp_path, capsys, monkeypatch):
    case = Refusal(
        case_id,
        profile_argv("fast.toml", "--ray", address),
        "--ray: ",
        {"tiny.toml": TINY_SPACE, "fast.toml": FAST_PROFILE},
    )
    assert "not a Ray address" in check_refusal(case, tmp_path, capsys, monkeypatch)


def test_a_malformed_address_in_a_profile_names_its_field(tmp_path, capsys, monkeypatch):
    text = FAST_PROFILE + '[target]\nkind = "ray"\nresource = "x"\naddress = "head-node"\n'
    case = Refusal(
        "profile-address",
        profile_argv("ray.toml"),
        "{tmp}/ray.toml: target.address",
        {"tiny.toml": TINY_SPACE, "ray.toml": text},
    )
    check_refusal(case, tmp_path, capsys, monkeypatch)


@pytest.fixture
def silent_listener():
    """A port that accepts connections and never says a word (not a Ray cluster)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for s in held:
        s.close()
    server.close()


def test_a_ray_address_nobody_answers_at_is_one_line_within_seconds(
    tmp_path, capsys, monkeypatch, silent_listener
):
    fast = FAST_PROFILE + '[target]\nkind = "ray"\nresource = "fast"\nconnect_timeout_s = 2\n'
    for case_id, port, names in (
        ("nobody-listens", free_port(), "connection refused"),
        ("not-a-ray-cluster", silent_listener, "does not answer as a Ray"),
    ):
        folder = tmp_path / case_id
        folder.mkdir()
        case = Refusal(
            case_id,
            profile_argv("fast.toml", "--ray", f"127.0.0.1:{port}"),
            f"the Ray cluster at 127.0.0.1:{port}",
            {"tiny.toml": TINY_SPACE, "fast.toml": fast},
            code=1,
        )
        t = time.monotonic()
        line = check_refusal(case, folder, capsys, monkeypatch)
        assert names in line and time.monotonic() - t < 30


def test_an_unreachable_ray_cluster_ends_the_process_quietly(tmp_path):
    """The whole command in its own process: one line, exit 1, no traceback and none of
    Ray's warnings, in bounded time (it used to hang for over 7 minutes). The bound is loose:
    the process imports torch and builds a supernet before it connects, which alone took
    over a minute on a loaded 2-core host; the test above bounds the connection itself."""
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    (tmp_path / "fast.toml").write_text(FAST_PROFILE)
    argv = [
        a.replace("{tmp}", str(tmp_path))
        for a in profile_argv("fast.toml", "--ray", f"127.0.0.1:{free_port()}")
    ]
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bfnas.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "BFNAS_LOG_DIR": str(tmp_path / "logs")},
    )
    assert time.monotonic() - t < 240
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("bfnas: error: cannot reach the Ray cluster at 127.0.0.1:")
    assert not (tmp_path / "lat.db").exists() and not (tmp_path / "logs").exists()


# -- Ctrl-C (the whole process group) -----------------------------------------------------------


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries `marker`: what the command started, wherever it is
    now (a fork server outlives its parent unless it is stopped)."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


def _count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_to_the_process_group_is_one_line_and_exit_130(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    (tmp_path / "fast.toml").write_text(FAST_PROFILE)
    db = tmp_path / "lat.db"
    marker = f"BFNAS_TEST_CTRL_C={uuid.uuid4().hex}"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in profile_argv("fast.toml")]
    # Far more than can finish before the interrupt, even when the store is read late.
    argv[argv.index("--samples") + 1] = "400"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bfnas.cli", *argv],
        cwd=REPO,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # What a terminal gives a command. A suite started in the background by a
        # non-interactive shell (`make test &`) has SIGINT ignored, every child inherits
        # that, and Python then keeps ignoring it: the child never sees the Ctrl-C (what made
        # this test hang 120 s in three such runs).
        preexec_fn=_default_sigint,
        env={
            **os.environ,
            marker.split("=")[0]: marker.split("=")[1],
            "BFNAS_LOG_DIR": str(tmp_path / "logs"),
            # A hang after the interrupt is answered with SIGABRT below: every thread's stack.
            "PYTHONFAULTHANDLER": "1",
        },
    )
    try:
        deadline = time.monotonic() + 600  # export and measure one subnet, on a busy host
        while _count(db, "SELECT COUNT(*) FROM measurements WHERE role = 'sample'") < 1:
            assert proc.poll() is None and time.monotonic() < deadline, "nothing was measured"
            time.sleep(0.1)
        time.sleep(0.3)  # into the next subnet: its export or its worker
        assert proc.poll() is None, "the job ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # the fault handler prints where it waits
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"still running 120 s after the Ctrl-C:\n{err}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(lines) == 1 and lines[0].startswith("bfnas: interrupted"), err
    assert _count(db, "SELECT COUNT(*) FROM runs WHERE status = 'interrupted'") == 1
    assert _count(db, "SELECT COUNT(*) FROM runs WHERE status != 'interrupted'") == 0
    assert _count(db, "SELECT COUNT(*) FROM claims") == 0  # nothing left claimed
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:  # the fork server and its worker
        time.sleep(0.1)
    assert not _marked(marker), "a process the command started outlived it"


def test_a_gpu_index_the_machine_lacks_is_named(tmp_path, monkeypatch):
    """Counted from the device nodes (and CUDA_VISIBLE_DEVICES), not from a CUDA library."""
    from bfnas.bench.device import gpu, probe

    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu.gpu_count(tmp_path) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu.gpu_count(tmp_path) == 1
    monkeypatch.setattr(probe, "gpu_count", lambda: 1)
    (bad,) = probe._device_id(1, "runtime.tensorrt.device_id")
    assert (
        not bad.ok and "no GPU 1 here" in bad.detail and bad.field == "runtime.tensorrt.device_id"
    )
    assert probe._device_id(0, "f")[0].ok
    monkeypatch.setattr(probe, "gpu_count", lambda: 0)
    assert probe._device_id(3, "f") == []  # no GPU at all: the GPU check says so already
