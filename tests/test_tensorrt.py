"""TensorRT backend and GPU execution providers.

Everything that does not need a GPU runs here: the explicit-quantization checker on the
real `qdq-symmetric` graph and on broken copies of it, the FP16 twin of a QDQ graph, the
build plan per TensorRT version, shapes, cache keys, the engine build's steps against a
stand-in for TensorRT's builder API, the inspector parser, device-timed samples in the
timing loop, profile validation, and the error paths on a machine without TensorRT. Tests
marked `gpu` build and time real engines; they skip where there is no GPU.
"""

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from bfnas.bench.device.backends.ort import bound_inference, token_feed
from bfnas.bench.device.backends.ort_options import check_provider_options
from bfnas.bench.device.backends.tensorrt.build_plan import (
    BuildError,
    onnx_input_dims,
    plan_build,
    profile_shapes,
)
from bfnas.bench.device.backends.tensorrt.float_twin import strip_qdq
from bfnas.bench.device.backends.tensorrt.inspector import layer_precisions, tensor_precision
from bfnas.bench.device.backends.tensorrt.keys import (
    BuildSettings,
    DeviceIdentity,
    engine_key,
    timing_cache_key,
)
from bfnas.bench.device.backends.tensorrt.qdq_check import check_trt_qdq, has_qdq
from bfnas.bench.device.gpu import driver_version, gpu_device, module_status, tensorrt_missing
from bfnas.bench.device.timing import DeviceTime, StopRule, time_runs
from bfnas.bench.hardware_profile import load_profile, parse_profile
from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.subnet import SubnetConfig

CFG = SubnetConfig(2, 128, (4, 2), (128, 64), (256, 192))
MISSING = tensorrt_missing()
needs_gpu = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING) or "GPU present")


@pytest.fixture(scope="module")
def qdq_art(artifact_root, tiny_supernet):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    return cache.build(tiny_supernet, CFG, "int8", get_recipe("qdq-symmetric"))


@pytest.fixture
def qdq_model(qdq_art):
    return onnx.load(str(qdq_art.path))


def _init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def _set(model, name, array):
    _init(model, name).CopyFrom(numpy_helper.from_array(array, name))


def _nodes(model, op_type, feeding=None):
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return [
        n
        for n in model.graph.node
        if n.op_type == op_type
        and (feeding is None or any(c.op_type == feeding for c in consumers.get(n.output[0], [])))
    ]


# --- the explicit-quantization checker -------------------------------------------------


def test_qdq_symmetric_graph_meets_explicit_quantization_rules(qdq_model):
    assert has_qdq(qdq_model)
    # Quantized: every GEMM of the 2 layers (Q, K, V, out, FFN in, FFN out + 2 attention
    # matmuls) reads dequantized inputs; the weights are int8 initializers.
    weight_dqs = [
        n
        for n in _nodes(qdq_model, "DequantizeLinear")
        if n.input[0] in {t.name for t in qdq_model.graph.initializer}
    ]
    assert len(weight_dqs) == 6 * CFG.layers
    assert check_trt_qdq(qdq_model) == []


def _zero_point_3(m):
    q = _nodes(m, "QuantizeLinear")[0]
    _set(m, q.input[2], np.array(3, dtype=np.int8))
    return "zero point is not 0"


def _zero_point_uint8(m):
    q = _nodes(m, "QuantizeLinear")[0]
    _set(m, q.input[2], np.array(0, dtype=np.uint8))
    return "dtype uint8"


def _negative_scale(m):
    q = _nodes(m, "QuantizeLinear")[0]
    _set(m, q.input[1], np.array(-0.1, dtype=np.float32))
    return "finite and positive"


def _scale_from_input(m):
    q = _nodes(m, "QuantizeLinear")[0]
    m.graph.input.append(helper.make_tensor_value_info("runtime_scale", onnx.TensorProto.FLOAT, []))
    q.input[1] = "runtime_scale"
    return "not a build-time constant"


def _contrib_op(m):
    n = _nodes(m, "Softmax")[0]
    n.op_type, n.domain = "BiasSoftmax", "com.microsoft"
    return "not a standard ONNX op"


def _unsupported_op(m):
    _nodes(m, "Erf")[0].op_type = "NonZero"
    return "not in the ops checked"


def _axis_along_reduction(m):
    dq = next(
        n
        for n in _nodes(m, "DequantizeLinear", feeding="MatMul")
        if n.input[0] in {t.name for t in m.graph.initializer}
    )
    w = numpy_helper.to_array(_init(m, dq.input[0]))
    dq.attribute[0].i = 0  # axis 0: the input-feature dimension MatMul sums over
    _set(m, dq.input[1], np.full(w.shape[0], 0.01, dtype=np.float32))
    _set(m, dq.input[2], np.zeros(w.shape[0], dtype=np.int8))
    return "sums over"


def _weight_minus_128(m):
    dq = next(
        n
        for n in _nodes(m, "DequantizeLinear")
        if n.input[0] in {t.name for t in m.graph.initializer}
    )
    w = numpy_helper.to_array(_init(m, dq.input[0])).copy()
    w.flat[0] = -128
    _set(m, dq.input[0], w)
    return "-128"


def _q_feeds_add(m):
    q = _nodes(m, "QuantizeLinear")[0]
    add = _nodes(m, "Add")[0]
    add.input[0] = q.output[0]
    return "not only DequantizeLinear"


BROKEN = [
    _zero_point_3,
    _zero_point_uint8,
    _negative_scale,
    _scale_from_input,
    _contrib_op,
    _unsupported_op,
    _axis_along_reduction,
    _weight_minus_128,
    _q_feeds_add,
]


@pytest.mark.parametrize("breaker", BROKEN, ids=[b.__name__.strip("_") for b in BROKEN])
def test_broken_graph_is_reported(qdq_model, breaker):
    expected = breaker(qdq_model)
    problems = check_trt_qdq(qdq_model)
    assert problems, "the broken graph passed"
    assert any(expected in p for p in problems), problems


def test_fp16_twin_is_the_same_network_without_quantization(qdq_model):
    twin = strip_qdq(qdq_model)
    onnx.checker.check_model(twin)
    assert not has_qdq(twin)
    assert {i.name for i in twin.graph.input} == {i.name for i in qdq_model.graph.input}
    feed = token_feed(2, 24)
    run = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        .run(None, feed)[0]
        .ravel()
        for m in (qdq_model, twin)
    ]
    cosine = float(run[0] @ run[1] / np.linalg.norm(run[0]) / np.linalg.norm(run[1]))
    # Only activation rounding differs (the weights keep their int8 values).
    assert cosine > 0.99, cosine


# --- plans, shapes, keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "precision", "qdq", "mode", "flags"),
    [
        ("10.3.0", "int8", True, "strongly-typed", ()),
        ("11.0.0", "int8", True, "strongly-typed", ()),
        ("8.6.1", "int8", True, "explicit-qdq", ("INT8", "FP16")),
        ("8.6.1", "int8", False, "implicit-calibration", ("INT8", "FP16")),
        ("10.3.0", "fp16", False, "fp16", ("FP16",)),
        ("10.3.0", "fp32", False, "fp32", ()),
    ],
)
def test_build_plan_per_tensorrt_version(version, precision, qdq, mode, flags):
    plan = plan_build(version, precision, qdq)
    assert plan.mode == mode and plan.flags == flags
    assert plan.strongly_typed == (
        mode == "strongly-typed" or (mode == "fp32" and version.startswith("1"))
    )
    assert plan.calibrate == (mode == "implicit-calibration")


@pytest.mark.parametrize(
    ("version", "precision", "qdq", "words"),
    [
        ("10.0.1", "int8", False, "qdq-symmetric"),  # implicit calibration is gone
        ("11.1.0", "fp16", False, "strongly typed"),
        ("10.0.1", "fp16", True, "Q/DQ"),
    ],
)
def test_build_plan_refuses_what_a_version_cannot_do(version, precision, qdq, words):
    with pytest.raises(BuildError, match=words):
        plan_build(version, precision, qdq)


def test_optimization_profile_is_the_workload_shape(qdq_model):
    dims = onnx_input_dims(qdq_model)
    assert set(dims) == {"input_ids", "attention_mask", "token_type_ids"}
    shapes = profile_shapes(dims, 4, 96)
    assert all(s == ((4, 96),) * 3 for s in shapes.values())
    with pytest.raises(BuildError, match="fixed"):
        profile_shapes({"input_ids": (1, 128)}, 1, 64)
    with pytest.raises(BuildError, match="rank"):
        profile_shapes({"pixels": (1, 3, 224, 224)}, 1, 64)


DEVICE = DeviceIdentity("NVIDIA A10", "8.6", "10.3.0", "12040", "12.4")
SETTINGS = BuildSettings("int8", plan_build("10.3.0", "int8", True), 1, 128, 1024)


def _variants():
    """One changed input per entry: every field of the device and of the settings."""
    out = [("onnx", "b" * 64, DEVICE, SETTINGS)]
    for name in DEVICE.to_dict():
        out.append((f"device.{name}", "a" * 64, replace(DEVICE, **{name: "other"}), SETTINGS))
    changes = {
        "precision": "fp16",
        "plan": plan_build("10.3.0", "fp32", False),
        "batch": 8,
        "seq_len": 64,
        "workspace_mb": 2048,
        "optimization_level": 5,
        "calibration_samples": 32,
        "profiling_verbosity": "LAYER_NAMES_ONLY",
    }
    assert set(changes) == set(SETTINGS.to_dict()), "a settings field is not tested"
    for name, value in changes.items():
        out.append((f"settings.{name}", "a" * 64, DEVICE, replace(SETTINGS, **{name: value})))
    return out


def test_engine_key_changes_with_every_input():
    base = engine_key("a" * 64, DEVICE, SETTINGS)
    assert base == engine_key("a" * 64, DEVICE, replace(SETTINGS))  # deterministic
    keys = {name: engine_key(sha, dev, st) for name, sha, dev, st in _variants()}
    assert base not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_timing_cache_is_per_device_and_tactic_settings_not_per_model():
    base = timing_cache_key(DEVICE, SETTINGS)
    for name, _sha, dev, st in _variants():
        key = timing_cache_key(dev, st)
        tactic = name.startswith("device.") or name in (
            "settings.plan",
            "settings.optimization_level",
        )
        assert (key != base) == tactic, name


# --- the build steps, against a stand-in for TensorRT's builder API ------------------------


class FakeTensorRT:
    """The part of TensorRT's Python API `build.build_engine` calls, recording each call, so
    the order and the arguments of a build are checked on CPU (a real build needs a GPU).
    The builder checks, when it serializes, that the ONNX parser is still alive: TensorRT's
    network points into weights the parser owns."""

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            pass

    class NetworkDefinitionCreationFlag:
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 5

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class ProfilingVerbosity:
        DETAILED = "detailed"

    class BuilderFlag:
        INT8 = "int8"
        FP16 = "fp16"

    def __init__(self):
        self.calls: list[tuple] = []
        self.parser = None

    def Builder(self, logger):  # TensorRT's name
        self.calls.append(("builder",))
        return FakeBuilder(self)

    def OnnxParser(self, network, logger):  # TensorRT's name
        import weakref

        parser = FakeParser()
        self.parser = weakref.ref(parser)
        return parser


class FakeParser:
    num_errors = 0

    def parse_from_file(self, path):
        return True


class FakeConfig:
    def __init__(self, trt):
        self.trt = trt
        self.builder_optimization_level = None
        self.profiling_verbosity = None
        self.timing = None

    def set_memory_pool_limit(self, pool, size):
        self.trt.calls.append(("pool", pool, size))

    def set_flag(self, flag):
        self.trt.calls.append(("flag", flag))

    def add_optimization_profile(self, profile):
        self.trt.calls.append(("profile", dict(profile.shapes)))

    def create_timing_cache(self, blob):
        self.trt.calls.append(("timing cache read", bytes(blob)))
        return bytes(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing = cache
        self.trt.calls.append(("timing cache set", ignore_mismatch))

    def get_timing_cache(self):
        class Cache:
            def serialize(inner):
                return self.timing + b"+tactics"

        return Cache()


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


class FakeBuilder:
    def __init__(self, trt):
        self.trt = trt

    def create_network(self, flags):
        self.trt.calls.append(("network", flags))
        return object()

    def create_builder_config(self):
        return FakeConfig(self.trt)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.trt.calls.append(("serialize", self.trt.parser() is not None, config.timing))
        return b"engine bytes"


def test_build_engine_runs_its_steps_in_order_and_caches_the_result(qdq_art, tmp_path):
    from bfnas.bench.device.backends.tensorrt.build import build_engine

    trt = FakeTensorRT()
    settings = replace(SETTINGS, seq_len=32)
    (tmp_path / "timing").mkdir()
    timing = tmp_path / "timing" / f"{timing_cache_key(DEVICE, settings)}.cache"
    timing.write_bytes(b"earlier")
    built = build_engine(trt, qdq_art.path, qdq_art.sha256, settings, DEVICE, tmp_path)
    assert not built.cached and built.path.read_bytes() == b"engine bytes"
    assert built.key == engine_key(qdq_art.sha256, DEVICE, settings)
    shape = ((1, 32),) * 3
    assert trt.calls == [
        ("builder",),
        ("network", 1 << 5),  # strongly typed: TensorRT >= 10 with Q/DQ, and no flags
        ("pool", "workspace", 1024 << 20),
        ("profile", {"input_ids": shape, "attention_mask": shape, "token_type_ids": shape}),
        ("timing cache read", b"earlier"),
        ("timing cache set", False),
        ("serialize", True, b"earlier"),  # the parser still alive, the timing cache in use
    ]
    assert timing.read_bytes() == b"earlier+tactics"
    assert not list(tmp_path.rglob(".tmp-*"))  # written whole: no part file left

    trt.calls.clear()
    again = build_engine(trt, qdq_art.path, qdq_art.sha256, settings, DEVICE, tmp_path)
    assert again.cached and again.path == built.path and trt.calls == []


def test_build_engine_refuses_before_building(qdq_model, tmp_path):
    from bfnas.bench.device.backends.tensorrt.build import build_engine

    broken = tmp_path / "broken.onnx"
    qdq_model.graph.node[0].domain = "com.microsoft"
    onnx.save(qdq_model, str(broken))
    trt = FakeTensorRT()
    with pytest.raises(BuildError, match="explicit-quantization rules: node"):
        build_engine(trt, broken, "c" * 64, replace(SETTINGS, seq_len=32), DEVICE, tmp_path)
    calibrating = BuildSettings("int8", plan_build("8.6.1", "int8", False), 1, 32, 1024)
    with pytest.raises(BuildError, match="needs calibration batches"):
        build_engine(
            trt, broken, "c" * 64, calibrating, replace(DEVICE, tensorrt="8.6.1"), tmp_path
        )
    assert ("serialize",) not in [c[:1] for c in trt.calls]
    assert not (tmp_path / "engines").exists()


# --- the engine inspector ---------------------------------------------------------------

INSPECTOR_JSON = {
    "Layers": [
        {
            "Name": "emb",
            "LayerType": "Gather",
            "Inputs": [
                {"Name": "input_ids", "Format/Datatype": "Int64"},
                {"Name": "table", "Format/Datatype": "Row major linear FP32 format"},
            ],
        },
        {
            "Name": "q_proj",
            "LayerType": "CaskGemmMatrixMultiply",
            "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear Int8 format"}],
            "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32 format"}],
        },
        {
            "Name": "k_proj",
            "LayerType": "CaskGemmMatrixMultiply",
            "Inputs": [
                {
                    "Name": "x",
                    "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format",
                }
            ],
        },
        {
            "Name": "ln",
            "LayerType": "Normalization",
            "Inputs": [{"Name": "y", "Format/Datatype": "Row major linear FP16 format"}],
        },
        {
            "Name": "softmax",
            "LayerType": "Softmax",
            "Inputs": [{"Name": "s", "Format/Datatype": "Half"}],
        },
        {
            "Name": "reformat",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "y", "Format/Datatype": "Row major linear Int8 format"}],
        },
        {"Name": "noop", "LayerType": "NoOp", "Inputs": []},
        {
            "Name": "{ForeignNode[attn]}",
            "LayerType": "Myelin",
            "Inputs": [{"Name": "h", "Format/Datatype": "Row major linear FP32 format"}],
        },
        {
            "Name": "shape",
            "LayerType": "Shuffle",
            "Inputs": [{"Name": "z", "Format/Datatype": "N/A due to dynamic shapes"}],
        },
    ],
    "Bindings": ["input_ids", "logits"],
}


def test_inspector_json_gives_per_layer_precision_shares():
    report = layer_precisions(json.dumps(INSPECTOR_JSON))
    assert report["detailed"] and report["layers"] == 9
    assert report["bookkeeping"] == 2 and report["myelin"] == 1
    assert report["by_precision"] == {"fp16": 2, "fp32": 1, "int8": 2, "unknown": 1}
    assert report["int8_share"] == pytest.approx(2 / 5)


def test_inspector_without_detailed_verbosity_says_so():
    assert layer_precisions({"Layers": ["a + b", "c"], "Bindings": []}) == {
        "detailed": False,
        "layers": 2,
    }


@pytest.mark.parametrize(
    ("fmt", "want"),
    [
        ("Row major linear Int8 format", "int8"),
        ("Half", "fp16"),
        ("Float", "fp32"),
        ("Row major linear BF16 format", "bf16"),
        ("Int32", None),
        ("Bool", None),
        ("N/A due to dynamic shapes", None),
        ("", None),
    ],
)
def test_tensor_precision(fmt, want):
    assert tensor_precision(fmt) == want


# --- timing on the device's own clock ---------------------------------------------------


def test_device_times_replace_the_host_clock():
    ticks = iter(range(10_000))

    def clock():  # a host clock that says every run took 1 s
        return float(next(ticks))

    rule = StopRule(
        warmup_runs=2,
        warmup_seconds=0,
        min_runs=5,
        min_seconds=0,
        max_seconds=1e9,
        target_rel_ci=1.0,
    )
    timing = time_runs(lambda: DeviceTime(2.5), rule, anchor=lambda: DeviceTime(0.5), clock=clock)
    assert timing.first_ms == 2.5 and set(timing.samples_ms) == {2.5}
    assert set(timing.anchor_ms) == {0.5} and set(timing.ratios()) == {5.0}
    host = time_runs(lambda: None, rule, clock=clock)
    assert set(host.samples_ms) == {1000.0}


# --- profiles -----------------------------------------------------------------------------


def test_tensorrt_profiles_record_their_settings_and_others_keep_their_identity():
    trt = load_profile("x86-trt-int8")
    assert trt.runtime.tensorrt.fp16_baseline
    assert trt.resolved()["runtime"]["tensorrt"]["builder_optimization_level"] == 3
    assert load_profile("jetson-orin-trt-int8").runtime.tensorrt.device_id == 0
    # A profile without the table resolves exactly as before the table existed.
    for name in ("local-cpu-int8", "x86-cuda-ort-int8", "x86-ort-trt-ep-int8"):
        assert "tensorrt" not in load_profile(name).resolved()["runtime"]


BAD_GPU_PROFILES = [
    (
        '[runtime]\nproviders = ["CUDAExecutionProvider"]\nprovider_options = [{ device = 0 }]',
        "no option 'device'",
    ),
    (
        '[runtime]\nproviders = ["TensorrtExecutionProvider"]\n'
        "provider_options = [{ trt_int8_enable = 1 }]",
        "must be a boolean",
    ),
    (
        '[runtime]\nproviders = ["TensorrtExecutionProvider"]\n'
        "provider_options = [{ trt_engine_cache_path = true }]",
        "must be a string",
    ),
    (
        '[runtime]\nproviders = ["TensorrtExecutionProvider"]\n'
        'provider_options = [{ trt_max_workspace_size = "2GB" }]',
        "must be a integer",
    ),
    (
        '[runtime]\nproviders = ["CUDAExecutionProvider"]\n'
        'provider_options = [{ cudnn_conv_algo_search = "FAST" }]',
        "one of EXHAUSTIVE",
    ),
    (
        '[runtime]\nproviders = ["CUDAExecutionProvider"]\nprovider_options = [{ device_id = -1 }]',
        "negative",
    ),
    # TensorRT's settings are not ONNX Runtime's (bench.runtime_settings).
    (
        '[runtime]\nbackend = "onnxruntime"\n[runtime.tensorrt]\nfp16_baseline = true',
        "unknown field",
    ),
    ("[runtime]\nworkspace_mb = 2048", "unknown field"),
    (
        '[runtime]\nbackend = "tensorrt"\n[runtime.tensorrt]\nbuilder_optimization_level = 9',
        "less than or equal to 5",
    ),
    ('[runtime]\nbackend = "tensorrt"\n[runtime.tensorrt]\nfp16_basline = true', "unknown field"),
    ('[runtime]\nbackend = "tensorrt"\n[quantization]\nrecipe = "qdq"', "qdq-symmetric"),
]


@pytest.mark.parametrize(("text", "words"), BAD_GPU_PROFILES)
def test_bad_gpu_settings_are_one_line_naming_file_and_field(tmp_path, capsys, text, words):
    path = tmp_path / "gpu.toml"
    path.write_text('name = "gpu"\n' + text + "\n")
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert err.value.where == str(path)
    assert (err.value.field or "").startswith("runtime") or "recipe" in err.value.reason
    assert words in err.value.reason
    assert main(["hw", "show", str(path)]) == 2
    out, errout = capsys.readouterr()
    assert out == "" and errout.count("\n") == 1 and str(path) in errout


def test_provider_options_of_unknown_providers_pass_unchecked():
    assert check_provider_options("OpenVINOExecutionProvider", {"device_type": "CPU"}) == []
    assert parse_profile(
        {
            "name": "x",
            "runtime": {
                "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                "provider_options": [
                    {"trt_fp16_enable": True, "trt_builder_optimization_level": 4},
                    {"device_id": 0, "use_tf32": False},
                ],
            },
        },
        "<t>",
    )


# --- what this machine lacks --------------------------------------------------------------


def test_gpu_probes_read_the_machine(tmp_path):
    assert gpu_device(tmp_path / "nvidia0") == (
        False,
        f"no NVIDIA GPU: {tmp_path / 'nvidia0'} missing",
    )
    (tmp_path / "nvidia0").touch()
    assert gpu_device(tmp_path / "nvidia0")[0]
    version = tmp_path / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 "
        "01:44:30 UTC 2024\nGCC version: gcc 12\n"
    )
    assert driver_version(version) == "550.54.14"
    assert driver_version(tmp_path / "absent") is None
    assert module_status("numpy").ok and module_status("numpy").version == np.__version__
    absent = module_status("no_such_pkg_bfnas", pip_name="no-such-pkg")
    assert not absent.ok and "no-such-pkg is not installed" in absent.detail


def test_hw_check_names_what_tensorrt_lacks_here(capsys):
    code = main(["hw", "check", "x86-trt-int8", "--json"])
    out, err = capsys.readouterr()
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert {"nvidia gpu", "tensorrt", "pycuda"} <= set(checks)
    failed = [c["detail"] for c in checks.values() if not c["ok"]]
    assert failed == [d for d in failed if d]  # every failure says why
    assert (code == 2) == bool(MISSING) == bool(failed)
    for line in MISSING:  # the harness and the probe agree on what is missing
        assert line in failed
    if MISSING:
        assert err.count("\n") == 1 and "not usable here" in err


def test_hw_check_of_a_gpu_provider_checks_the_gpu(capsys):
    code = main(["hw", "check", "x86-cuda-ort-int8", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert "nvidia gpu" in checks and "provider CUDAExecutionProvider" in checks
    usable = checks["nvidia gpu"]["ok"] and checks["provider CUDAExecutionProvider"]["ok"]
    assert (code == 0) == usable


def test_trt_inference_without_tensorrt_names_what_is_missing(qdq_art):
    from bfnas.bench.device.backends.tensorrt.harness import TensorRTUnavailable, require_tensorrt
    from bfnas.bench.device.worker import run_job_text

    if not MISSING:  # a complete GPU host: the GPU tests below cover it
        assert require_tensorrt()
        return
    with pytest.raises(TensorRTUnavailable) as err:
        require_tensorrt()
    for line in MISSING:
        assert line in str(err.value)
    job = {
        "model": str(qdq_art.path),
        "sha256": qdq_art.sha256,
        "profile": load_profile("x86-trt-int8").resolved(),
    }
    code, out = run_job_text(json.dumps(job))
    result = json.loads(out)
    assert code == 1 and result["status"] == "failed"
    assert "TensorRTUnavailable" in result["reason"] and MISSING[0] in result["reason"]


def test_io_binding_inference_matches_session_run(qdq_art):
    # The GPU providers' no-copies path, run here on the CPU device of ONNX Runtime.
    session = ort.InferenceSession(str(qdq_art.path), providers=["CPUExecutionProvider"])
    feed = token_feed(1, 32)
    out = session.get_outputs()[0].name
    binding = bound_inference(session, feed, out, "cpu")()
    np.testing.assert_allclose(
        binding.copy_outputs_to_cpu()[0], session.run([out], feed)[0], rtol=1e-5, atol=1e-5
    )


# --- on a GPU -------------------------------------------------------------------------------


def _gpu_profile(tmp_path, **tensorrt):
    p = load_profile("x86-trt-int8").resolved()
    p["runtime"]["tensorrt"].update(tensorrt)
    p["target"]["workdir"] = str(tmp_path)
    p["workload"]["seq_len"] = 32
    p["measure"].update(
        warmup_runs=5,
        warmup_seconds=0.0,
        min_runs=20,
        min_seconds=0.05,
        max_seconds=1.0,
        anchor=False,
    )
    return p


@pytest.mark.gpu
@needs_gpu
def test_int8_engine_builds_times_and_is_cached(qdq_art, tmp_path):
    from bfnas.bench.device.worker import run_job

    job = {
        "model": str(qdq_art.path),
        "sha256": qdq_art.sha256,
        "profile": _gpu_profile(tmp_path, fp16_baseline=True),
    }
    first = run_job(job)
    assert first.status == "ok" and first.provider.startswith("TensorRT ")
    details = first.details
    assert not details["engine"]["cached"] and details["timing"]["clock"] == "cuda-events"
    assert details["engine"]["plan"]["mode"] in ("strongly-typed", "explicit-qdq")
    assert details["precision"]["detailed"]
    assert details["precision"]["int8_share"] is None or details["precision"]["int8_share"] > 0
    assert details["fp16_baseline"]["ms"] is None or details["fp16_baseline"]["ms"] > 0
    assert 0 < first.median_ms < 1000
    again = run_job(job)
    assert again.details["engine"]["cached"]
    assert again.details["engine"]["key"] == details["engine"]["key"]


@pytest.mark.gpu
@needs_gpu
def test_copies_in_the_timed_region_are_recorded(qdq_art, tmp_path):
    from bfnas.bench.device.worker import run_job

    profile = _gpu_profile(tmp_path)
    profile["runtime"]["include_copies"] = True
    result = run_job({"model": str(qdq_art.path), "profile": profile})
    assert result.details["timing"]["includes_copies"] is True


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime here has no CUDAExecutionProvider (CPU build)",
)
def test_ort_cuda_provider_runs_the_qdq_graph(qdq_art):
    from bfnas.bench.device.worker import run_job

    profile = load_profile("x86-cuda-ort-int8").resolved()
    profile["workload"]["seq_len"] = 32
    profile["measure"].update(
        warmup_runs=2, min_runs=10, min_seconds=0.02, max_seconds=0.5, anchor=False
    )
    result = run_job({"model": str(qdq_art.path), "profile": profile})
    assert result.provider == "CUDAExecutionProvider"
    assert result.details["timing"] == {
        "clock": "host",
        "includes_copies": False,
        "io_binding": "cuda",
    }
