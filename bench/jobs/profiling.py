"""A profiling job: sample subnets, export each, measure each under a profile, store each.

The plan (which subnets, in which order) depends only on the space, strategy, count and
seed, so a rerun walks the same list and skips what the store already holds (resume). A
fixed reference subnet is measured at the start and every `drift_every` subnets; its series
shows whether the device drifted during the job.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bfnas.bench.device.contract import Distrust, DistrustReason, MeasurementResult, failed
from bfnas.bench.hardware_profile import HardwareProfile
from bfnas.bench.jobs.context import MeasurementSetup
from bfnas.bench.jobs.measurement import AnchorRef, BusyWait, measure_artifact
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import Artifact, ArtifactCache
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig

STRATEGIES = ("random", "stratified")


def plan_subnets(
    space: SearchSpace, n: int, strategy: str, seed: int, seq_len: int = 128
) -> list[SubnetConfig]:
    """`n` distinct subnets. `stratified` spreads them evenly over log-MACs (what latency
    mostly follows), so small and large subnets are both well covered."""
    if strategy not in STRATEGIES:
        raise InputError.bad_setting(
            "strategy", f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})"
        )
    rng = random.Random(seed)
    n = min(n, space.count())
    pool_size = n if strategy == "random" else min(space.count(), 30 * n)
    pool: dict[str, SubnetConfig] = {}
    attempts = 0
    while len(pool) < pool_size and attempts < 50 * pool_size + 1000:
        cfg = space.sample(rng)
        pool.setdefault(cfg.key(), cfg)
        attempts += 1
    candidates = list(pool.values())
    if strategy == "random" or len(candidates) <= n:
        return candidates[:n]
    logs = [math.log(c.total_macs(seq_len)) for c in candidates]
    lo, hi = min(logs), max(logs)
    bins: list[list[SubnetConfig]] = [[] for _ in range(n)]
    for c, v in zip(candidates, logs, strict=True):
        bins[min(int((v - lo) / (hi - lo + 1e-12) * n), n - 1)].append(c)
    chosen, leftovers = [], []
    for b in bins:
        if b:
            chosen.append(b[0])
            leftovers.extend(b[1:])
    # Empty bins (gaps in the MAC range) are filled from the rest of the pool.
    chosen.extend(leftovers[: n - len(chosen)])
    return chosen


def reference_subnet(space: SearchSpace) -> SubnetConfig:
    """A fixed mid-sized member of the space, measured again and again for drift."""

    def mid(values: tuple[int, ...]) -> int:
        return values[len(values) // 2]

    hidden = mid(space.hidden.values)
    pairs = space.layer_pairs(hidden)
    heads, qkv = pairs[len(pairs) // 2]
    return SubnetConfig.uniform(mid(space.layers.values), hidden, heads, qkv, mid(space.ffn.values))


def artifact_for(
    cache: ArtifactCache, supernet: SuperBert, cfg: SubnetConfig, profile: HardwareProfile
) -> Artifact:
    """The ONNX file a profile measures: FP32 for fp32/fp16 (TensorRT builds FP16 itself),
    otherwise quantized with the profile's recipe."""
    if profile.precision != "int8":
        return cache.build(supernet, cfg, "fp32")
    q = profile.quantization
    return cache.build(supernet, cfg, "int8", get_recipe(q.recipe, q.fuse, q.calibration_samples))


# Fixed subnets (random weights, fixed seed), one of which is timed beside every
# measurement. A ratio cancels the machine's speed swings best when the anchor responds to
# them as the model does, which a model of similar size does: measured here, a 0.6 ms
# subnet's ratio to a 0.5 GMAC anchor varied 3-5 % across processes, to a 0.06 GMAC one
# 1.1-1.6 %; a 5-10 ms subnet's was steadier with the larger anchor.
ANCHOR_LADDER = (
    SubnetConfig.uniform(1, 192, 12, 192, 768),  # 0.06 GMAC at seq 128
    SubnetConfig.uniform(2, 256, 4, 256, 1024),  # 0.22 GMAC
    SubnetConfig.uniform(3, 384, 12, 384, 1024),  # 0.57 GMAC
)
ANCHOR_SEED = 20261123


def anchor_arch(cfg: SubnetConfig, seq_len: int = 128, batch: int = 1) -> SubnetConfig:
    """The ladder's anchor nearest to `cfg` in log MACs."""
    macs = max(cfg.total_macs(seq_len, batch), 1)
    return min(ANCHOR_LADDER, key=lambda a: abs(math.log(a.total_macs(seq_len, batch) / macs)))


def anchor_artifact(
    cache: ArtifactCache, profile: HardwareProfile, cfg: SubnetConfig
) -> AnchorRef | None:
    """The anchor to time beside `cfg` under `profile` (content-addressed, so the same file
    for every job), or None when the profile measures without one."""
    if not profile.measure.anchor:
        return None
    from bfnas.models.nn.supernet import SupernetDims

    w = profile.workload
    a = anchor_arch(cfg, w.seq_len, w.batch)
    supernet = SuperBert.random(SupernetDims(a.layers, a.hidden, a.qkv[0], a.ffn[0]), ANCHOR_SEED)
    art = artifact_for(cache, supernet, a, profile)
    return AnchorRef(str(art.path), art.sha256, a.key())


def artifact_record(art: Artifact) -> dict[str, Any]:
    return {k: v for k, v in art.to_dict().items() if k not in ("arch", "cached")}


@dataclass
class SubnetMeasurer:
    """Builds a subnet's artifact and measures it beside its anchor: what a profiling job and
    a search's verification both do with one subnet."""

    setup: MeasurementSetup
    on_wait: Callable[[BusyWait], None] = lambda w: None
    _anchors: dict[str, AnchorRef | None] = field(default_factory=dict, init=False, repr=False)

    def __call__(self, cfg: SubnetConfig) -> tuple[MeasurementResult, Artifact | None]:
        s = self.setup
        try:
            art = artifact_for(s.cache, s.supernet, cfg, s.profile)
        except Exception as exc:  # an export that fails is a stored failure, not a stop
            return failed(f"export: {type(exc).__name__}: {exc}"), None
        # Building an anchor's supernet and hashing its weights costs ~0.1 s: once per rung.
        w = s.profile.workload
        rung = anchor_arch(cfg, w.seq_len, w.batch).key()
        if rung not in self._anchors:
            self._anchors[rung] = anchor_artifact(s.cache, s.profile, cfg)
        result = measure_artifact(
            s.runner,
            str(art.path),
            art.sha256,
            s.profile,
            self._anchors[rung],
            on_wait=self.on_wait,
        )
        return result, art


def measure_subnet(
    setup: MeasurementSetup,
    cfg: SubnetConfig,
    on_wait: Callable[[BusyWait], None] = lambda w: None,
) -> dict[str, Any]:
    """One subnet measured under the setup's profile, as a profiling job measures each of
    its subnets (the same `SubnetMeasurer`), without a store.

    `cfg` must belong to the setup's space and the device must pass its checks, both before
    anything is exported (either refusal is an InputError). The result is the measurement's
    flat record (`MeasurementResult.to_dict`): `status` is the trust verdict (ok, unstable
    or failed; `reason` says why not ok), `median_ms` the raw median and `ratio` the paired
    ratio to the anchor where the profile times one; `arch`, `arch_key` and `artifact` (the
    ONNX file measured, None when its export failed) are added."""
    setup.space.check(cfg, where="cfg")
    setup.check_device()
    result, art = SubnetMeasurer(setup, on_wait)(cfg)
    return {
        **result.to_dict(),
        "arch": cfg.to_dict(),
        "arch_key": cfg.key(),
        "artifact": str(art.path) if art is not None else None,
    }


class RoundChooser(Protocol):
    """What chooses a profiling job's rounds (`ProfileJob.rounds`)."""

    def next_round(self) -> list[SubnetConfig]:
        """The next subnets to measure; none ends the job."""

    def summary(self) -> dict[str, Any]:
        """Kept in the run's summary beside the job's counts (JSON)."""


@dataclass
class ProfileEvent:
    """What a profiling job reports as it goes: its plan (`todo` subnets left to measure),
    each measurement (`result`), a skipped subnet, a drift reference, a busy machine."""

    kind: str  # "plan" | "measured" | "skipped" | "reference" | "drift" | "busy"
    cfg: SubnetConfig | None
    result: MeasurementResult | None = None
    message: str = ""
    todo: int | None = None


@dataclass(kw_only=True)
class ProfileJob:
    """Measure `samples` subnets of the setup's space under its profile into `store`
    (resumable: what the store holds already is skipped). Keyword arguments only."""

    setup: MeasurementSetup
    store: LatencyStore
    samples: int
    strategy: str = "random"
    seed: int = 0
    on_event: Callable[[ProfileEvent], None] = lambda e: None
    retry: tuple[str, ...] = ()  # stored statuses to measure again: "unstable", "failed"
    # A sampled subnet's file is deleted once measured (its record stays in the store):
    # thousands of INT8 BERTs with their embedding tables fill a disk (~10 MB each).
    keep_artifacts: bool = True
    # Run the device's checks (`bench.device.probe.require_usable`) before anything is written;
    # False only where the caller has just run them (the CLI does, before opening the store).
    check_device: bool = True
    # Instead of a sampled plan: asked for each round of subnets to measure, once the round
    # before it is stored, until it gives none (a job that chooses as it learns, such as
    # `search.until_trusted`). `samples`, `strategy` and `seed` are then only recorded.
    rounds: RoundChooser | None = None
    _measurer: SubnetMeasurer | None = field(default=None, init=False, repr=False)
    # The drift reference's first value this run (its paired ratio where it has an anchor),
    # and the trusted samples stored since its last measurement: what a drift puts in doubt.
    _ref_first: float | None = field(default=None, init=False, repr=False)
    _since_ref: list[int] = field(default_factory=list, init=False, repr=False)

    def run(self) -> dict[str, Any]:
        p = self.setup.profile
        # Everything that can refuse the job comes first: nothing is written before it.
        if self.rounds is None:
            first = plan_subnets(
                self.setup.space, self.samples, self.strategy, self.seed, p.workload.seq_len
            )
            later: Iterator[list[SubnetConfig]] = iter(())
        else:
            first = self._checked(self.rounds.next_round())
            later = iter(lambda: self._checked(self.rounds.next_round()), [])
        if self.check_device:
            self.setup.check_device()
        phash = self.store.add_profile(p.name, p.resolved(), p.hash())
        args = {
            "space": self.setup.space.name,
            "samples": self.samples,
            "strategy": self.strategy,
            "seed": self.seed,
            "supernet": self.setup.supernet.source,
            "retry": list(self.retry),
            "rounds": self.rounds is not None,
        }
        run_id = self.store.start_run(phash, "profile", args)
        counts = {"ok": 0, "unstable": 0, "failed": 0, "skipped": 0, "taken_by_other": 0}
        planned = [0]

        def todo_of(rounds: Iterator[list[SubnetConfig]]) -> Iterator[list[SubnetConfig]]:
            """Each round less what the store holds already (a rerun resumes)."""
            for cfgs in rounds:
                done = self.store.measured_keys(phash, exclude=self.retry)
                todo = [c for c in cfgs if c.key() not in done]
                planned[0] += len(cfgs)
                counts["skipped"] += len(cfgs) - len(todo)
                self.on_event(ProfileEvent("plan", None, todo=len(todo)))
                yield todo

        ref_cfg, refs, drift = reference_subnet(self.setup.space), [], []
        status = "interrupted"
        if self._measurer is None:  # made before any lane thread could race to make it
            self._measurer = self._make_measurer()
        try:
            rounds = todo_of(itertools.chain([first], later))
            lanes = max(1, self.setup.runner.lanes)
            if lanes == 1:
                self._run_serial(rounds, ref_cfg, phash, run_id, counts, refs, drift)
            else:
                self._run_parallel(rounds, lanes, ref_cfg, phash, run_id, counts, refs, drift)
            status = "finished"
        finally:
            doubted = sum(d["marked_unstable"] for d in drift)
            counts["ok"] -= doubted
            counts["unstable"] += doubted
            summary = {**counts, "planned": planned[0], "reference_ms": refs, "drift": drift}
            if self.rounds is not None:
                summary.update(self.rounds.summary())
            self.store.finish_run(run_id, status, summary)
        return {
            "status": status,
            "run_id": run_id,
            "profile": p.name,
            "profile_hash": phash,
            **summary,
        }

    def _checked(self, cfgs: list[SubnetConfig]) -> list[SubnetConfig]:
        for cfg in cfgs:
            self.setup.space.check(cfg, where="rounds")
        return list(cfgs)

    def _run_serial(
        self,
        rounds: Iterator[list[SubnetConfig]],
        ref_cfg: SubnetConfig,
        phash: str,
        run_id: int,
        counts: dict,
        refs: list,
        drift: list,
    ) -> None:
        every = self.setup.profile.measure.drift_every
        measured_since_ref = every  # measure the reference first when there is work
        measured = 0
        for todo in rounds:
            for cfg in todo:
                if every and measured_since_ref >= every:
                    refs.append(self._reference(ref_cfg, phash, run_id, refs, drift))
                    measured_since_ref = 0
                if not self._claim(cfg, phash, counts):
                    continue
                try:
                    result, art = self._measure(cfg)
                    self._store(cfg, result, art, phash, run_id, refs, counts)
                finally:
                    self.store.release(phash, cfg)
                measured_since_ref += 1
                measured += 1
        if every and measured and measured_since_ref > 0:
            refs.append(self._reference(ref_cfg, phash, run_id, refs, drift))

    def _run_parallel(
        self,
        rounds: Iterator[list[SubnetConfig]],
        lanes: int,
        ref_cfg: SubnetConfig,
        phash: str,
        run_id: int,
        counts: dict,
        refs: list,
        drift: list,
    ) -> None:
        """Several devices at once (a fleet): one job in flight per device plus one whose
        artifact is being built. Results are stored by this thread alone, as they finish.
        The drift reference is measured before and after the subnets (on whichever device
        is free: with a fleet it tracks the fleet, not one device). A round is finished
        before the next is asked for."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        every = self.setup.profile.measure.drift_every
        pending: dict = {}
        pool = ThreadPoolExecutor(max_workers=lanes + 1, thread_name_prefix="bfnas-lane")
        try:
            for todo in rounds:
                if every and todo and not refs:
                    refs.append(self._reference(ref_cfg, phash, run_id, refs, drift))
                queue_ = iter(todo)
                while True:
                    while len(pending) < lanes + 1:
                        cfg = next(queue_, None)
                        if cfg is None:
                            break
                        if self._claim(cfg, phash, counts):
                            pending[pool.submit(self._measure, cfg)] = cfg
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        cfg = pending.pop(fut)
                        try:
                            result, art = fut.result()
                            self._store(cfg, result, art, phash, run_id, refs, counts)
                        finally:
                            self.store.release(phash, cfg)
        finally:
            # Interrupted: jobs not started are dropped, running ones are not stored.
            pool.shutdown(wait=False, cancel_futures=True)
            for cfg in pending.values():
                self.store.release(phash, cfg)
        if every and refs:  # one before, one after: only where there was work
            refs.append(self._reference(ref_cfg, phash, run_id, refs, drift))

    def _claim(self, cfg: SubnetConfig, phash: str, counts: dict) -> bool:
        if self.store.claim(phash, cfg, self.retry):
            return True
        counts["taken_by_other"] += 1
        self.on_event(ProfileEvent("skipped", cfg, message="measured or claimed elsewhere"))
        return False

    def _store(
        self,
        cfg: SubnetConfig,
        result: dict,
        art: Artifact | None,
        phash: str,
        run_id: int,
        refs: list,
        counts: dict,
    ) -> None:
        row = self.store.add_measurement(
            phash,
            cfg,
            self.setup.space.name,
            result,
            run_id,
            "sample",
            artifact_record(art) if art else None,
            reference_ms=refs[-1] if refs else None,
            supersede=bool(self.retry),
        )
        if result.ok:
            self._since_ref.append(row)
        if art is not None and not self.keep_artifacts:
            self.setup.cache.discard(art)
        counts[result.status.value] += 1
        self.on_event(ProfileEvent("measured", cfg, result))

    def _make_measurer(self) -> SubnetMeasurer:
        def on_wait(w: BusyWait) -> None:
            self.on_event(ProfileEvent("busy", None, message=w.message()))

        return SubnetMeasurer(self.setup, on_wait)

    def _measure(self, cfg: SubnetConfig) -> tuple[MeasurementResult, Artifact | None]:
        if self._measurer is None:
            self._measurer = self._make_measurer()
        return self._measurer(cfg)

    def _reference(
        self, cfg: SubnetConfig, phash: str, run_id: int, refs: list[float], drift: list[dict]
    ) -> float | None:
        """Measure the drift reference; returns its raw median (kept beside each sample).

        Drift is judged on what the predictor learns: the paired ratio where there is an
        anchor (raw medians move by several % between processes anyway). A move beyond
        `drift_threshold` puts the trusted samples measured since the last reference in
        doubt: they are marked unstable, so a retry measures them again."""
        result, art = self._measure(cfg)
        self.store.add_measurement(
            phash,
            cfg,
            self.setup.space.name,
            result,
            run_id,
            "reference",
            artifact_record(art) if art else None,
        )
        if result.failed:
            return refs[-1] if refs else None
        value = result.ratio or result.median_ms
        unit = "paired ratio" if result.ratio else "raw ms"
        if self._ref_first is None:
            self._ref_first = value
        else:
            change = value / self._ref_first - 1
            threshold = self.setup.profile.measure.drift_threshold
            if abs(change) > threshold:
                why = DistrustReason(
                    Distrust.DRIFTED,
                    f"the drift reference's {unit} moved {change:+.1%} "
                    f"(beyond ±{threshold:.0%}) while this was measured",
                )
                marked = self.store.mark_unstable(self._since_ref, why)
                drift.append(
                    {
                        "after": len(refs),
                        "reference_ms": result.median_ms,
                        "value": value,
                        "first": self._ref_first,
                        "unit": unit,
                        "change": change,
                        "marked_unstable": marked,
                    }
                )
                self.on_event(
                    ProfileEvent(
                        "drift",
                        cfg,
                        result,
                        f"reference subnet moved {change:+.1%} ({unit}) since the start of this "
                        "run; "
                        f"{marked} measurements since the last reference marked unstable",
                    )
                )
        self._since_ref = []
        self.on_event(ProfileEvent("reference", cfg, result))
        return result.median_ms
