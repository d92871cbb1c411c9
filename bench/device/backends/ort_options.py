"""The ONNX Runtime execution-provider options a profile may set, with their types.

ONNX Runtime receives provider options as strings and rejects a misspelt name or a bad
value only when the session is created: on the device, possibly hours into a run. A profile
is checked when it is loaded instead. The tables list what ONNX Runtime's Python bindings
parse for the CUDA and TensorRT providers (onnxruntime's cuda_execution_provider_info.cc
and the TensorRT branch of onnxruntime_pybind_state.cc); options that take memory
addresses (user streams, external allocators) have no meaning in a file and are left out.
Providers without a table here pass unchecked.

Values go to ONNX Runtime as `str(value)`: a TOML boolean becomes "True"/"False", the only
spelling the TensorRT provider's Python parser accepts besides "true"/"false", which is why
a boolean option must be a TOML boolean and not 0/1.
"""

from __future__ import annotations

BOOL, INT, STR = "boolean", "integer", "string"

CUDA_OPTIONS: dict[str, str | tuple[str, ...]] = {
    "device_id": INT,
    "gpu_mem_limit": INT,
    "arena_extend_strategy": ("kNextPowerOfTwo", "kSameAsRequested"),
    "cudnn_conv_algo_search": ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    "do_copy_in_default_stream": BOOL,
    "cudnn_conv_use_max_workspace": BOOL,
    "cudnn_conv1d_pad_to_nc1d": BOOL,
    "enable_cuda_graph": BOOL,
    "enable_skip_layer_norm_strict_mode": BOOL,
    "prefer_nhwc": BOOL,
    "use_ep_level_unified_stream": BOOL,
    "use_tf32": BOOL,
    "tunable_op_enable": BOOL,
    "tunable_op_tuning_enable": BOOL,
    "tunable_op_max_tuning_duration_ms": INT,
}

TENSORRT_OPTIONS: dict[str, str | tuple[str, ...]] = {
    "device_id": INT,
    "trt_max_partition_iterations": INT,
    "trt_min_subgraph_size": INT,
    "trt_max_workspace_size": INT,
    "trt_fp16_enable": BOOL,
    "trt_bf16_enable": BOOL,
    "trt_int8_enable": BOOL,
    "trt_int8_calibration_table_name": STR,
    "trt_int8_use_native_calibration_table": BOOL,
    "trt_dla_enable": BOOL,
    "trt_dla_core": INT,
    "trt_dump_subgraphs": BOOL,
    "trt_engine_cache_enable": BOOL,
    "trt_engine_cache_path": STR,
    "trt_engine_cache_prefix": STR,
    "trt_engine_decryption_enable": BOOL,
    "trt_engine_decryption_lib_path": STR,
    "trt_force_sequential_engine_build": BOOL,
    "trt_context_memory_sharing_enable": BOOL,
    "trt_layer_norm_fp32_fallback": BOOL,
    "trt_timing_cache_enable": BOOL,
    "trt_timing_cache_path": STR,
    "trt_force_timing_cache": BOOL,
    "trt_detailed_build_log": BOOL,
    "trt_build_heuristics_enable": BOOL,
    "trt_sparsity_enable": BOOL,
    "trt_builder_optimization_level": INT,
    "trt_auxiliary_streams": INT,
    "trt_tactic_sources": STR,
    "trt_extra_plugin_lib_paths": STR,
    "trt_profile_min_shapes": STR,
    "trt_profile_opt_shapes": STR,
    "trt_profile_max_shapes": STR,
    "trt_cuda_graph_enable": BOOL,
    "trt_dump_ep_context_model": BOOL,
    "trt_ep_context_file_path": STR,
    "trt_ep_context_embed_mode": INT,
    "trt_weight_stripped_engine_enable": BOOL,
    "trt_onnx_model_folder_path": STR,
    "trt_engine_hw_compatible": BOOL,
    "trt_op_types_to_exclude": STR,
}

KNOWN: dict[str, dict[str, str | tuple[str, ...]]] = {
    "CUDAExecutionProvider": CUDA_OPTIONS,
    "TensorrtExecutionProvider": TENSORRT_OPTIONS,
}

GPU_PROVIDERS = frozenset(KNOWN)


def _kind(value: object) -> str:
    # bool is a subclass of int in Python: test it first.
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, str):
        return STR
    return type(value).__name__


def check_provider_options(provider: str, options: dict[str, object]) -> list[str]:
    """Problems with `options` for `provider`, one sentence each (empty: fine or unknown
    provider)."""
    table = KNOWN.get(provider)
    if table is None:
        return []
    problems = []
    for name, value in options.items():
        want = table.get(name)
        if want is None:
            problems.append(f"{provider} has no option {name!r}")
        elif isinstance(want, tuple):
            if value not in want:
                problems.append(
                    f"{provider} option {name} must be one of {', '.join(want)} (got {value!r})"
                )
        elif _kind(value) != want:
            problems.append(f"{provider} option {name} must be a {want} (got {value!r})")
        elif want == INT and value < 0:  # type: ignore[operator]
            problems.append(f"{provider} option {name} must not be negative (got {value!r})")
    return problems
