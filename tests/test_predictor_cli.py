import json

import pytest
from conftest import SEED_FILE

from bfnas.cli import main


@pytest.fixture(scope="module")
def seed_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pred")
    src = folder / "seed.tsv"
    src.write_text("\n".join(SEED_FILE.read_text().splitlines()[:600]) + "\n")
    db = folder / "lat.db"
    assert (
        main(
            [
                "import",
                str(src),
                "--hw",
                "seed-cpu-fp32",
                "--space",
                "bigger-faster",
                "--db",
                str(db),
            ]
        )
        == 0
    )
    return db


def test_fit_on_a_holdout_then_predict_eval_plot(seed_db, tmp_path, capsys):
    model = tmp_path / "model"
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "seed-cpu-fp32",
                "--db",
                str(seed_db),
                "--out",
                str(model),
                "--train-size",
                "300",
                "--test-size",
                "250",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["train_rows"] == 300 and out["test_rows"] == 250 and out["label"] == "median_ms"
    assert set(out["metrics"]) == {"rmse_ms", "mape", "within_5pct", "within_10pct", "kendall_tau"}
    assert out["metrics"]["within_10pct"] > 0.95

    arch = '{"layers": 3, "hidden": 384, "heads": 12, "qkv": 384, "ffn": 1016}'
    assert main(["predictor", "predict", "--model", str(model), "--arch", arch, "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["low_ms"] <= pred["latency_ms"] <= pred["high_ms"] and pred["latency_ms"] > 0

    assert main(["predictor", "eval", "--model", str(model), "--db", str(seed_db), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["rows"] == 600 and ev["metrics"]["within_10pct"] > 0.95

    png = tmp_path / "p.png"
    assert (
        main(["predictor", "plot", "--model", str(model), "--db", str(seed_db), "--out", str(png)])
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_with_cross_validation(seed_db, tmp_path, capsys):
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "seed-cpu-fp32",
                "--db",
                str(seed_db),
                "--out",
                str(tmp_path / "m"),
                "--folds",
                "3",
                "--target",
                "log",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "3-fold CV" and out["train_rows"] == 600 and out["target"] == "log"
    assert set(out["fold_std"]) == set(out["metrics"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--hw", "nowhere"], "no profile 'nowhere'"),
        (
            ["--hw", "seed-cpu-fp32", "--train-size", "500", "--test-size", "500"],
            "the store has 600",
        ),
        (["--hw", "seed-cpu-fp32", "--train-size", "300"], "together"),
        (["--hw", "seed-cpu-fp32", "--space", "minilm-l6"], "no trusted measurements"),
    ],
)
def test_bad_fit_requests_are_one_line_errors_and_write_nothing(
    seed_db, tmp_path, capsys, argv, needle
):
    out = tmp_path / "model"
    code = main(["predictor", "fit", "--db", str(seed_db), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and not out.exists()


def test_predict_refuses_an_arch_outside_the_models_space(seed_db, tmp_path, capsys):
    model = tmp_path / "model"
    assert (
        main(
            [
                "predictor",
                "fit",
                "--hw",
                "seed-cpu-fp32",
                "--db",
                str(seed_db),
                "--out",
                str(model),
                "--train-size",
                "100",
                "--test-size",
                "10",
            ]
        )
        == 0
    )
    capsys.readouterr()
    arch = '{"layers": 3, "hidden": 768, "heads": 12, "qkv": 768, "ffn": 1016}'
    assert main(["predictor", "predict", "--model", str(model), "--arch", arch]) == 2
    assert "hidden" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "flag", "needle"),
    [
        (["--folds", "0"], "--folds", "at least 2, got 0"),
        (["--train-size", "12", "--test-size", "-3"], "--test-size", "got -3"),
        (["--train-size", "5", "--test-size", "3"], "--train-size", "got 5"),
    ],
)
def test_a_bad_evaluation_flag_is_blamed_by_name(seed_db, tmp_path, capsys, args, flag, needle):
    code = main(
        [
            "predictor",
            "fit",
            "--hw",
            "seed-cpu-fp32",
            "--db",
            str(seed_db),
            "--out",
            str(tmp_path / "m"),
            *args,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and flag in err and needle in err
    assert not (tmp_path / "m").exists()
