import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.encoder_io import token_batches
from bfnas.models.deploy.onnx_export import ExportSettings, torch_outputs
from bfnas.models.deploy.recipes import RECIPES, get_recipe
from bfnas.models.space.subnet import SubnetConfig

CFG = SubnetConfig(2, 128, (4, 2), (128, 64), (256, 192))


@pytest.fixture(scope="module")
def cache(artifact_root):
    return ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))


def _run(path, feed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def test_fp32_export_matches_torch_at_other_shapes(cache, tiny_supernet):
    art = cache.build(tiny_supernet, CFG, "fp32")
    model = onnx.load(str(art.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    dense = tiny_supernet.extract(CFG)
    feeds = token_batches(2, 3, 40, 30522, seed=9)  # not the shapes it was exported with
    for feed, want in zip(feeds, torch_outputs(dense, feeds), strict=True):
        assert np.abs(_run(art.path, feed) - want).max() < 1e-4
    assert art.fidelity["passed"] and art.fidelity["max_abs_diff"] < 1e-4


def test_artifact_is_cached_by_content(cache, tiny_supernet):
    first = cache.build(tiny_supernet, CFG, "int8", get_recipe("dynamic"))
    mtime = first.path.stat().st_mtime_ns
    again = cache.build(tiny_supernet, CFG, "int8", get_recipe("dynamic"))
    assert again.cached and again.key == first.key and again.sha256 == first.sha256
    assert again.path.stat().st_mtime_ns == mtime
    other = cache.build(
        tiny_supernet, SubnetConfig(1, 64, (1,), (32,), (64,)), "int8", get_recipe("dynamic")
    )
    assert other.key != first.key
    meta = json.loads((first.path.parent / "artifact.json").read_text())
    assert meta["recipe"]["name"] == "dynamic" and meta["weights_sha256"] == first.weights_sha256
    assert set(meta["versions"]) >= {"torch", "onnx", "onnxruntime", "bfnas"}
    assert not list(cache.root.glob(".build-*"))


def test_changed_weights_change_the_key(cache, tiny_space):
    from bfnas.models.nn.supernet import SuperBert, SupernetDims

    other = SuperBert.random(SupernetDims.for_space(tiny_space), seed=5)
    a = cache.key(CFG, "w1", "fp32", None, False)
    assert a != cache.key(CFG, "w2", "fp32", None, False)
    art = cache.build(other, CFG, "fp32")
    assert not art.cached and art.supernet_source == {"kind": "random", "seed": 5}


def _initializers(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _quant_params(model):
    """(scale, zero point) arrays of every QuantizeLinear/DequantizeLinear node."""
    inits = _initializers(model)
    out = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3:
            out.append((node, inits.get(node.input[1]), inits.get(node.input[2])))
    return out


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_quantizes_and_keeps_fidelity(cache, tiny_supernet, name):
    art = cache.build(tiny_supernet, CFG, "int8", get_recipe(name))
    assert art.fidelity["passed"], art.fidelity
    model = onnx.load(str(art.path))
    ops = [n.op_type for n in model.graph.node]
    if name == "dynamic":
        assert ops.count("MatMulInteger") == 6 * CFG.layers  # Q, K, V, out, FFN in, FFN out
        return
    params = _quant_params(model)
    assert params, "no QDQ nodes: nothing was quantized"
    zps = [zp for _, _, zp in params if zp is not None]
    weight_scales = [
        s
        for node, s, _ in params
        if node.op_type == "DequantizeLinear" and s is not None and s.size > 1
    ]
    assert weight_scales, "weights are not per-channel"
    if name == "qdq":
        assert any(zp.dtype == np.uint8 for zp in zps), "activations should be uint8"
        assert any(zp.dtype == np.int8 for zp in zps), "weights should be int8"
    else:  # TensorRT's explicit quantization: int8 everywhere, zero point 0
        assert all(zp.dtype == np.int8 and not zp.any() for zp in zps)
        consumers = {
            n.op_type
            for n in model.graph.node
            if any(i.endswith("_DequantizeLinear_Output") for i in n.input)
        }
        assert consumers <= {"MatMul", "Gemm"}, consumers


def test_fusion_is_recorded(cache, tiny_supernet):
    art = cache.build(tiny_supernet, CFG, "int8", get_recipe("dynamic", fuse=True))
    assert art.fuse and art.recipe["fuse"]
    assert art.graph["fusion"]["Attention"] == CFG.layers
    assert art.graph["quantization"]["QAttention"] == CFG.layers
    assert art.fidelity["passed"] and "optimize" in art.seconds


def test_failed_fidelity_is_reported_not_hidden(tiny_supernet, tmp_path):
    strict = ArtifactCache(tmp_path, fidelity=FidelitySettings(threshold=0.999999, seq_len=32))
    art = strict.build(tiny_supernet, CFG, "int8", get_recipe("qdq-symmetric"))
    assert not art.fidelity["passed"] and art.fidelity["cosine"] < 0.999999


def test_dynamo_exporter_also_matches(tiny_supernet, tmp_path):
    cache = ArtifactCache(
        tmp_path,
        export=ExportSettings(exporter="dynamo", opset=18),
        fidelity=FidelitySettings(seq_len=32),
    )
    art = cache.build(tiny_supernet, CFG, "fp32")
    assert art.fidelity["max_abs_diff"] < 1e-4 and art.export["exporter"] == "dynamo"
    assert not list(tmp_path.rglob("*.onnx.data"))  # weights inside the one file


def test_unknown_recipe_and_precision():
    with pytest.raises(InputError) as err:
        get_recipe("int4")
    assert err.value.setting == "recipe" and "dynamic" in err.value.reason
