"""The adb runner (`bfnas.bench.runners.adb`) and its onnxruntime_perf_test parser
(`bfnas.bench.runners.perf_test`), against a stand-in adb client with a fake phone behind it
(tests/devices/fake_adb.py: its errors are the real client's, its phone a host folder).

No phone was measured for these tests, and no onnxruntime_perf_test ran: the harness outputs
in tests/data/perf_test/ are written by hand in the format that tool's source prints
(microsoft/onnxruntime, onnxruntime/test/perftest/performance_runner.cc at commit
77e6dc9a376cf9764d51b7c3e518e46ac3aa0141, its "Setting intra_op_num_threads" and "Overriding
dimension with name" lines from ort_test_session.cc); they are not recordings of a real run.
The model the runner pushes is a real ONNX file (a MatMul); the fake harness only checks it
is there.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bfnas.bench.hardware_profile import parse_profile
from bfnas.bench.runners.adb import (
    AdbRunner,
    AdbTarget,
    AdbTransport,
    adb_probe,
    adb_runner,
    adb_settings,
    affinity_mask,
    parse_devices,
)
from bfnas.bench.runners.base import DeviceUnreachable
from bfnas.bench.runners.perf_test import (
    parse_per_run_file,
    parse_perf_test_output,
    perf_test_argv,
)
from bfnas.errors import InputError

sys.path.insert(0, str(Path(__file__).parent / "devices"))
try:
    import fake_adb
finally:
    sys.path.pop(0)

DATA = Path(__file__).parent / "data" / "perf_test"
FAKE_ADB = Path(fake_adb.__file__)
SERIAL = "FAKE0001"
# The figures of tests/data/perf_test/ok.txt, as that file prints them.
OK_FIGURES = {
    "median_ms": 37.7009,  # P50 Latency: 0.0377009 s
    "mean_ms": 38.007,  # Average inference time cost: 38.007 ms
    "min_ms": 37.2413,
    "max_ms": 44.8695,
    "p90_ms": 38.7222,
    "p95_ms": 39.0129,
    "p99_ms": 44.8695,
    "p999_ms": 44.8695,
    "first_ms": 52.0,
    "session_ms": 384.512,
    "timed_seconds": 1.90148,
    "throughput_per_s": 26.2953,
}
HARNESS_EXPECT = {
    "-m": "times",
    "-r": "50",
    "-x": "2",
    "-y": "1",
    "-e": "cpu",
    "-I": True,
    "-f": ["batch:1", "sequence:128"],
    "-s": True,
}


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    root = fake_adb.configure(tmp_path / "phone", SERIAL)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[str, str]:
    """A real, small ONNX model (one MatMul) and its sha256."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    path = tmp_path_factory.mktemp("model") / "matmul.onnx"
    onnx.save(m, str(path))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def settings(**extra) -> AdbTarget:
    return AdbTarget(
        **{
            "serial": SERIAL,
            "adb": str(FAKE_ADB),
            "connect_timeout_s": 5.0,
            "retries": 2,
            "retry_backoff_s": 0.5,
            **extra,
        }
    )


def profile(target: AdbTarget | None = None, **runtime) -> SimpleNamespace:
    """The duck-typed profile the runner reads (`adb_settings`, `_Job.of`)."""
    t = target or settings()
    return SimpleNamespace(
        source="<adb test>",
        target=t,
        runtime=SimpleNamespace(
            **{
                "intra_op_threads": 2,
                "inter_op_threads": 1,
                "cpu_affinity": None,
                "providers": ["CPUExecutionProvider"],
                **runtime,
            }
        ),
        workload=SimpleNamespace(batch=1, seq_len=128),
        measure=SimpleNamespace(warmup_runs=10, min_runs=50, max_seconds=10.0, timeout_s=60.0),
    )


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- the parser -----------------------------------------------------------------------------------
def test_a_successful_run_is_read_in_ms_and_mapped_onto_our_keys():
    out = parse_perf_test_output((DATA / "ok.txt").read_text())
    assert out.status == "ok" and out.runs == 50
    for key, value in OK_FIGURES.items():
        assert out.to_dict()[key] == pytest.approx(value), key
    # Peak working set size: 61337600 bytes, the process's lifetime peak.
    assert out.memory == {
        "peak_rss_mb": pytest.approx(61337600 / 2**20),
        "method": "onnxruntime_perf_test's peak working set (whole process)",
    }
    reported = out.harness["reported"]
    assert reported["threads_set"] == 2 and reported["avg_cpu_usage_percent"] == 24
    assert reported["dimension_overrides"] == {"batch": 1, "sequence": 128}
    assert reported["total_inference_s"] == pytest.approx(1.90035)
    # What it cannot give: no paired ratio, no samples (those come from its result file).
    assert out.ratio is None and out.samples_ms is None
    # What bfnas has no field for is kept beside the rest.
    assert set(out.extra) == {"max_ms", "p999_ms", "throughput_per_s"}


def test_newer_builds_mean_label_and_the_no_result_file_repeats_are_read():
    text = (DATA / "ok.txt").read_text()
    text = text.replace("Average inference time cost:", "Average inference time cost total:")
    text += "Avg CPU usage:24\nPeak working set size:61337600\nRuns:50\n"
    out = parse_perf_test_output(text)
    assert out.status == "ok" and out.mean_ms == pytest.approx(38.007)
    assert out.memory["peak_rss_mb"] == pytest.approx(61337600 / 2**20)


def test_a_model_that_does_not_load_is_a_failed_result_quoting_the_harness():
    out = parse_perf_test_output((DATA / "load_failure.txt").read_text())
    assert out.status == "failed"
    assert "Load model from" in out.reason
    assert "Unsupported model IR version: 11" in out.reason  # the long line keeps its end


def test_a_cut_off_output_is_a_failed_result_with_its_last_lines():
    out = parse_perf_test_output((DATA / "truncated.txt").read_text())
    assert out.status == "failed"
    assert "Average inference ti" in out.reason and "Total inference requests: 50" in out.reason


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\x01garbage",
        "Total inference requests: 50\nAverage inference time cost: 1e999999 ms\n"
        "P50 Latency: 1e999999 s\n",
        "Total inference requests: 0\nAverage inference time cost: nan ms\nP50 Latency: 0 s\n",
        "Run failed:failed to initialize.\n",
        "ERROR: Unknown command line flag 'k'\nSee 'onnxruntime_perf_test --help'.",
        None,
    ],
)
def test_unparseable_output_is_a_failed_result_never_an_exception(text):
    out = parse_perf_test_output(text)
    assert out.status == "failed" and out.reason


def test_the_per_run_file_gives_every_timed_run_in_ms():
    samples = parse_per_run_file((DATA / "ok_per_run.txt").read_text())
    assert len(samples) == 50
    ordered = sorted(samples)
    # The printed P50 is the sorted sample at floor(n * 0.5), as performance_runner.cc takes it.
    assert ordered[25] == pytest.approx(OK_FIGURES["median_ms"])
    assert ordered[0] == pytest.approx(OK_FIGURES["min_ms"])
    assert sum(samples) / 50 == pytest.approx(OK_FIGURES["mean_ms"], rel=1e-4)
    # Newer builds write submission and total seconds: the total is the latency.
    assert parse_per_run_file("blobs,0.001,0.0375,61337600,24,0\n") == [pytest.approx(37.5)]


def test_the_harness_argv_pins_threads_provider_and_shape():
    argv = perf_test_argv(
        "/data/local/tmp/onnxruntime_perf_test",
        "/data/local/tmp/bfnas/blobs/m.onnx",
        runs=50,
        intra_op_threads=4,
        inter_op_threads=1,
        provider="XnnpackExecutionProvider",
        batch=2,
        seq_len=64,
        result_file="/data/local/tmp/bfnas/runs/1.csv",
    )
    assert argv == [
        "/data/local/tmp/onnxruntime_perf_test",
        *("-m", "times", "-r", "50", "-x", "4", "-y", "1", "-e", "xnnpack", "-I"),
        *("-f", "batch:2", "-f", "sequence:64", "-s"),
        "/data/local/tmp/bfnas/blobs/m.onnx",
        "/data/local/tmp/bfnas/runs/1.csv",
    ]
    with pytest.raises(ValueError, match="no -e value for CUDAExecutionProvider"):
        perf_test_argv("h", "m", **{**_job_kwargs(), "provider": "CUDAExecutionProvider"})
    assert affinity_mask([4, 5, 6, 7]) == "f0" and affinity_mask([0, 9]) == "201"


def _job_kwargs() -> dict:
    return dict(runs=1, intra_op_threads=1, inter_op_threads=1, provider="cpu", batch=1, seq_len=8)


# -- the transport --------------------------------------------------------------------------------
def test_devices_listing_is_parsed_with_states_that_have_spaces():
    text = (
        "List of devices attached\n"
        "R58M12345              device usb:1-1 product:a52q model:SM_A525F device:a52q "
        "transport_id:3\n"
        "emulator-5554          offline transport_id:4\n"
        "0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules "
        "wrong?); see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:5\n"
        "\n"
    )
    devices = parse_devices(text)
    assert devices["R58M12345"].state == "device"
    assert devices["R58M12345"].info["model"] == "SM_A525F"
    assert devices["emulator-5554"].state == "offline"
    assert devices["0123456789ABCDEF"].state.startswith("no permissions (user in plugdev")
    assert devices["0123456789ABCDEF"].info["usb"] == "1-2"


def test_remote_arguments_are_quoted(phone, model):
    odd = "a b;touch canary;$(touch canary2)`touch canary3`'\"*"
    transport = AdbTransport(settings())
    out = transport.call(f"printf '%s\\n' {shlex.quote(odd)}")
    assert out.returncode == 0 and out.stdout.decode() == odd + "\n"
    workdir = "/data/local/tmp/odd dir;touch canary;$(touch canary2)"
    remote = AdbTransport(settings(workdir=workdir)).ensure(*model)
    assert fake_adb.host_path(phone, remote).read_bytes() == Path(model[0]).read_bytes()
    assert not any(phone.rglob("canary*"))


def test_a_model_is_pushed_once_by_its_hash(phone, model):
    transport = AdbTransport(settings())
    remote = transport.ensure(*model)
    assert transport.ensure(*model) == remote == f"/data/local/tmp/bfnas/blobs/{model[1]}.onnx"
    assert transport.uploads == 1
    assert fake_adb.host_path(phone, remote).read_bytes() == Path(model[0]).read_bytes()
    # A new runner finds it on the phone by its name (its hash checked there) and sends nothing.
    again = AdbTransport(settings())
    assert again.ensure(*model) == remote and again.uploads == 0
    pushes = [c for c in fake_adb.calls(phone) if "push" in c["argv"]]
    assert len(pushes) == 1 and pushes[0]["argv"][-1].endswith(".part-" + str(_pid()))


def _pid() -> int:
    import os

    return os.getpid()


def test_a_damaged_file_on_the_phone_is_pushed_again(phone, model):
    blob = fake_adb.host_path(phone, f"/data/local/tmp/bfnas/blobs/{model[1]}.onnx")
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"not the model")
    transport = AdbTransport(settings())
    transport.ensure(*model)
    assert transport.uploads == 1 and blob.read_bytes() == Path(model[0]).read_bytes()


def test_an_interrupted_push_leaves_no_complete_looking_file(phone, model):
    # Calls: 1 look on the phone, 2 the push (cut off halfway).
    fake_adb.configure(phone, SERIAL, drop_calls=(2,))
    blob = fake_adb.host_path(phone, f"/data/local/tmp/bfnas/blobs/{model[1]}.onnx")
    with pytest.raises(DeviceUnreachable) as info:
        AdbTransport(settings(), retries=0).ensure(*model)
    assert "Connection reset by peer" in str(info.value)
    assert not blob.exists()
    (part,) = blob.parent.glob(blob.name + ".part-*")
    assert 0 < part.stat().st_size < Path(model[0]).stat().st_size
    # The next push completes it: the half file is never taken for the model.
    transport = AdbTransport(settings())
    transport.ensure(*model)
    assert blob.read_bytes() == Path(model[0]).read_bytes() and transport.uploads == 1


def test_a_dropped_connection_is_retried_with_backoff_and_then_resumes(phone, model):
    fake_adb.configure(phone, SERIAL, drop_calls=(1,), offline_calls=(2,))
    sleeps = Sleeps()
    transport = AdbTransport(settings(retries=3, retry_backoff_s=0.5), sleep=sleeps)
    transport.ensure(*model)
    assert transport.retried == 2 and sleeps == [0.5, 1.0]
    assert transport.uploads == 1


def test_a_phone_that_stays_away_raises_one_line_after_the_retries(phone):
    fake_adb.configure(phone, SERIAL, drop_calls=tuple(range(1, 10)))
    sleeps = Sleeps()
    transport = AdbTransport(settings(retries=2, retry_backoff_s=0.5), sleep=sleeps)
    with pytest.raises(DeviceUnreachable) as info:
        transport.call("true")
    message = str(info.value)
    assert "\n" not in message and SERIAL in message and "error: closed" in message
    assert "failed 3 times" in message and sleeps == [0.5, 1.0]


def test_an_unattached_serial_is_named_in_one_line(phone):
    fake_adb.configure(phone, SERIAL, attached=False, others=(("emulator-5554", "device"),))
    sleeps = Sleeps()
    transport = AdbTransport(settings(retries=1), sleep=sleeps)
    with pytest.raises(DeviceUnreachable) as info:
        transport.call("true")
    message = str(info.value)
    assert "\n" not in message
    assert f"device '{SERIAL}' not found" in message
    assert f"{SERIAL} is not attached (adb devices lists emulator-5554 (device))" in message
    with pytest.raises(DeviceUnreachable, match=f"finding the phone failed.*{SERIAL} is not"):
        transport.require_attached()


def test_an_offline_phone_is_waited_for_and_named_with_its_state(phone):
    fake_adb.configure(phone, SERIAL, state="offline")
    sleeps = Sleeps()
    with pytest.raises(DeviceUnreachable, match=f"lists {SERIAL} as offline") as info:
        AdbTransport(settings(retries=2), sleep=sleeps).call("true")
    assert "error: device offline" in str(info.value) and len(sleeps) == 2


def test_an_unauthorized_phone_fails_at_once_without_retries(phone, model):
    fake_adb.configure(phone, SERIAL, state="unauthorized")
    sleeps = Sleeps()
    transport = AdbTransport(settings(retries=4, retry_backoff_s=5.0), sleep=sleeps)
    started = time.monotonic()
    for attempt in (lambda: transport.call("true"), lambda: transport.ensure(*model)):
        with pytest.raises(DeviceUnreachable, match="unauthorized") as info:
            attempt()
        assert "\n" not in str(info.value) and SERIAL in str(info.value)
    with pytest.raises(DeviceUnreachable, match="accept the USB debugging prompt"):
        transport.require_attached()
    assert sleeps == [] and transport.retried == 0 and time.monotonic() - started < 20


def test_a_missing_adb_client_is_one_line_naming_it(phone):
    transport = AdbTransport(settings(adb="/nonexistent/adb"))
    with pytest.raises(DeviceUnreachable, match="cannot run the adb client '/nonexistent/adb'"):
        transport.call("true")


# -- the runner -----------------------------------------------------------------------------------
def test_a_measurement_pushes_once_pins_the_threads_and_returns_the_result_keys(phone, model):
    fake_adb.install_harness(
        phone, DATA / "ok.txt", per_run=DATA / "ok_per_run.txt", expect=HARNESS_EXPECT
    )
    runner = AdbRunner(settings())
    p = profile()
    first = runner.run(*model, p)
    second = runner.run(*model, p, anchor=model)
    runner.close()
    assert first.status == second.status == "ok", first.reason
    assert runner.transport.uploads == 1  # the model, once
    runs = fake_adb.harness_calls(phone)
    assert len(runs) == 2
    assert runs[0][:8] == ["-m", "times", "-r", "50", "-x", "2", "-y", "1"]
    assert runs[0][-2] == f"/data/local/tmp/bfnas/blobs/{model[1]}.onnx".replace(
        "/data/local/tmp", str(phone / "data_local_tmp")
    )
    for key, value in OK_FIGURES.items():
        assert first.to_dict()[key] == pytest.approx(value), key
    assert first.runs == 50 and len(first.samples_ms) == 50
    assert 0 < first.median_rel_ci < 0.05  # from the per-run file: the trust rule reads it
    assert first.provider == "CPUExecutionProvider" and first.threads == 2
    assert first.model_bytes == Path(model[0]).stat().st_size
    assert first.device == {"serial": SERIAL}
    assert first.memory["peak_rss_mb"] == pytest.approx(61337600 / 2**20)
    harness = first.harness
    assert harness["path"] == "/data/local/tmp/onnxruntime_perf_test"
    assert harness["argv"][0] == harness["path"] and harness["exit_code"] == 0
    env = first.environment
    assert env["model"] == "Fake Phone" and env["android_release"] == "14"
    assert env["soc"] == "FAKE-SOC" and env["abi"] == "arm64-v8a" and env["threads"] == 2
    # The anchor cannot be paired by this harness: said, and no ratio is invented.
    assert second.ratio is None and "not paired" in second.details["anchor"]
    assert "anchor" not in first.details
    # Nothing is left behind but the model.
    assert not list((phone / "data_local_tmp" / "bfnas" / "runs").iterdir())


def test_cpu_affinity_runs_the_harness_under_taskset(phone, model):
    fake_adb.configure(phone, SERIAL, missing_tools=())
    fake_adb.install_harness(phone, DATA / "ok.txt", per_run=DATA / "ok_per_run.txt")
    result = AdbRunner(settings()).run(*model, profile(cpu_affinity=[4, 5, 6, 7]))
    assert result.status == "ok", result.reason
    (call,) = fake_adb.taskset_calls(phone)
    assert call["mask"] == "f0" and call["argv"][0].endswith("onnxruntime_perf_test")
    assert result.environment["affinity"] == [4, 5, 6, 7]


def test_cpu_affinity_without_taskset_is_a_failed_result_naming_it(phone, model):
    fake_adb.install_harness(phone, DATA / "ok.txt", per_run=DATA / "ok_per_run.txt")
    result = AdbRunner(settings()).run(*model, profile(cpu_affinity=[0]))
    assert result.status == "failed" and "taskset" in result.reason
    assert "exited 127" in result.reason


def test_a_model_that_does_not_load_is_a_failed_measurement(phone, model):
    fake_adb.install_harness(phone, DATA / "load_failure.txt", exit_code=255, to_stderr=True)
    result = AdbRunner(settings()).run(*model, profile())
    assert result.status == "failed"
    assert result.reason.startswith("onnxruntime_perf_test exited 255: ")
    assert "Unsupported model IR version" in result.reason
    assert result.device == {"serial": SERIAL} and result.harness["exit_code"] == 255


def test_a_harness_that_crashes_is_a_failed_measurement_naming_the_signal(phone, model):
    fake_adb.install_harness(phone, DATA / "truncated.txt", kill_signal="SIGSEGV")
    result = AdbRunner(settings()).run(*model, profile())
    assert result.status == "failed"
    assert "killed by SIGSEGV" in result.reason and "Average inference ti" in result.reason


def test_a_harness_that_kept_only_one_dimension_override_is_refused(phone, model, tmp_path):
    one = tmp_path / "one_override.txt"
    one.write_text(
        (DATA / "ok.txt").read_text().replace("Overriding dimension with name, batch, to 1\n", "")
    )
    fake_adb.install_harness(phone, one, per_run=DATA / "ok_per_run.txt")
    result = AdbRunner(settings()).run(*model, profile())
    assert result.status == "failed" and "keeps only the last -f" in result.reason


def test_a_harness_that_set_other_threads_is_refused(phone, model):
    fake_adb.install_harness(phone, DATA / "ok.txt", per_run=DATA / "ok_per_run.txt")
    result = AdbRunner(settings()).run(*model, profile(intra_op_threads=4))
    assert result.status == "failed"
    assert "set 2 intra-op threads, not the profile's 4" in result.reason


def test_a_harness_that_overruns_the_timeout_is_stopped_and_failed(phone, model):
    fake_adb.install_harness(phone, DATA / "ok.txt", sleep_s=30)
    p = profile(settings(connect_timeout_s=1.0))
    p.measure.timeout_s = 1.0
    started = time.monotonic()
    result = AdbRunner(settings(connect_timeout_s=1.0)).run(*model, p)
    assert result.status == "failed" and "timeout after 2 s" in result.reason
    assert time.monotonic() - started < 20
    time.sleep(0.5)
    import subprocess

    still = subprocess.run(
        ["pgrep", "-f", str(phone / "data_local_tmp" / "onnxruntime_perf_test")],
        capture_output=True,
    )
    assert still.stdout.strip() == b""  # pkill on the phone stopped it


def test_a_provider_the_harness_has_no_flag_for_is_a_failed_result(phone, model):
    result = AdbRunner(settings()).run(*model, profile(providers=["CUDAExecutionProvider"]))
    assert result.status == "failed" and "no -e value for CUDAExecutionProvider" in result.reason


# -- checks and the adapter -----------------------------------------------------------------------
def _rows(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def test_probe_names_a_missing_harness_with_its_field(phone):
    rows = _rows(adb_probe(profile()))
    assert rows["adb client"]["ok"] and rows["adb client"]["field"] == "target.adb"
    assert rows["phone"]["ok"] and rows["phone"]["field"] == "target.serial"
    assert rows["phone ABI"]["ok"] and "arm64-v8a" in rows["phone ABI"]["detail"]
    assert not rows["harness"]["ok"] and rows["harness"]["field"] == "target.harness"
    assert "/data/local/tmp/onnxruntime_perf_test is not on the phone" in rows["harness"]["detail"]
    assert rows["workdir"]["ok"] and rows["provider"]["ok"]
    assert set(next(iter(rows.values()))) == {"name", "ok", "detail", "field"}


def test_probe_passes_with_the_harness_there(phone, model):
    fake_adb.install_harness(phone, DATA / "ok.txt")
    rows = adb_probe(profile())
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    runner = adb_runner(profile())
    assert all(r["ok"] for r in runner.probe(profile())) and runner.lanes == 1


def test_probe_names_a_harness_that_cannot_start_on_the_phone(phone):
    harness = fake_adb.host_path(phone, "/data/local/tmp/onnxruntime_perf_test")
    harness.write_text(
        "#!/bin/sh\n"
        'echo \'CANNOT LINK EXECUTABLE "./onnxruntime_perf_test": library '
        '"libonnxruntime.so" not found\' >&2\n'
        "exit 1\n"
    )
    harness.chmod(0o755)
    row = _rows(adb_probe(profile()))["harness"]
    assert not row["ok"] and row["field"] == "target.harness"
    assert "libonnxruntime.so" in row["detail"]


def test_probe_rows_for_a_missing_phone_client_and_forbidden_cores(phone, tmp_path):
    fake_adb.configure(phone, SERIAL, attached=False)
    rows = _rows(adb_probe(profile()))
    assert not rows["phone"]["ok"] and rows["phone"]["field"] == "target.serial"
    assert f"{SERIAL} is not attached" in rows["phone"]["detail"]
    fake_adb.configure(phone, SERIAL, state="unauthorized")
    assert "USB debugging prompt" in _rows(adb_probe(profile()))["phone"]["detail"]

    missing = profile(settings(adb=str(tmp_path / "no-adb")))
    (row,) = adb_probe(missing)
    assert row["name"] == "adb client" and not row["ok"] and row["field"] == "target.adb"

    fake_adb.configure(phone, SERIAL, missing_tools=(), cpus_allowed="0-3")
    fake_adb.install_harness(phone, DATA / "ok.txt")
    row = _rows(adb_probe(profile(cpu_affinity=[2, 6])))["cpu affinity"]
    assert not row["ok"] and row["field"] == "runtime.cpu_affinity" and "[6]" in row["detail"]
    assert _rows(adb_probe(profile(cpu_affinity=[2, 3])))["cpu affinity"]["ok"]


def test_an_adb_profile_is_its_own_kind_of_target():
    profile = parse_profile(
        {"name": "phone", "target": {"kind": "adb", "serial": "R58M", "workdir": "/data/x"}},
        "phone.toml",
    )
    got = adb_settings(profile)
    assert isinstance(got, AdbTarget) and got == AdbTarget(serial="R58M", workdir="/data/x")
    assert (got.adb, got.harness) == ("adb", "/data/local/tmp/onnxruntime_perf_test")
    assert len(profile.hash()) == 16 and profile.resolved()["target"]["serial"] == "R58M"
    with pytest.raises(InputError, match="phone.toml: target.serial: Field required"):
        parse_profile({"name": "phone", "target": {"kind": "adb"}}, "phone.toml")
    with pytest.raises(InputError, match="target.workdir: must be an absolute path"):
        parse_profile(
            {"name": "p", "target": {"kind": "adb", "serial": "R", "workdir": "x"}}, "p.toml"
        )
    with pytest.raises(InputError, match="target.host: unknown field"):  # an SSH setting
        parse_profile({"name": "p", "target": {"kind": "adb", "serial": "R", "host": "h"}}, "p")


def test_hw_check_of_an_adb_profile_names_what_the_phone_lacks(phone, tmp_path, capsys):
    """The whole command: an adb profile file, checked on the (stand-in) phone."""
    from bfnas.cli import main

    hw = tmp_path / "phone.toml"
    hw.write_text(
        f'name = "phone"\n[target]\nkind = "adb"\nserial = "{SERIAL}"\nadb = "{FAKE_ADB}"\n'
        "[runtime]\nintra_op_threads = 2\n"
    )
    assert main(["hw", "check", str(hw)]) == 2  # no harness on the phone yet
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target.harness" in err and str(hw) in err
    fake_adb.install_harness(phone, DATA / "ok.txt")
    assert main(["hw", "check", str(hw), "--json"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
