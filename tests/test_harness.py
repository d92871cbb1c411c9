import numpy as np
import pytest

from bfnas.bench.device.stats import median_rel_ci, summarize
from bfnas.bench.device.timing import StopRule, time_runs


class FakeDevice:
    """A clock and a model whose runs take the durations given, in order (seconds)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = iter(durations)
        self.calls = 0

    def clock(self):
        return self.now

    def run(self):
        self.calls += 1
        self.now += next(self.durations)


def test_warmup_needs_count_and_time():
    dev = FakeDevice([0.05] + [0.001] * 10_000)
    rule = StopRule(
        warmup_runs=5,
        warmup_seconds=0.1,
        min_runs=10,
        min_seconds=0.0,
        max_seconds=1.0,
        target_rel_ci=1.0,
    )
    t = time_runs(dev.run, rule, clock=dev.clock)
    assert t.first_ms == pytest.approx(50)
    assert t.warmup_runs == 100  # 5 runs were not 0.1 s yet
    assert len(t.samples_ms) == 10 and t.stop_reason == "ci"


def test_minimums_hold_then_extends_until_ci_or_max():
    rng = np.random.default_rng(0)
    noisy = list(0.001 * (1 + 0.5 * rng.random(100_000)))
    dev = FakeDevice(noisy)
    rule = StopRule(
        warmup_runs=0,
        warmup_seconds=0,
        min_runs=20,
        min_seconds=0.05,
        max_seconds=5.0,
        target_rel_ci=0.01,
    )
    t = time_runs(dev.run, rule, clock=dev.clock)
    # Uniform noise of +-20 % needs ~1,500 runs for a 1 % CI: far past both minimums.
    assert len(t.samples_ms) > 1000 and t.seconds < 5.0
    assert t.stop_reason == "ci" and median_rel_ci(t.samples_ms) <= 0.01
    # ...and it stopped soon after the CI was reached (checks every ~10 % more runs).
    assert median_rel_ci(t.samples_ms[: int(len(t.samples_ms) / 1.25)]) > 0.01

    dev = FakeDevice(noisy)
    strict = StopRule(
        warmup_runs=0,
        warmup_seconds=0,
        min_runs=20,
        min_seconds=0.05,
        max_seconds=0.2,
        target_rel_ci=1e-6,
    )
    t = time_runs(dev.run, strict, clock=dev.clock)
    assert t.stop_reason == "max_seconds" and 0.2 <= t.seconds < 0.21


def test_min_runs_beat_max_seconds_for_slow_models():
    dev = FakeDevice([1.0] * 100)
    rule = StopRule(
        warmup_runs=0,
        warmup_seconds=0,
        min_runs=5,
        min_seconds=0,
        max_seconds=2.0,
        target_rel_ci=1e-9,
    )
    t = time_runs(dev.run, rule, clock=dev.clock)
    assert len(t.samples_ms) == 5


def test_anchor_runs_before_every_timed_run():
    dev = FakeDevice([0.002, 0.001] * 10_000)  # anchor 1 ms... model alternates
    order = []

    def model():
        order.append("m")
        dev.run()

    def anchor():
        order.append("a")
        dev.run()

    rule = StopRule(
        warmup_runs=2,
        warmup_seconds=0,
        min_runs=10,
        min_seconds=0,
        max_seconds=1,
        target_rel_ci=1.0,
    )
    t = time_runs(model, rule, anchor=anchor, clock=dev.clock)
    timed = order[1 + 2 * 2 :]  # after the first run and the paired warm-up
    assert timed[::2] == ["a"] * len(t.samples_ms) and timed[1::2] == ["m"] * len(t.samples_ms)
    assert len(t.anchor_ms) == len(t.samples_ms)
    assert t.ratios() == [s / a for s, a in zip(t.samples_ms, t.anchor_ms, strict=True)]


def test_summary_statistics_match_numpy():
    x = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 50.0])
    s = summarize(x)
    assert s["runs"] == 8 and s["median_ms"] == 3.0 and s["min_ms"] == 1.0
    assert s["mean_ms"] == pytest.approx(x.mean())
    assert s["cov"] == pytest.approx(x.std(ddof=1) / x.mean())
    assert s["p90_ms"] == pytest.approx(np.percentile(x, 90))
    assert s["p99_ms"] == pytest.approx(np.percentile(x, 99))
    assert s["outliers"] == 1  # 50 ms, far outside 1.5 IQR


def test_median_ci_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small, large = rng.normal(10, 1, 50), rng.normal(10, 1, 5000)
    assert median_rel_ci(large) < median_rel_ci(small) / 5
    assert median_rel_ci([1.0, 2.0]) == float("inf")


def test_stop_rule_is_read_from_the_profile_measure_table():
    from dataclasses import MISSING, fields

    from bfnas.bench.hardware_profile import Measure

    # Each field set apart from its default and from every other field's value, so a field
    # read from the wrong name, or a default of StopRule's own, would show.
    measure = Measure(
        warmup_runs=3,
        warmup_seconds=0.7,
        min_runs=17,
        min_seconds=0.9,
        max_seconds=4.5,
        target_rel_ci=0.02,
    )
    rule = StopRule.from_measure(measure)
    assert {f.name: getattr(rule, f.name) for f in fields(StopRule)} == {
        "warmup_runs": 3,
        "warmup_seconds": 0.7,
        "min_runs": 17,
        "min_seconds": 0.9,
        "max_seconds": 4.5,
        "target_rel_ci": 0.02,
    }
    # The defaults are written once, in Measure: StopRule has none to drift from them.
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(StopRule))
    default = StopRule.from_measure(Measure())
    assert all(
        getattr(default, f.name) == Measure.model_fields[f.name].default for f in fields(StopRule)
    )
