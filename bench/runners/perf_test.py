"""ONNX Runtime's own benchmark, `onnxruntime_perf_test`, as the adb runner uses it: the argv
it is run with and what its output says, mapped onto bfnas's measurement result.

What is parsed is what the tool's source prints (microsoft/onnxruntime,
onnxruntime/test/perftest/): `PerformanceRunner::Run` and `PerformanceResult::DumpToFile` in
performance_runner.cc (read at commit 77e6dc9a376cf9764d51b7c3e518e46ac3aa0141; newer builds
print "Average inference time cost total:" for the same mean, which is read too), the
"Setting intra_op_num_threads" and "Overriding dimension with name" lines of
ort_test_session.cc, and the flags of command_args_parser.cc (the Abseil-flags version of
2025, which accepts the same single-dash flags as the older getopt one). Its figures:

    Session creation time cost: 0.384512 s      -> session_ms (x 1000)
    First inference time cost: 52 ms            -> first_ms (its one untimed warm-up run)
    Total inference time cost: 1.90035 s        -> harness.reported (sum of the timed runs)
    Total inference requests: 50                -> runs
    Average inference time cost: 38.007 ms      -> mean_ms
    Total inference run time: 1.90148 s         -> timed_seconds (wall time of the loop)
    Number of inferences per second: 26.2953    -> throughput_per_s
    Avg CPU usage: 24 %                         -> harness.reported (process CPU / wall /
                                                   all cores; spinning threads count)
    Peak working set size: 61337600 bytes       -> memory.peak_rss_mb (getrusage ru_maxrss:
                                                   the whole process's lifetime peak)
    Min Latency: 0.0372413 s                    -> min_ms (x 1000)
    Max Latency: 0.0448695 s                    -> max_ms
    P50 Latency: 0.0377009 s                    -> median_ms
    P90 / P95 / P99 / P999 Latency: ... s       -> p90_ms / p95_ms / p99_ms / p999_ms

The percentiles are in seconds, the mean and the first run in milliseconds. Pn is the
sorted sample at index floor(n * q) (no interpolation: with 50 runs P99 and P999 are both the
maximum). The percentiles are printed only with `-s`, which bfnas always passes. Given a
result file, the tool appends one CSV row per timed run to it (model folder, seconds, peak
bytes, CPU %, index; newer builds put submission and total seconds in two columns): that is
where `samples_ms`, and with them the confidence interval of the median, come from.
"""

from __future__ import annotations

import math
import re
import signal

from bfnas.bench.device.contract import MeasurementResult, failed

# Execution provider (as a profile names it) -> the tool's `-e` value. The tool takes one
# provider (the CPU provider is always its fallback).
PROVIDER_FLAGS = {
    "CPUExecutionProvider": "cpu",
    "XnnpackExecutionProvider": "xnnpack",
    "NnapiExecutionProvider": "nnapi",
    "QNNExecutionProvider": "qnn",
    "ACLExecutionProvider": "acl",
    "ArmNNExecutionProvider": "armnn",
}
# The symbolic dimensions of bfnas's exported encoders' int64 inputs ([batch, sequence]: see
# bfnas.models.deploy.onnx_export and graph_writer): what `-f` pins to the workload's shape.
BATCH_DIM, SEQUENCE_DIM = "batch", "sequence"

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan))"
# The tool's label -> the key of its figure (in the label's own unit).
_FIGURES: dict[str, str] = {
    "Session creation time cost": "session_s",
    "First inference time cost": "first_ms",
    "Total inference time cost": "total_inference_s",
    "Total inference requests": "requests",
    "Average inference time cost": "mean_ms",
    "Average inference time cost total": "mean_ms",
    "Total inference run time": "run_time_s",
    "Number of inferences per second": "throughput_per_s",
    "Avg CPU usage": "avg_cpu_usage_percent",
    "Peak working set size": "peak_working_set_bytes",
    "Min Latency": "min_s",
    "Max Latency": "max_s",
    "P50 Latency": "p50_s",
    "P90 Latency": "p90_s",
    "P95 Latency": "p95_s",
    "P99 Latency": "p99_s",
    "P999 Latency": "p999_s",
}
_LINE = re.compile(
    r"^\s*("
    + "|".join(sorted(map(re.escape, _FIGURES), key=len, reverse=True))
    + r")\s*:\s*"
    + _NUMBER,
    re.IGNORECASE,
)
_THREADS = re.compile(r"Setting intra_op_num_threads to (\d+)")
_OVERRIDE = re.compile(r"Overriding dimension with name, (.+?), to (-?\d+)")
_VERSION = re.compile(r"onnx ?runtime(?:_perf_test)? version\s*[:=]?\s*v?(\d+\.\d+[\w.\-+]*)", re.I)
# What the tool prints when it stops before measuring (main.cc, command_args_parser.cc).
_FAILURE_MARKS = (
    "Run failed:",
    "See 'onnxruntime_perf_test --help'",
    "[options...] model_path",  # the older getopt parser's usage, printed on a bad argv
    # Abseil strips flag names on Android unless built with ABSL_FLAGS_STRIP_NAMES=0.
    "command line flags are disabled",
)


def provider_flag(provider: str) -> str | None:
    """The tool's `-e` value for an execution provider, or None when it has none."""
    return PROVIDER_FLAGS.get(provider)


def perf_test_argv(
    harness: str,
    model: str,
    *,
    runs: int,
    intra_op_threads: int,
    inter_op_threads: int,
    provider: str,
    batch: int,
    seq_len: int,
    result_file: str | None = None,
) -> list[str]:
    """The tool's argv for one measurement of `model` (paths as the device sees them).

    `-m times -r RUNS`: a fixed number of timed runs after the tool's one warm-up run.
    `-x`/`-y`: the profile's thread counts (the tool applies `-y` only with its parallel
    executor, which is not asked for: the graph runs sequentially, as in bfnas's worker).
    `-e`: the provider. `-I`: inputs generated by the tool, shaped by `-f batch:B` and
    `-f sequence:S` (each override its own `-f`: the form every version reads; a single
    space-separated `-f` is read in full only since ONNX Runtime PR #25716). `-s`: print the
    percentiles. The result file, when given, receives one row per timed run."""
    flag = provider_flag(provider)
    if flag is None:
        raise ValueError(
            f"onnxruntime_perf_test has no -e value for {provider} "
            f"(it takes {', '.join(PROVIDER_FLAGS)})"
        )
    argv = [
        harness,
        "-m",
        "times",
        "-r",
        str(int(runs)),
        "-x",
        str(int(intra_op_threads)),
        "-y",
        str(int(inter_op_threads)),
        "-e",
        flag,
        "-I",
        "-f",
        f"{BATCH_DIM}:{int(batch)}",
        "-f",
        f"{SEQUENCE_DIM}:{int(seq_len)}",
        "-s",
        model,
    ]
    return [*argv, result_file] if result_file else argv


def tail(text: str, lines: int = 3, width: int = 240) -> str:
    """The last non-empty lines of `text` as one line: what a failure's reason quotes. A
    line longer than `width` keeps its start (what failed) and its end (why), cut between."""
    kept = [ln.strip() for ln in text.replace("\r", "").splitlines() if ln.strip()][-lines:]
    half = (width - 5) // 2
    cut = [ln if len(ln) <= width else f"{ln[:half]} ... {ln[-half:]}" for ln in kept]
    return " | ".join(cut) or "no output"


def exit_description(code: int) -> str:
    """A shell exit status in words: `sh` reports a child killed by signal N as 128 + N."""
    if 128 < code < 128 + 65:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"exited {code}"
        hint = " (out of memory? Android's low-memory killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    if code == 127:
        return "exited 127 (a command was not found)"
    if code == 126:
        return "exited 126 (not executable: chmod 755 it on the device)"
    return f"exited {code}"


def figures(text: str) -> dict:
    """Every figure the tool printed, by the keys of `_FIGURES` (raw units), plus the threads
    and dimension overrides it says it set and its version where printed."""
    found: dict = {}
    overrides: dict[str, int] = {}
    for line in text.replace("\r", "").splitlines():
        m = _LINE.match(line)
        if m:
            label = next(k for k in _FIGURES if k.lower() == m.group(1).lower())
            # The first occurrence wins: DumpToFile repeats CPU usage and peak without units
            # ("Avg CPU usage:24") when no result file is given; both say the same.
            found.setdefault(_FIGURES[label], float(m.group(2)))
        elif t := _THREADS.search(line):
            found["threads_set"] = int(t.group(1))
        elif o := _OVERRIDE.search(line):
            overrides[o.group(1).strip()] = int(o.group(2))
        elif v := _VERSION.search(line):
            found.setdefault("version", v.group(1))
    if overrides:
        found["dimension_overrides"] = overrides
    return found


def parse_perf_test_output(text: str) -> MeasurementResult:
    """A measurement result from the tool's output (stdout and stderr together), in ms: ok,
    with the figures the module docstring maps (those bfnas has no field for, max_ms,
    p999_ms and throughput_per_s, in its `extra`), or failed, quoting its last lines, when
    it did not measure or its output is incomplete. Never raises (bytes are decoded, None is
    no output)."""
    if not isinstance(text, str):
        text = text.decode(errors="replace") if isinstance(text, bytes | bytearray) else ""
    try:
        return _parse(text)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:  # a malformed number
        return failed(f"unreadable onnxruntime_perf_test output ({exc}): {tail(text)}")


def _parse(text: str) -> MeasurementResult:
    for mark in _FAILURE_MARKS:
        if mark in text:
            return failed(f"onnxruntime_perf_test: {tail(text)}")
    f = figures(text)
    missing = [
        label
        for key, label in (
            ("requests", "Total inference requests"),
            ("mean_ms", "Average inference time cost"),
            ("p50_s", "P50 Latency"),
        )
        if key not in f
    ]
    if missing:
        return failed(
            f"onnxruntime_perf_test stopped before its results (no {missing[0]} line): {tail(text)}"
        )
    runs = int(f["requests"])
    if runs <= 0 or not all(math.isfinite(f[k]) for k in ("mean_ms", "p50_s") if k in f):
        return failed(f"onnxruntime_perf_test timed no run: {tail(text)}")

    def ms(key: str) -> float | None:
        # Seconds as printed (6 significant digits) to ms, without float noise in the digits.
        return float(f"{f[key] * 1e3:.12g}") if key in f else None

    result: dict = {
        "status": "ok",
        "runs": runs,
        "median_ms": ms("p50_s"),
        "mean_ms": f["mean_ms"],
        "min_ms": ms("min_s"),
        "max_ms": ms("max_s"),
        "p90_ms": ms("p90_s"),
        "p95_ms": ms("p95_s"),
        "p99_ms": ms("p99_s"),
        "p999_ms": ms("p999_s"),
        "first_ms": f.get("first_ms"),
        "session_ms": ms("session_s"),
        "timed_seconds": f.get("run_time_s"),
        "throughput_per_s": f.get("throughput_per_s"),
    }
    result = {k: v for k, v in result.items() if v is not None}
    if "peak_working_set_bytes" in f:
        result["memory"] = {
            "peak_rss_mb": f["peak_working_set_bytes"] / 2**20,
            "method": "onnxruntime_perf_test's peak working set (whole process)",
        }
    reported = {
        k: f[k] for k in ("total_inference_s", "avg_cpu_usage_percent", "threads_set") if k in f
    }
    if "dimension_overrides" in f:
        reported["dimension_overrides"] = f["dimension_overrides"]
    result["harness"] = {"reported": reported}
    if "version" in f:
        result["harness"]["version"] = f["version"]
    return MeasurementResult.from_dict(result)


def parse_per_run_file(text: str) -> list[float]:
    """The timed runs' latencies in ms from the tool's result file: one CSV row per run,
    `model,seconds,peak_bytes,cpu_percent,index` (newer builds:
    `model,submission_seconds,total_seconds,peak_bytes,cpu_percent,index`, of which the total
    is the run's latency). The statistics lines the tool appends after the rows are skipped."""
    samples: list[float] = []
    for line in text.replace("\r", "").splitlines():
        cells = line.strip().split(",")
        if len(cells) not in (5, 6):
            continue
        try:
            seconds = float(cells[1] if len(cells) == 5 else cells[2])
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            samples.append(seconds * 1e3)
    return samples
