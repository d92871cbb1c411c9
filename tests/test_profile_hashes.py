"""The shipped profiles keep their hash byte for byte: a store's measurements and the
predictors fitted on them belong to a profile's hash, so a change of the schema (a new field,
a moved table, a new default) that moved one would orphan every store measured with it."""

import tomllib

import pytest

from bfnas.bench.hardware_profile import load_profile, parse_profile, shipped_profiles

# Recorded from the profiles as shipped; a new profile adds its line here.
GOLDEN = {
    "jetson-orin-trt-int8": "6d1933d3606b814a",
    "local-cpu-fp32": "08f3fb0bf476771d",
    "local-cpu-int8-2t": "f82ff096cf9f2fe7",
    "local-cpu-int8": "de90e92db27dc53f",
    "rpi4-ort-int8": "a4f1bca76cf7e6b8",
    "x86-cuda-ort-int8": "03831b2b019e9c84",
    "x86-ort-trt-ep-int8": "59f9088a7409a703",
    "x86-trt-int8": "c7ff2dc4a4b46cd2",
}


# Profiles not shipped, each setting a backend's own settings away from their defaults, with
# the hash each had before each backend had its own `[runtime]` settings class: recorded by
# running `parse_profile(tomllib.loads(text), name).hash()` at b78b444 (one flat `Runtime`),
# before bench/runtime_settings.py existed.
UNSHIPPED = {
    "ae37b1aa8e3930bc": """
name = "ort-pinned"
precision = "fp32"
[runtime]
backend = "onnxruntime"
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
provider_options = [{ device_id = 1, cudnn_conv_algo_search = "HEURISTIC" }, {}]
intra_op_threads = 3
inter_op_threads = 2
cpu_affinity = [0, 2, 3]
include_copies = true
""",
    "6cd909d60cbcf660": """
name = "ort-cpu-affinity"
[runtime]
intra_op_threads = 2
cpu_affinity = [1, 3]
""",
    "554834cf7fd5efa9": """
name = "trt-tuned"
precision = "fp16"
[runtime]
backend = "tensorrt"
include_copies = true
workspace_mb = 4096
intra_op_threads = 2
cpu_affinity = [1]
[runtime.tensorrt]
device_id = 1
builder_optimization_level = 5
fp16_baseline = true
""",
    "b6215ca1c072c08f": """
name = "trt-defaults"
[runtime]
backend = "tensorrt"
[quantization]
recipe = "qdq-symmetric"
""",
}


def test_every_shipped_profile_keeps_its_hash():
    assert set(shipped_profiles()) == set(GOLDEN)
    assert {name: load_profile(name).hash() for name in GOLDEN} == GOLDEN


def test_the_hash_moves_with_what_is_measured():
    # Were the hash blind to settings, the golden table would guard nothing.
    base = load_profile("local-cpu-int8")
    threads = base.model_copy(
        update={
            "runtime": base.runtime.model_copy(
                update={"intra_op_threads": base.runtime.intra_op_threads + 1}
            )
        }
    )
    assert threads.hash() != GOLDEN["local-cpu-int8"]


@pytest.mark.parametrize(("golden", "text"), UNSHIPPED.items(), ids=list(UNSHIPPED))
def test_a_backend_s_own_settings_hash_as_the_flat_runtime_did(golden, text):
    assert parse_profile(tomllib.loads(text), "<t>").hash() == golden


def test_the_hash_moves_with_each_backend_s_own_settings():
    trt = parse_profile(tomllib.loads(UNSHIPPED["554834cf7fd5efa9"]), "<t>")
    for update in ({"workspace_mb": 2048}, {"include_copies": False}):
        moved = trt.model_copy(update={"runtime": trt.runtime.model_copy(update=update)})
        assert moved.hash() != trt.hash()
    options = trt.runtime.tensorrt.model_copy(update={"builder_optimization_level": 4})
    moved = trt.model_copy(update={"runtime": trt.runtime.model_copy(update={"tensorrt": options})})
    assert moved.hash() != trt.hash()
