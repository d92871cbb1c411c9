import json
from pathlib import Path

import pytest

from bfnas.bench.hardware_profile import load_profile, parse_profile, shipped_profiles
from bfnas.bench.runners.usable import probe
from bfnas.cli import main
from bfnas.errors import InputError

REQUIRED = {
    "local-cpu-int8",
    "local-cpu-fp32",
    "local-cpu-int8-2t",
    "x86-cuda-ort-int8",
    "x86-trt-int8",
    "jetson-orin-trt-int8",
    "rpi4-ort-int8",
}


def test_shipped_profiles_validate():
    shipped = shipped_profiles()
    assert set(shipped) >= REQUIRED
    for name in shipped:
        p = load_profile(name)
        assert p.name == name and len(p.hash()) == 16
    assert load_profile("jetson-orin-trt-int8").target.kind == "ssh"
    assert load_profile("local-cpu-int8").runtime.intra_op_threads == 1
    assert load_profile("local-cpu-int8-2t").runtime.intra_op_threads == 2


def test_hash_follows_conditions_not_labels():
    base = parse_profile({"name": "a", "description": "x"}, "<t>")
    relabelled = parse_profile({"name": "a", "description": "other words"}, "<t>")
    threads = parse_profile({"name": "a", "runtime": {"intra_op_threads": 2}}, "<t>")
    assert base.hash() == relabelled.hash() != threads.hash()
    # How a measurement is judged is not how it is taken: a store keeps its measurements.
    judged = parse_profile({"name": "a", "measure": {"max_rel_ci": 0.05, "busy_wait_s": 5}}, "<t>")
    assert judged.hash() == base.hash()


def test_a_retired_trust_field_names_its_replacement(tmp_path, capsys):
    path = tmp_path / "old.toml"
    path.write_text('name = "old"\n[measure]\nmax_cov = 0.25\n')
    assert main(["hw", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_cov is no longer used" in err and "max_rel_ci" in err


MALFORMED = [
    ("", "name"),
    ('name = "bad name!"', "name"),
    ('name = "x"\ncolour = "red"', "colour"),
    ('name = "x"\n[target]\nkind = "carrier-pigeon"', "target.kind"),
    ('name = "x"\n[target]\nkind = "ssh"', "target.host"),
    ('name = "x"\n[target]\nkind = "local"\nhost = "h"', "target.host"),  # not a local setting
    ('name = "x"\n[target]\nkind = "ssh"\nhost = "h"\nport = 70000', "target.port"),
    ('name = "x"\n[target]\nkind = "ray"', "target.resource"),
    ('name = "x"\n[runtime]\nbackend = "tflite"', "runtime.backend"),
    ('name = "x"\n[runtime]\nintra_op_threads = 0', "runtime.intra_op_threads"),
    ('name = "x"\n[runtime]\nproviders = []', "runtime.providers"),
    ('name = "x"\n[runtime]\nproviders = ["A", "B"]\nprovider_options = [{}]', "runtime"),
    ('name = "x"\nprecision = "int4"', "precision"),
    ('name = "x"\n[quantization]\nrecipe = "magic"', "quantization"),
    ('name = "x"\n[workload]\nseq_len = 4096', "workload.seq_len"),
    ('name = "x"\n[workload]\nbatch = "one"', "workload.batch"),
    ('name = "x"\n[measure]\nmin_seconds = 5\nmax_seconds = 1', "measure"),
    ('name = "x"\n[measure]\ntimeout_s = 1', "measure"),
    ('name = "x"\n[measure]\nwarmup_runs = -1', "measure.warmup_runs"),
    ('name = "x"\n[measure]\nmax_other_cpu = 0.5', "measure"),  # retired: says what replaced it
    ('name = "x"\n[measure]\nmax_rel_ci = 0', "measure.max_rel_ci"),
    ('name = "x"\n[measure]\nmin_cpu_share = 1.5', "measure.min_cpu_share"),
    ('name = "x"\n[measure]\nbusy_wait_s = -1', "measure.busy_wait_s"),
    ('name = "x"\nprecision = "fp16"', "<root>"),
    ('name = "x"\n[measure\n', None),
]


@pytest.mark.parametrize(("text", "field"), MALFORMED)
def test_malformed_profile_is_one_line_naming_file_and_field(tmp_path, capsys, text, field):
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert err.value.where == str(path)
    if field and field != "<root>":
        assert err.value.field == field
    code = main(["hw", "show", str(path)])
    out, errout = capsys.readouterr()
    assert code == 2 and out == "" and errout.count("\n") == 1 and str(path) in errout


def test_hw_check_local_profile_is_usable(capsys):
    assert main(["hw", "check", "local-cpu-int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] and any(c["name"].startswith("provider") for c in report["checks"])


def test_hw_check_names_what_is_missing_for_tensorrt(capsys):
    code = main(["hw", "check", "x86-trt-int8", "--json"])
    out, err = capsys.readouterr()
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    has_gpu = Path("/dev/nvidia0").exists()
    assert checks["nvidia gpu"]["ok"] == has_gpu
    if not has_gpu:
        assert code == 2 and "/dev/nvidia0" in checks["nvidia gpu"]["detail"]
        assert "not usable here" in err and err.count("\n") == 1


def test_hw_check_refuses_a_provider_this_build_lacks(tmp_path):
    path = tmp_path / "npu.toml"
    path.write_text('name = "npu"\n[runtime]\nproviders = ["NoSuchExecutionProvider"]\n')
    checks = {c.name: c for c in probe(load_profile(path))}
    assert not checks["provider NoSuchExecutionProvider"].ok
    assert "not in this onnxruntime build" in checks["provider NoSuchExecutionProvider"].detail


def test_oversubscribed_threads_fail_the_check(tmp_path):
    import os

    path = tmp_path / "many.toml"
    path.write_text(
        f'name = "many"\n[runtime]\nintra_op_threads = {len(os.sched_getaffinity(0)) + 1}\n'
    )
    checks = {c.name: c for c in probe(load_profile(path))}
    assert not checks["threads"].ok and "oversubscribed" in checks["threads"].detail


def test_the_anchor_is_the_ladder_rung_nearest_in_size():
    from bfnas.bench.jobs.profiling import ANCHOR_LADDER, anchor_arch
    from bfnas.models.space.subnet import SubnetConfig

    tiny = SubnetConfig.uniform(1, 120, 12, 120, 128)
    huge = SubnetConfig.uniform(5, 564, 12, 564, 1016)
    assert anchor_arch(tiny) == ANCHOR_LADDER[0] and anchor_arch(huge) == ANCHOR_LADDER[-1]
    for rung in ANCHOR_LADDER:
        assert anchor_arch(rung) == rung
    sizes = [a.total_macs() for a in ANCHOR_LADDER]
    assert sizes == sorted(sizes)


def test_a_profile_at_a_tasks_sequence_length_is_another_profile():
    from bfnas.bench.hardware_profile import load_profile
    from bfnas.errors import InputError

    base = load_profile("local-cpu-int8")
    at64 = base.at_seq_len(64)
    assert at64.workload.seq_len == 64 and at64.name == "local-cpu-int8-seq64"
    assert at64.hash() != base.hash()  # its measurements never mix with the original's
    assert at64.runtime == base.runtime and at64.quantization == base.quantization
    assert base.at_seq_len(base.workload.seq_len) is base
    with pytest.raises(InputError, match="seq_len"):
        base.at_seq_len(1024)
