"""Each backend's `[runtime]` settings are its own (`bench.runtime_settings`): another backend's
setting is refused in one line naming the file and the field, each backend has its own
defaults, and a resolved profile carries what its backend's device code reads, nothing else."""

from types import SimpleNamespace

import pytest

from bfnas.bench.device.backends.tensorrt.harness import build_settings
from bfnas.bench.device.probe import local_checks
from bfnas.bench.device.settings import DeviceSettings
from bfnas.bench.hardware_profile import load_profile, parse_profile, shipped_profiles
from bfnas.bench.runtime_settings import OnnxRuntimeSettings, TensorRTSettings
from bfnas.cli import main
from bfnas.errors import InputError

# What a resolved runtime holds, by backend: what the worker reads for every backend
# (threads, affinity) and what that backend's own code reads.
RESOLVED_KEYS = {
    "onnxruntime": {
        "backend",
        "intra_op_threads",
        "cpu_affinity",
        "providers",
        "provider_options",
        "inter_op_threads",
        "include_copies",
    },
    "tensorrt": {
        "backend",
        "intra_op_threads",
        "cpu_affinity",
        "include_copies",
        "workspace_mb",
        "tensorrt",
    },
}

# (backend, a setting of the other backend, the field the refusal names)
OTHER_BACKENDS_SETTINGS = [
    ("onnxruntime", "workspace_mb = 2048", "runtime.workspace_mb"),
    ("onnxruntime", "[runtime.tensorrt]\ndevice_id = 1", "runtime.tensorrt"),
    ("tensorrt", 'providers = ["CUDAExecutionProvider"]', "runtime.providers"),
    ("tensorrt", "provider_options = [{ device_id = 0 }]", "runtime.provider_options"),
    ("tensorrt", "inter_op_threads = 2", "runtime.inter_op_threads"),
]


@pytest.mark.parametrize(("backend", "setting", "field"), OTHER_BACKENDS_SETTINGS)
def test_another_backend_s_setting_is_one_line_naming_file_and_field(
    tmp_path, capsys, backend, setting, field
):
    path = tmp_path / "device.toml"
    path.write_text(
        'name = "device"\n[quantization]\nrecipe = "qdq-symmetric"\n'
        f'[runtime]\nbackend = "{backend}"\n{setting}\n'
    )
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert err.value.line() == f"{path}: {field}: unknown field"
    assert main(["hw", "show", str(path)]) == 2
    out, errout = capsys.readouterr()
    assert out == "" and errout == f"bfnas: error: {path}: {field}: unknown field\n"


def test_a_backend_s_own_setting_out_of_range_names_its_field(tmp_path):
    path = tmp_path / "trt.toml"
    path.write_text(
        'name = "trt"\nprecision = "fp16"\n[runtime]\nbackend = "tensorrt"\nworkspace_mb = 0\n'
    )
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert err.value.field == "runtime.workspace_mb" and "greater than 0" in err.value.reason


def test_each_backend_has_its_own_defaults():
    # No [runtime] table, or one without a backend: ONNX Runtime, as it always was.
    for runtime in ({}, {"runtime": {}}):
        ort = parse_profile({"name": "a", **runtime}, "<t>").runtime
        assert isinstance(ort, OnnxRuntimeSettings)
        assert ort.model_dump() == {
            "backend": "onnxruntime",
            "intra_op_threads": 1,
            "cpu_affinity": None,
            "providers": ["CPUExecutionProvider"],
            "provider_options": [],
            "inter_op_threads": 1,
            "include_copies": False,
        }
    trt = parse_profile(
        {"name": "b", "precision": "fp16", "runtime": {"backend": "tensorrt"}}, "<t>"
    ).runtime
    assert isinstance(trt, TensorRTSettings)
    assert trt.model_dump() == {
        "backend": "tensorrt",
        "intra_op_threads": 1,
        "cpu_affinity": None,
        "include_copies": False,
        "workspace_mb": 1024,
        # Always recorded, defaults filled in, without a [runtime.tensorrt] table.
        "tensorrt": {"device_id": 0, "builder_optimization_level": 3, "fp16_baseline": False},
    }
    # What a model card names until a measurement says what really ran (bfnas.task_model).
    assert ort.runs_on == "CPUExecutionProvider" and trt.runs_on == "tensorrt"


def test_the_cross_checks_with_precision_and_recipe_stay():
    with pytest.raises(InputError, match="fp16 on ONNX Runtime's CPU provider"):
        parse_profile({"name": "a", "precision": "fp16"}, "<t>")
    gpu = {"providers": ["CUDAExecutionProvider"]}
    assert parse_profile({"name": "a", "precision": "fp16", "runtime": gpu}, "<t>")
    with pytest.raises(InputError, match="must be qdq-symmetric"):
        parse_profile({"name": "b", "runtime": {"backend": "tensorrt"}}, "<t>")


@pytest.mark.parametrize("name", sorted(shipped_profiles()))
def test_a_resolved_runtime_holds_its_backend_s_settings_and_loads_again(name):
    profile = load_profile(name)
    resolved = profile.resolved()
    assert set(resolved["runtime"]) == RESOLVED_KEYS[profile.runtime.backend]
    # What a job carries validates again (a Ray device, `bfnas worker`) to the same profile.
    again = parse_profile(resolved, "job profile")
    assert again.runtime == profile.runtime and again.hash() == profile.hash()


def test_the_device_code_reads_what_a_resolved_profile_sends():
    # Reads that would raise on a setting the job lacks (`DeviceSettings` has no defaults).
    trt = DeviceSettings(load_profile("x86-trt-int8").resolved())
    built = build_settings(trt, "int8", SimpleNamespace(calibrate=False))
    assert built.workspace_mb == 2048 and built.optimization_level == 3
    assert trt.runtime.include_copies is False and trt.runtime.tensorrt.fp16_baseline is True
    for name in ("x86-trt-int8", "local-cpu-int8", "x86-cuda-ort-int8"):
        checks = local_checks(DeviceSettings(load_profile(name).resolved()))
        assert any(c.name == "threads" for c in checks)
    cuda = DeviceSettings(load_profile("x86-cuda-ort-int8").resolved()).runtime
    assert cuda.include_copies is False and cuda.provider_options[0]["device_id"] == 0
