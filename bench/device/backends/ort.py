"""ONNX Runtime harness: a session that honours the profile's providers and threads, and
refuses to run anywhere else. `make_infer` is what the backend registry (`device.backends`)
names for `runtime.backend = "onnxruntime"`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..feeds import token_batches
from . import Infer

if TYPE_CHECKING:
    from ..settings import DeviceSettings

# The timing feed's ids stay below this (BERT's vocabulary has 30,522; see token_feed).
ORDINARY_IDS_BELOW = 30000


class ProviderError(RuntimeError):
    """The session would not run on the provider that was asked for."""


def make_session(
    path: str,
    providers: list[str],
    provider_options: list[dict] | None,
    intra_op_threads: int,
    inter_op_threads: int,
):
    """An InferenceSession on exactly the requested providers, or ProviderError.

    ONNX Runtime silently falls back to the CPU when a provider cannot load; a latency
    measured that way would be stored under the wrong device, so the fallback is an error.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ProviderError(
            f"provider {missing[0]} is not available in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        path,
        opts,
        providers=list(providers),
        provider_options=[{k: str(v) for k, v in o.items()} for o in provider_options]
        if provider_options
        else None,
    )
    active = session.get_providers()
    if active[0] != providers[0]:
        raise ProviderError(f"asked for {providers[0]}, session runs on {active[0]}")
    return session


def token_feed(batch: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A full-length batch of ordinary token ids (no padding: latency at the workload's length).

    Ids are drawn from [1000, 30000), BERT's ordinary word pieces, whatever the model's
    vocabulary: the same draw every stored latency was measured with."""
    return token_batches(1, batch, seq_len, ORDINARY_IDS_BELOW, seed, padded=False)[0]


def bound_inference(
    session, feed: dict[str, np.ndarray], output: str, device_type: str, device_id: int = 0
) -> Infer:
    """The inference function with inputs and output kept on the device (ONNX Runtime IO
    binding).

    Without binding, `session.run` copies inputs to the GPU and the output back on every
    call, so a GPU provider's time would always include the copies. Inputs are copied once
    here; each run then leaves its output on the device."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_ortvalue_input(
            name, ort.OrtValue.ortvalue_from_numpy(value, device_type, device_id)
        )
    binding.bind_output(output, device_type, device_id)

    def infer() -> object:
        session.run_with_iobinding(binding)
        return binding

    return infer


def make_infer(path: str, profile: DeviceSettings) -> tuple[Infer, str, dict]:
    """(the inference function, the provider really running, details) for the timing loop."""
    from .ort_options import GPU_PROVIDERS

    runtime, workload = profile.runtime, profile.workload
    session = make_session(
        path,
        runtime.providers,
        runtime.provider_options,
        runtime.intra_op_threads,
        runtime.inter_op_threads,
    )
    feed = token_feed(workload.batch, workload.seq_len)
    names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in names}
    output = [session.get_outputs()[0].name]
    gpu = runtime.providers[0] in GPU_PROVIDERS
    details: dict = {"inputs": sorted(feed)}
    if gpu and not runtime.include_copies:
        options = runtime.provider_options[0] if runtime.provider_options else {}
        infer = bound_inference(session, feed, output[0], "cuda", int(options.get("device_id", 0)))
        details["timing"] = {"clock": "host", "includes_copies": False, "io_binding": "cuda"}
        return infer, session.get_providers()[0], details

    def infer() -> object:
        return session.run(output, feed)

    if gpu:
        details["timing"] = {"clock": "host", "includes_copies": True}
    return infer, session.get_providers()[0], details
