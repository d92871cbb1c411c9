"""Memory and model size: measured by the worker, kept in the store, predicted and held to
by a search (`bench.device.memory`, `search.resources`)."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from bfnas.bench.device.contract import MeasurementResult, Status
from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.runners.local import LocalRunner
from bfnas.bench.store.latency_row import LatencyRow
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.resources import (
    RESOURCES,
    ResourceLimits,
    ResourcePredictor,
    fit_resource_predictors,
    resource_admission,
)


def test_the_watch_sees_memory_taken_after_it_started_and_not_before():
    # In a fresh process, as a worker is: a long-lived one (this test run) may have freed
    # memory still resident that an allocation reuses without a new page.
    script = """
import json, numpy as np
from bfnas.bench.device.memory import MemoryWatch
held = np.ones(64 * 2**20 // 8)  # 64 MiB, resident (written)
watch = MemoryWatch()  # the high-water mark is reset: the array above is baseline
before = watch.read()
more = np.ones(48 * 2**20 // 8)
del more  # freed again: only the peak remembers it
print(json.dumps({"before": before, "after": watch.read()}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout)
    before, after = seen["before"], seen["after"]
    assert before["method"].startswith("VmHWM")
    assert before["peak_above_baseline_mb"] < 16
    assert 44 < after["peak_above_baseline_mb"] < 80
    assert after["peak_rss_mb"] >= after["baseline_rss_mb"] + 44


@pytest.fixture(scope="module")
def two_models(artifact_root, tiny_supernet):
    cache = ArtifactCache(artifact_root, fidelity=FidelitySettings(seq_len=32))
    small = SubnetConfig(1, 64, (1,), (32,), (64,))
    large = SubnetConfig(2, 128, (2, 2), (128, 128), (256, 256))
    return [cache.build(tiny_supernet, c, "int8", get_recipe("dynamic")) for c in (small, large)]


def test_every_measurement_records_memory_and_the_file_size(two_models, fast_profile_file):
    profile = load_profile(fast_profile_file)
    runner = LocalRunner()
    try:
        out = [runner.run(str(a.path), a.sha256, profile) for a in two_models]
    finally:
        runner.close()
    for art, result in zip(two_models, out, strict=True):
        assert result.status == "ok"
        assert result.model_bytes == art.path.stat().st_size
        assert result.memory["peak_above_baseline_mb"] > 0
        assert result.memory["peak_rss_mb"] > result.memory["baseline_rss_mb"]
    assert out[1].model_bytes > 2 * out[0].model_bytes
    values = [{n: r.value(result.to_dict()) for n, r in RESOURCES.items()} for result in out]
    assert values[0]["size"] == out[0].model_bytes / 1e6


def test_limits_are_checked_and_held_to_as_measured():
    with pytest.raises(InputError, match="max_memory_mb"):
        ResourceLimits(max_memory_mb=-1)
    limits = ResourceLimits(max_memory_mb=50, max_size_mb=10)
    assert limits.active_settings() == {"max_memory_mb": 50, "max_size_mb": 10}
    fits = MeasurementResult(
        Status.OK, memory={"peak_above_baseline_mb": 40.0}, model_bytes=9_000_000
    )
    assert limits.fits(fits) is True
    assert limits.fits(replace(fits, model_bytes=11_000_000)) is False
    assert limits.fits(replace(fits, memory=None)) is None  # memory not recorded
    assert ResourceLimits().active() == {} and ResourceLimits().fits(fits) is True


def _rows(n: int, seed: int = 0) -> list[LatencyRow]:
    """Store-like rows whose size is an exact function of the parameters."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        layers = int(rng.integers(1, 7))
        cfg = SubnetConfig(
            layers,
            int(rng.choice([128, 256, 384])),
            tuple(int(rng.choice([1, 2, 4])) for _ in range(layers)),
            tuple(int(rng.choice([128, 256, 384])) for _ in range(layers)),
            tuple(int(rng.choice([256, 768, 1536])) for _ in range(layers)),
        )
        size = 12e6 + cfg.params(embeddings=False) * 1.05
        rows.append(
            LatencyRow(
                id=len(rows),
                profile_hash="h",
                profile="p",
                subnet_key=cfg.key(),
                arch=cfg,
                space="s",
                role="sample",
                status=Status.OK,
                extra={"model_bytes": size},
            )
        )
    return rows


def test_a_size_predictor_learns_the_size_and_admits_by_its_band():
    rows = _rows(80)
    limit = float(np.median([r.extra["model_bytes"] / 1e6 for r in rows]))
    predictors = fit_resource_predictors(rows, ResourceLimits(max_size_mb=limit), 128, 1, "db")
    size = predictors["size"]
    assert isinstance(size, ResourcePredictor) and size.metrics["rows"] == 80
    assert size.metrics["within_10pct"] > 0.8 and size.metrics["kendall_tau"] > 0.8
    admit = resource_admission(predictors, ResourceLimits(max_size_mb=limit))
    held_out = _rows(40, seed=1)
    ok = admit([r.arch for r in held_out])
    truth = np.array([r.extra["model_bytes"] / 1e6 <= limit for r in held_out])
    assert ok.any() and (~ok).any()
    # The band's top keeps out nearly everything over the limit.
    assert np.mean(truth[ok]) >= 0.9
    assert resource_admission({}, ResourceLimits()) is None


def test_too_few_rows_with_the_resource_are_refused_naming_the_store():
    # Stored before bfnas recorded memory and size.
    rows = [replace(r, extra={}) for r in _rows(10)]
    with pytest.raises(InputError, match="lat.db.*measurements.*memory"):
        fit_resource_predictors(rows, ResourceLimits(max_memory_mb=99), 128, 1, "lat.db")
    assert json.dumps(ResourceLimits(max_memory_mb=99).active_settings())
