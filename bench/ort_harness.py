"""Timing an ONNX model with ONNX Runtime: a session that honours the requested provider and
threads, warm-up, and raw per-run samples."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class ProviderError(RuntimeError):
    """The session would not run on the provider that was asked for."""


@dataclass(frozen=True)
class SessionSpec:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1


def make_session(path: str, spec: SessionSpec):
    """An InferenceSession on exactly the requested providers, or ProviderError.

    ONNX Runtime silently falls back to the CPU when a provider cannot load; a latency
    measured that way would be stored under the wrong device, so the fallback is an error.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in spec.providers if p not in available]
    if missing:
        raise ProviderError(
            f"provider {missing[0]} is not available in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec.intra_op_threads
    opts.inter_op_num_threads = spec.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=list(spec.providers))
    active = session.get_providers()
    if active[0] != spec.providers[0]:
        raise ProviderError(f"asked for {spec.providers[0]}, session runs on {active[0]}")
    return session


def token_feed(batch: int, seq_len: int, vocab_size: int = 30522, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, min(vocab_size, 30000), size=(batch, seq_len), dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def time_session(session, feed: dict[str, np.ndarray], warmup: int, runs: int) -> tuple[float, list[float]]:
    """(first-run ms, raw samples in ms) after `warmup` untimed runs."""
    output = [session.get_outputs()[0].name]
    t = time.perf_counter()
    session.run(output, feed)
    first = (time.perf_counter() - t) * 1e3
    for _ in range(warmup):
        session.run(output, feed)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(output, feed)
        samples.append((time.perf_counter() - t) * 1e3)
    return first, samples
