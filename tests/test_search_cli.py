"""`bfnas search` end to end: a store profiled here, a predictor fitted from it, a search,
its winners measured on this machine, stored, refitted, searched again."""

import json
import sqlite3

import numpy as np
import pytest

from bfnas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, fast_profile_file, tiny_space_file):
    folder = tmp_path_factory.mktemp("search")
    db = folder / "lat.db"
    assert (
        main(
            [
                "profile",
                "--hw",
                str(fast_profile_file),
                "--space",
                str(tiny_space_file),
                "--samples",
                "50",  # the report cross-validates the predictor from 50 rows
                "--db",
                str(db),
                "--artifacts",
                str(folder / "art"),
                "--json",
            ]
        )
        == 0
    )
    con = sqlite3.connect(db)
    ms = [
        r[0]
        for r in con.execute(
            "SELECT median_ms FROM measurements WHERE role = 'sample' AND status = 'ok'"
        )
    ]
    con.close()
    return folder, db, float(np.median(ms))


def _args(profiled, fast_profile_file, tiny_space_file, out, *extra):
    folder, db, _ = profiled
    return [
        "search",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--db",
        str(db),
        "--artifacts",
        str(folder / "art"),
        "--population",
        "30",
        "--parents",
        "8",
        "--generations",
        "5",
        "--out",
        str(out),
        *extra,
    ]


def test_search_verifies_refits_and_reports(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path
):
    _, db, median = profiled
    con = sqlite3.connect(db)
    before = con.execute(
        "SELECT COUNT(*) FROM measurements WHERE role IN ('sample', 'verify')"
    ).fetchone()[0]
    code, out, _ = run(
        capsys,
        *_args(
            profiled,
            fast_profile_file,
            tiny_space_file,
            tmp_path / "s",
            "--max-latency-ms",
            f"{median:.4f}",
            "--verify",
            "2",
            "--rounds",
            "2",
            "--json",
        ),
    )
    assert code == 0
    result = json.loads(out)
    best = result["best"]
    assert set(best) >= {"arch", "objective", "predicted_ms", "measured_ms", "within_budget"}
    assert len(result["rounds"]) == 2 and result["evaluated"] > 0
    verified = [v for r in result["rounds"] for v in r["verified"]]
    assert len(verified) == 4
    for v in verified:
        assert v["status"] in ("ok", "unstable") and v["measured_ms"] > 0
        assert v["within_budget"] == (v["measured_ms"] <= median)  # never hidden either way
        assert v["high_ms"] <= median  # chosen under the budget with the margin
    if any(v["within_budget"] for v in verified):
        assert best["within_budget"] and best["objective"] == max(
            v["objective"] for v in verified if v["within_budget"]
        )
    # The verified subnets are in the store, and round 2 was fitted on them.
    after = con.execute(
        "SELECT COUNT(*) FROM measurements WHERE role IN ('sample', 'verify')"
    ).fetchone()[0]
    assert after == before + 4
    runs = con.execute("SELECT kind, status FROM runs WHERE kind = 'search'").fetchall()
    assert ("search", "finished") in runs
    con.close()
    files = {p.name for p in (tmp_path / "s").iterdir()}
    assert files == {"best.json", "pareto.json", "history.json"}
    assert json.loads((tmp_path / "s" / "best.json").read_text()) == best


def test_pareto_mode_writes_the_front(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path
):
    _, _, median = profiled
    code, out, _ = run(
        capsys,
        *_args(
            profiled,
            fast_profile_file,
            tiny_space_file,
            tmp_path / "p",
            "--max-latency-ms",
            f"{2 * median:.4f}",
            "--mode",
            "pareto",
            "--verify",
            "0",
            "--json",
        ),
    )
    assert code == 0
    front = json.loads((tmp_path / "p" / "pareto.json").read_text())
    assert len(front) >= 2
    assert all(
        a["predicted_ms"] < b["predicted_ms"] and a["objective"] < b["objective"]
        for a, b in zip(front, front[1:], strict=False)
    )
    assert json.loads(out)["best"]["status"] == "not verified"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-latency-ms", "-1"], "--max-latency-ms"),
        (["--max-latency-ms", "5", "--objective", "nope"], "--objective"),
        (
            ["--max-latency-ms", "5", "--objective", "oneshot"],
            "error: --data: the oneshot objective needs a one-shot scorer",
        ),
        (
            ["--max-latency-ms", "5", "--objective", "oneshot", "--data", "/no/such/data"],
            "manifest.json",
        ),
        (["--max-latency-ms", "5", "--population", "10", "--parents", "20"], "--parents"),
        (["--max-latency-ms", "5", "--rounds", "0"], "--rounds"),
        (["--max-latency-ms", "5", "--model", "/no/such/model"], "predictor.json"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path, extra, message
):
    code, out, err = run(
        capsys, *_args(profiled, fast_profile_file, tiny_space_file, tmp_path / "x", *extra)
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_store_without_enough_rows_says_what_to_run(
    capsys, fast_profile_file, tiny_space_file, tmp_path
):
    db = tmp_path / "empty.db"
    from bfnas.bench.store.latency_store import LatencyStore

    LatencyStore(db).close()
    code, _, err = run(
        capsys,
        "search",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--db",
        str(db),
        "--max-latency-ms",
        "5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and not (tmp_path / "o").exists()
    assert err.startswith(f"bfnas: error: {db}: measurements: 0 trusted measurements of ")
    assert err.rstrip().endswith(
        ": profile 300 subnets of space tiny on test-cpu-int8 into this store first"
    )
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0  # nothing written
    assert con.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 0
    con.close()
    code, _, err = run(
        capsys,
        "search",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--db",
        str(tmp_path / "missing.db"),
        "--max-latency-ms",
        "5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "no such store" in err


def test_report_shows_coverage_accuracy_and_searches(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path
):
    _, db, median = profiled
    assert (
        run(
            capsys,
            *_args(
                profiled,
                fast_profile_file,
                tiny_space_file,
                tmp_path / "s",
                "--max-latency-ms",
                f"{median:.4f}",
                "--verify",
                "1",
            ),
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "report", "--db", str(db), "--out", str(tmp_path / "r"), "--json")
    assert code == 0
    facts = json.loads(out)
    page = (tmp_path / "r" / "report.html").read_text()
    assert facts["report"].endswith("report.html")
    names = {p.split("/")[-1] for p in facts["plots"]}
    assert any(n.startswith("coverage-") for n in names) and any(
        n.startswith("accuracy-") for n in names
    )
    assert any(n.endswith("-front.png") for n in names) and any(
        n.endswith("-progress.png") for n in names
    )
    assert page.count("data:image/png;base64,") == len(names)  # self-contained
    assert "within 10 %" in page and "measured ms" in page and "test-cpu-int8" in page


def test_report_of_a_missing_store_is_one_line(capsys, tmp_path):
    code, _, err = run(
        capsys, "report", "--db", str(tmp_path / "no.db"), "--out", str(tmp_path / "r")
    )
    assert code == 2 and "no such store" in err and not (tmp_path / "r").exists()


def test_a_predictor_of_a_store_whose_anchors_ran_at_another_speed_is_flagged(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path
):
    """Anchor-normalized ms are a store's: the anchors' usual times there. Measured on this
    machine, the same VM ran the anchors 22 % faster four hours later; a predictor fitted on
    the earlier store predicts in its ms, and a search in the later store is told so."""
    folder, db, median = profiled
    pred = tmp_path / "pred"
    code, _, _ = run(
        capsys, "predictor", "fit", "--hw", "test-cpu-int8", "--db", str(db), "--out",
        str(pred), "--folds", "2", "--json",
    )  # fmt: skip
    assert code == 0
    meta = json.loads((pred / "predictor.json").read_text())
    con = sqlite3.connect(db)
    anchors = {
        k: float(np.median([m for (m,) in con.execute(
            "SELECT anchor_ms FROM measurements WHERE anchor_key = ? AND status = 'ok'", (k,)
        )]))
        for (k,) in con.execute("SELECT DISTINCT anchor_key FROM measurements WHERE role='sample'")
    }  # fmt: skip
    con.close()
    assert meta["anchor_ms"] == pytest.approx(anchors)

    def search(store):
        args = _args(profiled, fast_profile_file, tiny_space_file, tmp_path / store.stem)
        args[args.index(str(db))] = str(store)
        extra = ["--model", str(pred), "--max-latency-ms", f"{2 * median:.4f}", "--verify", "0"]
        code, out, err = run(capsys, *args, *extra, "--json")
        assert code == 0
        return json.loads(out)["warnings"], err

    same = tmp_path / "same.db"
    same.write_bytes(db.read_bytes())
    warnings, err = search(same)
    assert warnings == [] and "warning" not in err
    slower = tmp_path / "slower.db"
    slower.write_bytes(db.read_bytes())
    con = sqlite3.connect(slower)
    con.execute("UPDATE measurements SET anchor_ms = anchor_ms * 1.25")
    con.commit()
    con.close()
    (warning,), err = search(slower)
    assert "25% faster" in warning and "1.25" in warning and str(slower) in warning
    assert f"warning: {warning}" in err.splitlines()
    # `predictor eval` against that store says the same.
    code, out, err = run(capsys, "predictor", "eval", "--model", str(pred), "--db", str(slower))
    assert code == 0 and err.strip() == f"warning: {warning}"
    code, out, _ = run(
        capsys, "predictor", "eval", "--model", str(pred), "--db", str(same), "--json"
    )
    assert code == 0 and json.loads(out)["warnings"] == []


def test_search_holds_memory_and_size_limits(
    capsys, profiled, fast_profile_file, tiny_space_file, tmp_path
):
    """Memory and size limits beside the budget: predicted from the store's rows (every
    measurement records them), candidates admitted by the band's top, verified as measured."""
    _, db, median = profiled
    con = sqlite3.connect(db)
    extra = [
        json.loads(r[0])
        for r in con.execute("SELECT stats FROM measurements WHERE role = 'sample'")
    ]
    con.close()
    sizes = sorted(e["model_bytes"] / 1e6 for e in extra)
    memory = sorted(e["memory"]["peak_above_baseline_mb"] for e in extra)
    size_limit, memory_limit = sizes[len(sizes) // 3], memory[-1] * 2
    code, out, _ = run(
        capsys,
        *_args(
            profiled,
            fast_profile_file,
            tiny_space_file,
            tmp_path / "r",
            "--max-latency-ms",
            f"{10 * median:.4f}",  # latency is not what binds here
            "--max-size-mb",
            f"{size_limit:.6f}",
            "--max-memory-mb",
            f"{memory_limit:.3f}",
            "--verify",
            "2",
            "--json",
        ),
    )
    assert code == 0
    result = json.loads(out)
    assert result["limits"] == {
        "max_memory_mb": float(f"{memory_limit:.3f}"),
        "max_size_mb": float(f"{size_limit:.6f}"),
    }
    fitted = result["resource_predictors"]
    assert set(fitted) == {"memory", "size"} and fitted["size"]["rows"] >= 20
    verified = result["rounds"][0]["verified"]
    assert verified
    for v in verified:
        assert v["size_mb"] > 0 and v["memory_mb"] > 0
        fits = v["size_mb"] <= size_limit and v["memory_mb"] <= memory_limit
        assert v["within_budget"] == fits  # never hidden either way
    # The biggest subnets are kept out by size: the winner is no larger than the limit lets.
    best = result["best"]
    assert best["size_mb"] is not None
    assert best["within_budget"] is (best["size_mb"] <= size_limit)
