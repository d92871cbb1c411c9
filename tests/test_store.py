import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import SEED_FILE

from bfnas.bench.device.contract import MeasurementResult
from bfnas.bench.runners.base import Runner
from bfnas.bench.store.latency_store import LatencyStore
from bfnas.cli import main
from bfnas.models.space.subnet import SubnetConfig

CFG = SubnetConfig(1, 64, (2,), (64,), (128,))


def ok(ms=1.0) -> MeasurementResult:
    return MeasurementResult.from_dict(
        {"status": "ok", "median_ms": ms, "mean_ms": ms, "runs": 10, "samples_ms": [ms] * 10}
    )


def test_one_sample_per_profile_and_subnet(tmp_path):
    with LatencyStore(tmp_path / "s.db") as store:
        store.add_profile("p", {"name": "p"}, "h1")
        assert store.claim("h1", CFG)
        store.add_measurement("h1", CFG, "tiny", ok())
        assert not store.claim("h1", CFG)  # measured: nobody claims it again
        with pytest.raises(sqlite3.IntegrityError):
            store.add_measurement("h1", CFG, "tiny", ok())
        store.add_measurement("h1", CFG, "tiny", ok(2.0), role="reference")  # references repeat
        assert store.measured_keys("h1") == {CFG.key()}
        rows = store.measurements("h1")
        assert len(rows) == 1 and rows[0].samples_ms == [1.0] * 10
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_claims_of_dead_processes_are_taken_over(tmp_path):
    with LatencyStore(tmp_path / "s.db") as store:
        store.add_profile("p", {"name": "p"}, "h1")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        store.db.execute(
            "INSERT INTO claims VALUES ('h1', ?, ?, ?, 'then')", (CFG.key(), store.host, dead.pid)
        )
        assert store.claim("h1", CFG)
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            other = SubnetConfig(1, 96, (2,), (64,), (128,))
            store.db.execute(
                "INSERT INTO claims VALUES ('h1', ?, ?, ?, 'now')",
                (other.key(), store.host, alive.pid),
            )
            assert not store.claim("h1", other)
        finally:
            alive.kill()


def _runs(db):
    con = sqlite3.connect(db)
    rows = {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, status, summary FROM runs")}
    con.close()
    return rows


def test_runs_of_killed_jobs_are_marked_interrupted_by_the_next_writer(tmp_path):
    db = tmp_path / "s.db"
    with LatencyStore(db) as store:
        store.add_profile("p", {"name": "p"}, "h1")
        own = store.start_run("h1", "profile", {})  # this process: alive
        host = store.host
    # A job killed outright: its run says 'running' and nothing of it will say otherwise.
    killed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal\nfrom bfnas.bench.store.latency_store import LatencyStore\n"
            f"s = LatencyStore({str(db)!r})\nprint(s.start_run('h1', 'profile', {{}}), "
            "flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    killed_run = int(killed.communicate()[0])
    assert killed.returncode == -signal.SIGKILL
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        con = sqlite3.connect(db)
        con.execute(
            "INSERT INTO runs(profile_hash, kind, args, host, pid, started) "
            "VALUES ('h1', 'profile', '{}', ?, ?, 'now')",
            (host, alive.pid),
        )
        # Another host's pid says nothing about a process here: left alone.
        con.execute(
            "INSERT INTO runs(profile_hash, kind, args, host, pid, started) "
            "VALUES ('h1', 'profile', '{}', 'elsewhere', ?, 'then')",
            (killed.pid,),
        )
        con.commit()
        con.close()
        before = _runs(db)
        assert {s for s, _ in before.values()} == {"running"}
        with LatencyStore(db, read_only=True):  # a reader changes nothing
            pass
        assert _runs(db) == before
        with LatencyStore(db) as store:
            assert store.mark_interrupted() == 0  # done when it was opened
        after = _runs(db)
    finally:
        alive.kill()
        alive.wait()
    assert after[killed_run][0] == "interrupted"
    assert "process was gone" in json.loads(after[killed_run][1])["interrupted"]
    assert [after[i][0] for i in sorted(after) if i != killed_run] == ["running"] * 3
    assert own in after


def test_a_run_left_by_a_dead_pid_is_finished_as_interrupted(tmp_path):
    db = tmp_path / "s.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with LatencyStore(db) as store:
        store.add_profile("p", {"name": "p"}, "h1")
        store.db.execute(
            "INSERT INTO runs(profile_hash, kind, args, host, pid, started) "
            "VALUES ('h1', 'search', '{}', ?, ?, 'then')",
            (store.host, dead.pid),
        )
        assert store.mark_interrupted() == 1
        assert store.mark_interrupted() == 0  # once
        (row,) = store.db.execute("SELECT status FROM runs").fetchall()
        assert row["status"] == "interrupted"


def test_nested_transactions_are_one(tmp_path):
    with LatencyStore(tmp_path / "s.db") as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.add_profile("p", {"name": "p"}, "h1")
            store.start_run("h1", "import", {})
            raise RuntimeError("halfway")
        assert store.profiles() == [] and store.db.execute("SELECT * FROM runs").fetchall() == []
        assert not store.db.in_transaction


class InterruptedAfterBegin:
    """The store's connection, with a Ctrl-C landing just after BEGIN has run."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args):
        cursor = self.db.execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_ctrl_c_just_after_begin_leaves_no_transaction_open(tmp_path):
    with LatencyStore(tmp_path / "s.db") as store:
        real = store.db
        store.db = InterruptedAfterBegin(real)
        with pytest.raises(KeyboardInterrupt):
            store.add_profile("p", {"name": "p"}, "h1")
        store.db = real
        assert not real.in_transaction  # else every later write would join it, none commit
        store.add_profile("p", {"name": "p"}, "h1")
    with LatencyStore(tmp_path / "s.db") as store:
        assert [p["name"] for p in store.profiles()] == ["p"]


def test_import_the_seed_table(tmp_path, capsys):
    db = tmp_path / "seed.db"
    args = [
        "import",
        "--format",
        "autotinybert",
        str(SEED_FILE),
        "--hw",
        "seed-cpu-fp32",
        "--space",
        "bigger-faster",
        "--db",
        str(db),
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == out["added"] == 14250
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0  # idempotent
    assert main(["db", "summary", "--db", str(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (prof,) = summary["profiles"]
    assert prof["imported"] and prof["by_status"] == {"imported": 14250}
    assert summary["integrity"] == "ok"
    with LatencyStore(db) as store:
        row = store.measurements()[0]
    stats = row.extra
    assert stats["line"] == 1 and stats["sha256"] and row.median_ms == pytest.approx(5.636870861)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{'sample_layer_num': 1}\t2.0", "sample_hidden_size"),
        ("__import__('os').system('echo pwned')\t2.0", "not a Python dict literal"),
        (
            "{'sample_layer_num': 1, 'sample_num_attention_heads': [12], "
            "'sample_hidden_size': 120, "
            "'sample_intermediate_sizes': [128], 'sample_qkv_sizes': [120]}\tfast",
            "latency",
        ),
        (
            "{'sample_layer_num': 1, 'sample_num_attention_heads': [12], "
            "'sample_hidden_size': 576, "
            "'sample_intermediate_sizes': [128], 'sample_qkv_sizes': [576]}\t2.0",
            "hidden",
        ),
        (
            "{'sample_layer_num': 1, 'sample_num_attention_heads': [12], "
            "'sample_hidden_size': 121, "
            "'sample_intermediate_sizes': [128], 'sample_qkv_sizes': [121]}\t2.0",
            "qkv[0]",
        ),
        ("just text", "expected"),
    ],
)
def test_a_bad_line_imports_nothing(tmp_path, capsys, line, needle):
    good = SEED_FILE.read_text().splitlines()[:5]
    src = tmp_path / "lat.tsv"
    src.write_text("\n".join(good[:3] + [line] + good[3:]) + "\n")
    db = tmp_path / "x.db"
    code = main(
        ["import", str(src), "--hw", "elsewhere", "--space", "bigger-faster", "--db", str(db)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "line 4" in err and needle in err and err.count("\n") == 1
    assert not db.exists()


def profile_cmd(space_file, profile_file, db, artifacts, n, seed=0):
    return [
        sys.executable,
        "-c",
        "from bfnas.cli import main; raise SystemExit(main())",
        "profile",
        "--hw",
        str(profile_file),
        "--space",
        str(space_file),
        "--samples",
        str(n),
        "--seed",
        str(seed),
        "--db",
        str(db),
        "--artifacts",
        str(artifacts),
        "--json",
    ]


def _count(db, role="sample"):
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM measurements WHERE role = ?", (role,)).fetchone()[
            0
        ]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_profile_stores_and_resumes(tmp_path, tiny_space_file, fast_profile_file, capsys):
    db, arts = tmp_path / "p.db", tmp_path / "arts"
    argv = [
        "profile",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--samples",
        "4",
        "--db",
        str(db),
        "--artifacts",
        str(arts),
        "--json",
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["ok"] + first["unstable"] == 4 and first["failed"] == 0
    assert len([r for r in first["reference_ms"] if r]) >= 2  # start, every 3, end
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == 4 and again["ok"] == 0
    with LatencyStore(db) as store:
        rows = store.measurements()
    assert len(rows) == 4
    for r in rows:
        art, env = r.artifact, r.environment
        assert art["recipe"]["name"] == "dynamic" and art["sha256"]
        assert env["versions"]["onnxruntime"] and env["threads"] == 1
        assert r.ratio > 0 and r.normalized_ms > 0 and r.reference_ms > 0
    csv_path = tmp_path / "out.csv"
    assert main(["db", "export", "--db", str(db), "--csv", str(csv_path)]) == 0
    with csv_path.open() as fh:
        exported = list(csv.DictReader(fh))
    assert len(exported) == 4 and {"median_ms", "normalized_ms", "arch"} <= set(exported[0])


@pytest.mark.slow
def test_kill_9_mid_run_keeps_every_committed_measurement(
    tmp_path, tiny_space_file, fast_profile_file
):
    db, arts = tmp_path / "k.db", tmp_path / "arts"
    cmd = profile_cmd(tiny_space_file, fast_profile_file, db, arts, 8)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while _count(db) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _count(db)
    assert 2 <= kept < 8
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["skipped"] == kept
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute(
        "SELECT COUNT(*), COUNT(DISTINCT subnet_key) FROM measurements WHERE role = 'sample'"
    ).fetchone() == (8, 8)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


@pytest.mark.slow
def test_two_processes_share_one_store(tmp_path, tiny_space_file, fast_profile_file):
    db, arts = tmp_path / "two.db", tmp_path / "arts"
    cmd = profile_cmd(tiny_space_file, fast_profile_file, db, arts, 6)
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    measured = sum(o["ok"] + o["unstable"] + o["failed"] for o in outs)
    assert measured == 6  # neither duplicated nor lost
    con = sqlite3.connect(db)
    assert con.execute(
        "SELECT COUNT(*), COUNT(DISTINCT subnet_key) FROM measurements WHERE role = 'sample'"
    ).fetchone() == (6, 6)


def test_normalized_latency_uses_the_baseline_of_its_own_anchor(tmp_path):
    def paired(ratio, anchor_ms, key):
        return replace(
            ok(ratio * anchor_ms), ratio=ratio, anchor={"median_ms": anchor_ms}, anchor_key=key
        )

    cfgs = [SubnetConfig(1, 64, (2,), (64,), (f,)) for f in (64, 128, 192, 256)]
    with LatencyStore(tmp_path / "s.db") as store:
        store.add_profile("p", {"name": "p"}, "h1")
        # Small anchor typically 1 ms, large 10 ms; one of each ran on a slow moment.
        for cfg, res in zip(
            cfgs,
            [
                paired(0.5, 1.0, "small"),
                paired(0.5, 1.2, "small"),
                paired(0.5, 1.0, "small"),
                paired(2.0, 10.0, "large"),
            ],
            strict=True,
        ):
            store.add_measurement("h1", cfg, "tiny", res)
        rows = {r.subnet_key: r for r in store.measurements("h1")}
        assert store.anchor_baselines() == {("h1", "small"): 1.0, ("h1", "large"): 10.0}
    # The run during the slow moment is put back at the device's typical speed.
    assert rows[cfgs[1].key()].median_ms == pytest.approx(0.6)
    assert rows[cfgs[1].key()].normalized_ms == pytest.approx(0.5)
    assert rows[cfgs[3].key()].normalized_ms == pytest.approx(20.0)


def test_a_store_of_another_schema_is_refused(tmp_path, capsys):
    db = tmp_path / "old.db"
    LatencyStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    assert main(["db", "summary", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "old.db" in err and "schema_version" in err and err.count("\n") == 1


def test_retrying_an_unstable_measurement_keeps_the_old_one_as_superseded(tmp_path):
    with LatencyStore(tmp_path / "s.db") as store:
        store.add_profile("p", {"name": "p"}, "h1")
        store.add_measurement(
            "h1", CFG, "tiny", replace(ok(3.0), status="unstable", reason="noisy")
        )
        assert not store.claim("h1", CFG)  # a plain rerun leaves it alone
        assert store.measured_keys("h1", exclude=("unstable",)) == set()
        assert store.claim("h1", CFG, retry=("unstable",))
        store.add_measurement("h1", CFG, "tiny", ok(2.0), supersede=True)
        rows = store.measurements("h1", statuses=("ok", "unstable"))
        assert [(r.status, r.median_ms) for r in rows] == [("ok", 2.0)]
        old = store.measurements("h1", role="superseded", statuses=("unstable",))
        assert [(r.status, r.reason) for r in old] == [("unstable", "noisy")]
        assert not store.claim("h1", CFG, retry=("unstable",))  # now ok: nothing to retry


def test_profile_can_discard_measured_artifacts(
    tmp_path, tiny_space_file, fast_profile_file, capsys
):
    db, arts = tmp_path / "p.db", tmp_path / "arts"
    argv = [
        "profile",
        "--hw",
        str(fast_profile_file),
        "--space",
        str(tiny_space_file),
        "--samples",
        "4",
        "--db",
        str(db),
        "--artifacts",
        str(arts),
        "--discard-artifacts",
        "--json",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    with LatencyStore(db) as store:
        rows = store.measurements()
    assert len(rows) == 4
    kept = {p.name for p in arts.iterdir() if p.is_dir()}
    for r in rows:  # the record stays, the file is gone
        art = r.artifact
        assert art["sha256"] and art["key"] not in kept
    # What is measured again and again stays: the anchors and the drift reference.
    assert kept and all((arts / k / "model.onnx").is_file() for k in kept)


class ShiftingRunner(Runner):
    """A device whose paired ratio jumps by 10 % after `shift_after` runs: what a drift looks
    like in the numbers (the judgement of the job is what is tested, not the timing)."""

    lanes = 1

    def __init__(self, shift_after: int) -> None:
        self.shift_after, self.calls = shift_after, 0

    def run(self, model, sha256, profile, anchor=None) -> MeasurementResult:
        self.calls += 1
        ratio = 1.0 if self.calls <= self.shift_after else 1.1
        return MeasurementResult.from_dict(
            {
                "status": "ok",
                "median_ms": 2.0 * ratio,
                "median_rel_ci": 0.001,
                "ratio": ratio,
                "ratio_rel_ci": 0.001,
                "anchor": {"median_ms": 2.0, "median_rel_ci": 0.001},
                "threads": 1,
                "provider": "CPUExecutionProvider",
                "cpu": {"own_cores": 1.0},
            }
        )


def test_a_drift_of_the_normalized_reference_marks_what_it_doubts(
    tmp_path, tiny_space, tiny_supernet
):
    from bfnas.bench.device.contract import Distrust
    from bfnas.bench.hardware_profile import parse_profile
    from bfnas.bench.jobs.context import MeasurementSetup
    from bfnas.bench.jobs.measurement import distrust_codes
    from bfnas.bench.jobs.profiling import ProfileJob
    from bfnas.models.deploy.artifacts import ArtifactCache, FidelitySettings

    profile = parse_profile(
        {"name": "drifty", "measure": {"drift_every": 3, "drift_threshold": 0.05}}, "<t>"
    )
    cache = ArtifactCache(tmp_path / "arts", fidelity=FidelitySettings(seq_len=32))
    # Runs: reference, 3 samples, reference, 3 samples (the device drifts after run 5),
    # reference, ... The second batch is in doubt.
    events = []
    with LatencyStore(tmp_path / "d.db") as store:
        job = ProfileJob(
            setup=MeasurementSetup(profile, tiny_space, tiny_supernet, cache, ShiftingRunner(5)),
            store=store,
            samples=6,
            on_event=events.append,
        )
        out = job.run()
        rows = store.measurements(statuses=("ok", "unstable"))
    assert out["ok"] == 3 and out["unstable"] == 3
    assert out["drift"] and out["drift"][0]["unit"] == "paired ratio"
    assert abs(out["drift"][0]["change"] - 0.1) < 1e-9
    doubted = [r for r in rows if r.status == "unstable"]
    assert len(doubted) == 3 and all(Distrust.DRIFTED.label in r.reason for r in doubted)
    assert all(distrust_codes(r) == [Distrust.DRIFTED] for r in doubted)  # stored as its code
    assert any(e.kind == "drift" and "marked unstable" in e.message for e in events)


def _open_store(path, results):
    try:
        LatencyStore(path).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows what went wrong
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_creating_one_store_at_once_all_open_it(tmp_path):
    """A writer opening a store another is creating sees neither a half-made file nor a
    locked journal-mode switch (before the folder lock, about 1 open in 40 failed: 160 opens
    would have met it 98 times in 100)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    outcomes = []
    for i in range(40):
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_open_store, args=(tmp_path / f"s{i}.db", results)) for _ in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes += [results.get(timeout=5) for _ in procs]
    assert outcomes == ["ok"] * 160, [o for o in outcomes if o != "ok"]
