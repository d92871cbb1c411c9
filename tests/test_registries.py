"""A backend, a runner kind and an objective are each one registration: an entry added to its
registry (here by monkeypatch, as a plugin's module would) is validated, listed and used end
to end through the very lookups the CLI and the worker use, and an unknown name is one line
naming every registered one. The shipped entries resolve, inside `bfnas.bench`, and a
device measuring with ONNX Runtime never imports the TensorRT code."""

import importlib
import json
import random
import subprocess
import sys
import tomllib
from typing import Literal

import pytest
from conftest import FAST_PROFILE, TINY_SPACE

from bfnas.bench.device.backends import BACKENDS, Backend, backend_named
from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.device.lazy_import import load_entry
from bfnas.bench.device.probe import Check
from bfnas.bench.device.timing import DeviceTime
from bfnas.bench.device.worker import run_job_text
from bfnas.bench.hardware_profile import load_profile, parse_profile
from bfnas.bench.runners.base import Runner, job_json, parse_worker_output, runner_for
from bfnas.bench.runners.local import local_probe
from bfnas.bench.runners.registry import RUNNER_KINDS, RunnerKind, runner_kind
from bfnas.bench.runners.targets import TargetSettings
from bfnas.bench.runtime_settings import RuntimeSettings
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.space.search_space import SearchSpace
from bfnas.search import objectives

ARCH = '{"layers": 1, "hidden": 64, "heads": 1, "qkv": 32, "ffn": 64}'
# What the registered test backend says each run took, on its own clock (as TensorRT's
# CUDA events do): a median of exactly this proves its inference function was timed.
CONSTANT_MS = 1.25


# --- a backend and a runner kind, as a plugin module would write them ------------------------


class ConstantSettings(RuntimeSettings):
    """The test backend's own `[runtime]` settings: what each run reports."""

    backend: Literal["constant"] = "constant"
    ms: float = CONSTANT_MS


def constant_infer(model_path: str, profile) -> tuple:
    """The test backend's `make_infer`: every run reports its setting `ms`."""
    ms = profile.runtime.ms
    return (lambda: DeviceTime(ms)), "constant-backend", {"model": model_path}


def constant_checks(profile) -> list[Check]:
    return [Check("constant backend", True, "always here", "runtime.backend")]


class InProcessRunner(Runner):
    """The test kind's runner: each job measured by the worker's own code in this process,
    so the backend registered above (in this process only) is the one the job finds."""

    lanes = 1
    jobs: list[str] = []

    def run(self, model, sha256, profile, anchor=None) -> MeasurementResult:
        InProcessRunner.jobs.append(model)
        code, out = run_job_text(job_json(model, sha256, profile, anchor))
        return parse_worker_output(code, out, "")

    def probe(self, profile) -> list[dict]:
        return in_process_probe(profile)

    def close(self) -> None:
        pass


class InProcessTarget(TargetSettings):
    """The test kind's own `[target]` settings: it needs a host."""

    kind: Literal["in-process"] = "in-process"
    host: str
    workdir: str = "~/.cache/bfnas"


def in_process_runner(profile) -> InProcessRunner:
    return InProcessRunner()


def in_process_probe(profile) -> list[dict]:
    return [
        {"name": "in-process", "ok": True, "detail": "this test's process"},
        *local_probe(profile),
    ]


@pytest.fixture
def registered(monkeypatch):
    """The test backend `constant` (with a setting of its own) and the test runner kind
    `in-process` (it needs a host, to show a kind's required fields come from its
    registration)."""
    here = __name__
    backend = Backend(
        f"{here}:constant_infer", f"{here}:constant_checks", f"{here}:ConstantSettings"
    )
    monkeypatch.setitem(BACKENDS, "constant", backend)
    kind = RunnerKind(
        f"{here}:in_process_runner", f"{here}:in_process_probe", f"{here}:InProcessTarget"
    )
    monkeypatch.setitem(RUNNER_KINDS, "in-process", kind)
    monkeypatch.setattr(InProcessRunner, "jobs", [])


def profile_file(tmp_path, target: str = "", runtime: str = "") -> str:
    text = FAST_PROFILE.replace("[runtime]\n", f"[target]\n{target}\n[runtime]\n{runtime}\n")
    path = tmp_path / "device.toml"
    path.write_text(text)
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- backends ----------------------------------------------------------------------------


def test_a_registered_backend_is_checked_and_measured_through_the_cli(
    registered, tmp_path, tiny_space_file, capsys
):
    hw = profile_file(tmp_path, 'kind = "in-process"\nhost = "here"', 'backend = "constant"')
    code, out, _ = run(capsys, "hw", "check", hw, "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 0 and checks["constant backend"]["ok"] and checks["in-process"]["ok"]
    assert "onnxruntime" not in checks  # the other backend's checks are not run

    code, out, err = run(
        capsys,
        *("bench", "--hw", hw, "--space", str(tiny_space_file), "--arch", ARCH),
        *("--artifacts", str(tmp_path / "art"), "--json"),
    )
    result = json.loads(out)
    assert code == 0, err
    assert result["provider"] == "constant-backend" and result["median_ms"] == CONSTANT_MS
    assert str(tmp_path / "art") in InProcessRunner.jobs[-1]


def test_a_backend_s_settings_come_from_its_registration(registered, tmp_path):
    profile = load_profile(profile_file(tmp_path, runtime='backend = "constant"\nms = 2.5'))
    assert isinstance(profile.runtime, ConstantSettings) and profile.runtime.ms == 2.5
    assert profile.resolved()["runtime"] == {
        "backend": "constant",
        "intra_op_threads": 1,
        "cpu_affinity": None,
        "ms": 2.5,
    }
    # Its own setting reaches the device: each run reports it.
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read by the constant backend")
    code, out = run_job_text(job_json(str(model), None, profile, None))
    assert code == 0 and json.loads(out)["median_ms"] == 2.5
    # Another backend's setting is not this backend's, nor is this one's theirs.
    with pytest.raises(InputError, match="unknown field") as err:
        load_profile(profile_file(tmp_path, runtime='backend = "constant"\nproviders = ["X"]'))
    assert err.value.field == "runtime.providers"
    with pytest.raises(InputError, match="unknown field") as err:
        load_profile(profile_file(tmp_path, runtime="ms = 2.5"))
    assert err.value.field == "runtime.ms"


def test_an_unknown_backend_is_one_line_naming_the_registered_ones(registered, tmp_path, capsys):
    hw = profile_file(tmp_path, runtime='backend = "tflite"')
    with pytest.raises(InputError) as err:
        load_profile(hw)
    assert err.value.field == "runtime.backend"
    assert "onnxruntime, tensorrt, constant" in str(err.value) and "'tflite'" in str(err.value)
    code, out, err_text = run(capsys, "hw", "show", hw)
    assert code == 2 and out == "" and err_text.count("\n") == 1 and "constant" in err_text
    with pytest.raises(ValueError, match="registered: onnxruntime, tensorrt, constant"):
        backend_named("tflite")


def test_an_unregistered_backend_fails_the_job_as_data(registered, tmp_path):
    # A profile made where the backend is registered, measured by a worker whose bfnas lacks
    # it: the job fails as data naming the worker's registered backends, no traceback.
    hw = profile_file(tmp_path, runtime='backend = "constant"')
    profile = load_profile(hw)
    del BACKENDS["constant"]
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read by any backend")
    code, out = run_job_text(job_json(str(model), None, profile, None))
    result = json.loads(out)
    assert code == 1 and result["status"] == "failed"
    assert "'constant'" in result["reason"]
    assert "registered: onnxruntime, tensorrt" in result["reason"]


# --- runner kinds ------------------------------------------------------------------------


def test_a_registered_runner_kind_is_what_runner_for_builds(registered, tmp_path):
    profile = load_profile(profile_file(tmp_path, 'kind = "in-process"\nhost = "h"'))
    assert isinstance(runner_for(profile), InProcessRunner)
    assert runner_kind("in-process").load_settings() is InProcessTarget
    assert isinstance(profile.target, InProcessTarget) and profile.target.host == "h"


def test_a_kind_s_settings_come_from_its_registration(registered, tmp_path, capsys):
    hw = profile_file(tmp_path, 'kind = "in-process"')
    with pytest.raises(InputError, match="Field required") as err:
        load_profile(hw)
    assert err.value.field == "target.host"
    # Another kind's setting is not this kind's.
    with pytest.raises(InputError, match="unknown field") as err:
        load_profile(profile_file(tmp_path, 'kind = "in-process"\nhost = "h"\nresource = "r"'))
    assert err.value.field == "target.resource"
    code, _, err_text = run(capsys, "hw", "check", hw)
    assert code == 2 and err_text.count("\n") == 1


def test_an_unknown_runner_kind_is_one_line_naming_the_registered_ones(
    registered, tmp_path, capsys
):
    hw = profile_file(tmp_path, 'kind = "carrier-pigeon"')
    with pytest.raises(InputError) as err:
        load_profile(hw)
    assert err.value.field == "target.kind"
    assert "local, ssh, ray, adb, in-process" in str(err.value)
    assert "'carrier-pigeon'" in str(err.value)
    code, out, err_text = run(capsys, "hw", "check", hw)
    assert code == 2 and out == "" and err_text.count("\n") == 1
    with pytest.raises(ValueError, match="registered: local, ssh, ray, adb, in-process"):
        runner_kind("carrier-pigeon")


# --- objectives --------------------------------------------------------------------------


def _store_with_rows(path, profile, rows: int = 40) -> None:
    """Trusted rows of the tiny space whose latency follows MACs: what a search fits from."""
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
            ms = 0.5 + cfg.total_macs(32, 1) / 1e7
            result = {"status": "ok", "median_ms": ms, "mean_ms": ms, "runs": 10}
            store.add_measurement(
                phash,
                cfg,
                space.name,
                MeasurementResult.from_dict(result | {"median_rel_ci": 0.01}),
            )


def test_a_registered_objective_drives_a_cli_search(
    monkeypatch, tmp_path, fast_profile_file, tiny_space_file, capsys
):
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(objectives.OBJECTIVES))

    @objectives.objective("narrowest")
    def narrowest(settings):
        return lambda cfg: -float(cfg.hidden)

    db = tmp_path / "lat.db"
    _store_with_rows(db, load_profile(fast_profile_file))
    code, out, err = run(
        capsys,
        *("search", "--hw", str(fast_profile_file), "--space", str(tiny_space_file)),
        *("--db", str(db), "--max-latency-ms", "1000", "--objective", "narrowest"),
        *("--population", "20", "--parents", "5", "--generations", "3"),
        *("--out", str(tmp_path / "out"), "--json"),
    )
    assert code == 0, err
    result = json.loads(out)
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert result["objective_name"] == "narrowest"
    assert best["objective"] == -best["arch"]["hidden"]  # scored by the registered function


def test_an_unknown_objective_names_the_registered_ones(monkeypatch):
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(objectives.OBJECTIVES))
    objectives.objective("narrowest")(lambda settings: lambda cfg: 0.0)
    with pytest.raises(InputError) as err:
        objectives.load_objective("nope")
    line = err.value.line()
    assert (
        "\n" not in line
        and "params, neg-macs, oneshot, task, task-finetune, accuracy, narrowest" in line
    )
    assert objectives.load_objective("narrowest")(None) == 0.0


# --- the shipped registrations -----------------------------------------------------------


def _entries() -> list[tuple[str, str | None]]:
    """(entry, the package a relative one resolves against)."""
    package = "bfnas.bench.device.backends"
    backends = [(e, package) for b in BACKENDS.values() for e in (b.make_infer, b.checks)]
    kinds = [(e, None) for k in RUNNER_KINDS.values() for e in (k.build, k.probe)]
    return backends + kinds


@pytest.mark.parametrize(("entry", "package"), _entries())
def test_every_shipped_entry_resolves_inside_bench(entry, package):
    # The entries are strings, which the layering test cannot see: checked here instead. A
    # backend's is relative, inside the device package (shipped to devices without bfnas).
    if package is None:
        assert entry.startswith("bfnas.bench.")
    else:
        assert entry.startswith(".")
        module = importlib.import_module(entry.partition(":")[0], package)
        assert module.__name__.startswith("bfnas.bench.device.")
    assert callable(load_entry(entry, package))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_shipped_backend_names_its_settings_class_on_the_host(name):
    # The one registration of a backend names its settings too: an absolute entry outside the
    # device package (the host's pydantic class), whose backend is the registered name.
    entry = BACKENDS[name].settings
    assert entry.startswith("bfnas.bench.") and not entry.startswith("bfnas.bench.device.")
    settings = BACKENDS[name].load_settings()
    assert issubclass(settings, RuntimeSettings) and settings().backend == name


def test_a_malformed_entry_is_a_registration_mistake():
    with pytest.raises(ValueError, match="not module:function"):
        load_entry("bfnas.bench.runners.local")
    with pytest.raises(ValueError, match="has no function nothing_here"):
        load_entry("bfnas.bench.runners.local:nothing_here")


def test_an_onnxruntime_device_never_imports_the_tensorrt_code(tmp_path):
    """The fork server's preloading, a job and the checks of an onnxruntime profile, in a
    fresh process: ONNX Runtime and its harness are loaded; tensorrt, pycuda, bfnas's
    TensorRT modules, the SSH and Ray runners and Ray itself are not."""
    profile = parse_profile(tomllib.loads(FAST_PROFILE), "<test>")
    model = tmp_path / "missing.onnx"  # the job fails on the file; the lookups still run
    script = (
        "import json, sys\n"
        "from bfnas.bench.device.forkserver import _preload\n"
        "from bfnas.bench.device.worker import run_job_text\n"
        "from bfnas.bench.hardware_profile import HardwareProfile\n"
        "from bfnas.bench.runners.usable import probe\n"
        "job = sys.stdin.read()\n"
        "_preload()\n"
        "run_job_text(job)\n"
        "probe(HardwareProfile.model_validate(json.loads(job)['profile']))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=job_json(str(model), None, profile, None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert {"onnxruntime", "bfnas.bench.device.backends.ort"} <= loaded
    unwanted = {"tensorrt", "pycuda", "ray"}
    assert not [m for m in loaded if m.split(".")[0] in unwanted]
    assert not [
        m
        for m in loaded
        if m.startswith(
            (
                "bfnas.bench.device.backends.tensorrt",
                "bfnas.bench.runners.ssh",
                "bfnas.bench.runners.ray",
            )
        )
    ]
