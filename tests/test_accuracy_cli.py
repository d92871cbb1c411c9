"""`bfnas accuracy measure / show / protocols`: fine-tunes into the accuracy store from the
command line, a rerun resuming, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json

import pytest
from refusals import Refusal, check_refusal, run_cli

from bfnas.models.train.task_data import TaskDataSettings, build_task

ARCH = '{"layers": 1, "hidden": 128, "heads": 2, "qkv": 64, "ffn": 256}'


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task") / "task"
    build_task(folder, TaskDataSettings(classes=2, max_per_class=20))
    return folder


def test_measure_stores_each_seed_once_and_a_rerun_reads_them_back(task, tmp_path, capsys):
    db = tmp_path / "acc.db"
    argv = [
        "accuracy",
        "measure",
        "--supernet",
        "minilm",
        "--task-dir",
        str(task),
        "--seeds",
        "0,1",
        "--arch",
        ARCH,
        "--samples",
        "1",
        "--db",
        str(db),
        "--json",
    ]
    code, out, _ = run_cli(capsys, argv)
    assert code == 0
    first = json.loads(out)
    assert first["protocol"] == "standard" and len(first["subnets"]) == 2
    row = first["subnets"][0]
    assert row["seeds"] == [0, 1] and len(row["accuracy_per_seed"]) == 2
    assert 0 <= row["accuracy_mean"] <= 1 and row["accuracy_std"] is not None
    assert row["train_seconds_mean"] > 0

    code, out, _ = run_cli(capsys, argv)
    assert code == 0 and json.loads(out)["subnets"] == first["subnets"]
    code, out, _ = run_cli(capsys, ["accuracy", "show", "--db", str(db), "--json"])
    summary = json.loads(out)
    assert code == 0 and summary["by_task_protocol"][0]["finetunes"] == 4  # not 8
    code, out, _ = run_cli(capsys, ["accuracy", "show", "--db", str(db)])
    assert code == 0 and "L1 H128 A2 Q64 F256" in out and "over 2 seed(s)" in out


def test_protocols_are_listed_with_their_hash(capsys):
    code, out, _ = run_cli(capsys, ["accuracy", "protocols", "--json"])
    listed = {p["name"]: p for p in json.loads(out)}
    assert code == 0 and "standard" in listed and len(listed["standard"]["hash"]) == 16


MEASURE = ["accuracy", "measure", "--supernet", "minilm", "--db", "{tmp}/acc.db"]
TASK_FILES = {
    "t/train.tsv": "sentence\tlabel\na b c\t0\nd e f\t1\n",
    "t/dev.tsv": "sentence\tlabel\na\t0\n",
}
REFUSALS = [
    Refusal(
        "seeds",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH, "--seeds", "0,x"],
        "--seeds",
        TASK_FILES,
    ),
    Refusal(
        "repeated-seed",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH, "--seeds", "1,1"],
        "--seeds",
        TASK_FILES,
    ),
    Refusal(
        "protocol",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH, "--protocol", "long"],
        "--protocol",
        TASK_FILES,
    ),
    Refusal("nothing", [*MEASURE, "--task-dir", "{tmp}/t"], "--arch", TASK_FILES),
    Refusal(
        "arch",
        [
            *MEASURE,
            "--task-dir",
            "{tmp}/t",
            "--arch",
            '{"layers": 9, "hidden": 128, "heads": 2, "qkv": 64, "ffn": 256}',
        ],
        "--arch",
        TASK_FILES,
    ),
    Refusal("no-task", [*MEASURE, "--task-dir", "{tmp}/none", "--arch", ARCH], "{tmp}/none"),
    Refusal(
        "no-dev",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH],
        "dev.tsv",
        {"t/train.tsv": TASK_FILES["t/train.tsv"]},
    ),
    Refusal(
        "workers",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH, "--workers", "0"],
        "--workers",
        TASK_FILES,
    ),
    Refusal(
        "not-a-store",
        [*MEASURE, "--task-dir", "{tmp}/t", "--arch", ARCH],
        "acc.db",
        {**TASK_FILES, "acc.db": b"not sqlite at all" * 10},
    ),
    Refusal("show-missing", ["accuracy", "show", "--db", "{tmp}/none.db"], "none.db"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    check_refusal(case, tmp_path, capsys, monkeypatch)


def test_fit_learns_from_the_stored_finetunes_and_saves_a_model(task, tmp_path, capsys):
    from bfnas.search.accuracy_predictor import AccuracyPredictor

    db = str(tmp_path / "acc.db")
    common = ["--supernet", "minilm", "--task-dir", str(task), "--db", db]
    # Too few subnets yet: one line naming the store, nothing written.
    assert (
        run_cli(capsys, ["accuracy", "measure", *common, "--samples", "3", "--seeds", "0"])[0] == 0
    )
    code, _, err = run_cli(capsys, ["accuracy", "fit", *common, "--out", str(tmp_path / "m")])
    assert code == 2 and "acc.db" in err and "at least" in err and not (tmp_path / "m").exists()
    argv = ["accuracy", "measure", *common, "--samples", "10", "--seeds", "0", "--json"]
    assert run_cli(capsys, argv)[0] == 0
    code, out, _ = run_cli(
        capsys, ["accuracy", "fit", *common, "--out", str(tmp_path / "m"), "--json"]
    )
    fitted = json.loads(out)
    assert code == 0 and fitted["metrics"]["rows"] == 10  # the 3 earlier ones among the 10
    assert -1 <= fitted["metrics"]["oof_kendall_tau"] <= 1
    model = AccuracyPredictor.load(tmp_path / "m")
    assert model.scope.protocol == "standard" and model.scope.seq_len == 64


def test_collect_fine_tunes_in_rounds_until_a_cap_and_saves_its_predictor(task, tmp_path, capsys):
    db, model = str(tmp_path / "acc.db"), str(tmp_path / "m")
    argv = [
        "accuracy",
        "collect",
        "--supernet",
        "minilm",
        "--task-dir",
        str(task),
        "--db",
        db,
        "--until",
        "0.99",  # out of reach on 40 dev sentences: the cap stops it
        "--first",
        "8",
        "--round-size",
        "2",
        "--max-finetunes",
        "10",
        "--out",
        model,
        "--json",
    ]
    code, out, _ = run_cli(capsys, argv)
    result = json.loads(out)
    assert code == 0 and result["stop"] == "max-finetunes" and result["subnets"] == 10
    assert [p["rows"] for p in result["curve"]] == [8, 10]  # the first fit, then one round
    assert result["model"] and (tmp_path / "m" / "predictor.json").is_file()
    # A rerun reads every fine-tune back from the store: the same curve, nothing trained.
    code, again, _ = run_cli(capsys, argv)
    assert code == 0 and json.loads(again)["curve"] == result["curve"]


COLLECT = ["accuracy", "collect", "--supernet", "minilm", "--db", "{tmp}/acc.db"]
COLLECT_REFUSALS = [
    Refusal(
        "budgets-alone",
        [*COLLECT, "--task-dir", "{tmp}/t", "--until", "0.5", "--budgets", "2", "--out", "{tmp}/m"],
        "--budgets",
        TASK_FILES,
    ),
    Refusal(
        "until",
        [*COLLECT, "--task-dir", "{tmp}/t", "--until", "1.5", "--out", "{tmp}/m"],
        "--until",
        TASK_FILES,
    ),
    Refusal(
        "cap-below-first",
        [
            *COLLECT,
            "--task-dir",
            "{tmp}/t",
            "--until",
            "0.5",
            "--max-finetunes",
            "4",
            "--out",
            "{tmp}/m",
        ],
        "--max-finetunes",
        TASK_FILES,
    ),
]


@pytest.mark.parametrize("case", COLLECT_REFUSALS, ids=lambda c: c.id)
def test_collect_refuses_bad_input_in_one_line(case, tmp_path, capsys, monkeypatch):
    check_refusal(case, tmp_path, capsys, monkeypatch)


SEARCH = [
    "accuracy",
    "search",
    "--db",
    "{tmp}/lat.db",
    "--max-latency-ms",
    "2",
    "--accuracy-model",
    "{tmp}/m",
    "--supernet",
    "minilm",
    "--task-dir",
    "{tmp}/t",
    "--out",
    "{tmp}/out",
    "--artifacts",
    "{tmp}/art",
]
SEARCH_REFUSALS = [
    Refusal("no-latency-store", SEARCH, "lat.db", TASK_FILES),
    Refusal("verify", [*SEARCH, "--verify", "0"], "--verify", TASK_FILES),
    Refusal("seeds", [*SEARCH, "--seeds", "a"], "--seeds", TASK_FILES),
    Refusal("protocol", [*SEARCH, "--protocol", "nope"], "--protocol", TASK_FILES),
    Refusal(
        "no-accuracy-model",
        SEARCH,
        "{tmp}/m",
        {**TASK_FILES, "lat.db": b""},
    ),
    Refusal(
        "out-is-a-file",
        SEARCH,
        "--out",
        {**TASK_FILES, "out": "a file"},
    ),
]


@pytest.mark.parametrize("case", SEARCH_REFUSALS, ids=lambda c: c.id)
def test_search_refuses_bad_input_in_one_line(case, tmp_path, capsys, monkeypatch):
    check_refusal(case, tmp_path, capsys, monkeypatch)
