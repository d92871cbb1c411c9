"""The direct graph writer against the path it replaces: TorchScript export + ONNX Runtime's
dynamic quantizer."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.encoder_io import token_batches
from bfnas.models.deploy.graph_writer import write_onnx
from bfnas.models.deploy.onnx_export import ExportSettings, torch_outputs
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.subnet import SubnetConfig

CFG = SubnetConfig(2, 128, (4, 2), (128, 64), (256, 192))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_supernet):
    """The same INT8 subnet built both ways."""
    root = tmp_path_factory.mktemp("writer")
    fidelity = FidelitySettings(seq_len=32)
    direct = ArtifactCache(root, fidelity=fidelity).build(
        tiny_supernet, CFG, "int8", get_recipe("dynamic")
    )
    traced = ArtifactCache(
        root, export=ExportSettings(exporter="torchscript"), fidelity=fidelity
    ).build(tiny_supernet, CFG, "int8", get_recipe("dynamic"))
    return direct, traced


def _session(path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, saved=None):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    if saved:
        opts.optimized_model_filepath = str(saved)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_dynamic_int8_uses_the_writer_and_records_it(pair):
    direct, traced = pair
    assert direct.export["exporter"] == "direct" and traced.export["exporter"] == "torchscript"
    assert direct.key != traced.key
    assert direct.graph["quantization"] == traced.graph["quantization"]
    assert direct.fidelity["passed"] and direct.fidelity["cosine"] > 0.999


def test_quantized_weights_equal_onnx_runtime_quantizers(pair):
    direct, traced = pair

    def tensors(path):
        model = onnx.load(str(path))
        arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
        quantized = sorted(
            a.tobytes() for a in arrays if a.dtype in (np.int8, np.uint8) and a.ndim == 2
        )
        scales = sorted(float(a) for a in arrays if a.dtype == np.float32 and a.ndim == 0)
        return quantized, scales

    (q_direct, s_direct), (q_traced, s_traced) = tensors(direct.path), tensors(traced.path)
    assert len(q_direct) == 2 * 6 + 3 and q_direct == q_traced
    assert [s for s in s_traced if s in s_direct] == s_traced  # every quantizer scale is there


@pytest.mark.parametrize(
    "level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
)
def test_same_computation_as_the_quantized_export(pair, level):
    direct, traced = pair
    a, b = _session(direct.path, level), _session(traced.path, level)
    for feed in token_batches(2, 2, 24, 30522, seed=4):
        assert np.array_equal(a.run(None, feed)[0], b.run(None, feed)[0])


def test_onnx_runtime_optimizes_both_into_the_same_graph(pair, tmp_path):
    """What is timed is ORT's optimized graph: the writer must not change it (a graph whose
    attention residual fused into SkipLayerNormalization ran 10-20 % slower here)."""
    ops = []
    for art, name in zip(pair, ("direct", "traced"), strict=True):
        _session(art.path, saved=tmp_path / f"{name}.onnx")
        ops.append(Counter(n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node))
    assert ops[0] == ops[1]
    assert ops[0]["SkipLayerNormalization"] == CFG.layers  # the FFN residuals only
    assert ops[0]["MatMulIntegerToFloat"] + ops[0]["DynamicQuantizeMatMul"] == 6 * CFG.layers


def test_fp32_graph_matches_torch_at_any_shape(tiny_supernet, tmp_path):
    cfg = SubnetConfig(2, 96, (1, 4), (96, 32), (64, 256))
    state = {k: v.detach().numpy() for k, v in tiny_supernet.sliced_state(cfg).items()}
    ops = write_onnx(state, cfg, tmp_path / "m.onnx")
    assert (
        ops["MatMul"] == 8 * cfg.layers
    )  # 6 projections + 2 attention matmuls and "MatMulInteger" not in ops
    sess = _session(tmp_path / "m.onnx")
    feeds = token_batches(2, 3, 40, 30522, seed=2)
    for feed, want in zip(feeds, torch_outputs(tiny_supernet.extract(cfg), feeds), strict=True):
        got = sess.run(None, feed)[0]
        assert got.shape == (3, 40, 96) and np.abs(got - want).max() < 1e-5


def test_recipes_the_writer_cannot_make_fall_back_to_torchscript(tmp_path, tiny_supernet):
    cache = ArtifactCache(tmp_path, fidelity=FidelitySettings(seq_len=32))
    assert cache.export_for("int8", get_recipe("qdq"), False).exporter == "torchscript"
    assert (
        cache.export_for("int8", get_recipe("dynamic", fuse=True), True).exporter == "torchscript"
    )
    assert cache.export_for("fp32", None, False).exporter == "direct"
    art = cache.build(tiny_supernet, CFG, "int8", get_recipe("dynamic", fuse=True))
    assert art.export["exporter"] == "torchscript" and art.graph["fusion"]
