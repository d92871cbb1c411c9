"""Issue 15, causes 6 and 12: output paths checked before any work, outputs that appear whole,
and a corpus that would make no data (or data of noise) refused.

Output rows: a file where a folder is meant and the other way round, a folder that does not
exist, a read-only filesystem (a tmpfs this test mounts), for every command that writes; each
is one line naming the flag and the path, exit 2, and nothing created. The work itself (the
search, the export, the fit, the build) is replaced by a tripwire: a row passes only when it
is refused before the work starts. A full disk (a tiny tmpfs) is one line saying so, exit 1,
and no half-written file left."""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
import subprocess
import tempfile
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import pytest
from conftest import FAST_PROFILE, SEED_FILE, TINY_SPACE
from refusals import Refusal, as_root, check_refusal

from bfnas.cli import main

ARCH = '{"layers": 2, "hidden": 128, "heads": [4, 4], "qkv": [128, 128], "ffn": [256, 256]}'


@functools.cache
def _seed_store_bytes() -> bytes:
    """A real store a search or a fit runs on: the first 200 seed latencies imported as the
    measurements of the test profile (made once, copied per row)."""
    with tempfile.TemporaryDirectory() as folder:
        src, db, hw = Path(folder) / "seed.tsv", Path(folder) / "lat.db", Path(folder) / "hw.toml"
        src.write_text("\n".join(SEED_FILE.read_text().splitlines()[:200]) + "\n")
        hw.write_text(FAST_PROFILE)
        with redirect_stdout(io.StringIO()):
            assert (
                main(
                    [
                        "import",
                        str(src),
                        "--hw",
                        str(hw),
                        "--space",
                        "bigger-faster",
                        "--db",
                        str(db),
                    ]
                )
                == 0
            )
        return db.read_bytes()


def store(path: Path) -> None:
    path.write_bytes(_seed_store_bytes())


SPACE = {"tiny.toml": TINY_SPACE}
A_FILE = {"afile": "not a folder\n"}
A_FOLDER = {"adir/keep.txt": "a folder\n"}
DB = {"lat.db": store, "hw.toml": FAST_PROFILE}
SEARCH = [
    "search",
    "--hw",
    "{tmp}/hw.toml",
    "--space",
    "bigger-faster",
    "--db",
    "{tmp}/lat.db",
    "--max-latency-ms",
    "50",
    "--verify",
    "0",
    "--generations",
    "2",
]
FIT = ["predictor", "fit", "--hw", "test-cpu-int8", "--db", "{tmp}/lat.db", "--folds", "2"]
EXPORT = ["export", "--space", "{tmp}/tiny.toml", "--arch", ARCH]
BUILD = ["data", "build", "--corpus", "{tmp}/corpus.txt", "--tokenizer", "minilm"]
CORPUS = {"corpus.txt": "A corpus of plain English text.\n\nIt has two documents.\n"}

OUTPUT_ROWS = [
    # db export --csv: a file
    Refusal(
        "csv-in-a-folder-under-a-file",
        ["db", "export", "--db", "{tmp}/lat.db", "--csv", "{tmp}/afile/no/lat.csv"],
        "--csv: {tmp}/afile/no/lat.csv",
        {**DB, **A_FILE},
    ),
    Refusal(
        "csv-onto-a-folder",
        ["db", "export", "--db", "{tmp}/lat.db", "--csv", "{tmp}/adir"],
        "--csv: {tmp}/adir: is a folder",
        {**DB, **A_FOLDER},
    ),
    Refusal(
        "csv-under-a-file",
        ["db", "export", "--db", "{tmp}/lat.db", "--csv", "{tmp}/afile/x.csv"],
        "--csv: {tmp}/afile/x.csv",
        {**DB, **A_FILE},
    ),
    # export --out: the artifact cache folder
    Refusal(
        "export-out-is-a-file",
        [*EXPORT, "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        {**SPACE, **A_FILE},
    ),
    Refusal(
        "export-out-under-a-file",
        [*EXPORT, "--out", "{tmp}/afile/cache"],
        "--out: {tmp}/afile/cache",
        {**SPACE, **A_FILE},
    ),
    Refusal(
        "bench-artifacts-is-a-file",
        ["bench", "--space", "{tmp}/tiny.toml", "--arch", ARCH, "--artifacts", "{tmp}/afile"],
        "--artifacts: {tmp}/afile: is a file",
        {**SPACE, **A_FILE},
    ),
    Refusal(
        "profile-artifacts-under-a-file",
        [
            "profile",
            "--space",
            "{tmp}/tiny.toml",
            "--samples",
            "1",
            "--db",
            "{tmp}/lat.db",
            "--artifacts",
            "{tmp}/afile/a",
        ],
        "--artifacts: {tmp}/afile/a",
        {**SPACE, **A_FILE, **DB},
    ),
    # predictor fit --out: a folder; predictor plot --out: a file
    Refusal(
        "fit-out-is-a-file",
        [*FIT, "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        {**DB, **A_FILE},
    ),
    Refusal(
        "fit-out-holds-a-folder-named-as-its-file",
        [*FIT, "--out", "{tmp}/m"],
        "--out: {tmp}/m: {tmp}/m/predictor.json is a folder",
        {**DB, "m/predictor.json/x": "x"},
    ),
    # (checked before the model is read: no model is needed to see the refusal)
    Refusal(
        "plot-out-is-a-folder",
        ["predictor", "plot", "--model", "{tmp}/m", "--db", "{tmp}/lat.db", "--out", "{tmp}/p.png"],
        "--out: {tmp}/p.png: is a folder",
        {**DB, "p.png/keep": "x"},
    ),
    Refusal(
        "plot-under-a-file",
        [
            "predictor",
            "plot",
            "--model",
            "{tmp}/m",
            "--db",
            "{tmp}/lat.db",
            "--out",
            "{tmp}/afile/p.png",
        ],
        "--out: {tmp}/afile/p.png: {tmp}/afile is a file",
        {**DB, **A_FILE},
    ),
    # report --out: a folder
    Refusal(
        "report-out-is-a-file",
        ["report", "--db", "{tmp}/lat.db", "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        {**DB, **A_FILE},
    ),
    Refusal(
        "report-page-is-a-folder",
        ["report", "--db", "{tmp}/lat.db", "--out", "{tmp}/r"],
        "--out: {tmp}/r: {tmp}/r/report.html is a folder",
        {**DB, "r/report.html/x": "x"},
    ),
    # data build --out: a folder; data corpus --out: a file
    Refusal(
        "data-build-out-is-a-file",
        [*BUILD, "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        {**CORPUS, **A_FILE},
    ),
    Refusal(
        "data-build-out-under-a-file",
        [*BUILD, "--out", "{tmp}/afile/d"],
        "--out: {tmp}/afile/d",
        {**CORPUS, **A_FILE},
    ),
    Refusal(
        "data-corpus-onto-a-folder",
        ["data", "corpus", "--stdlib", "--out", "{tmp}/adir"],
        "--out: {tmp}/adir: is a folder",
        A_FOLDER,
    ),
    Refusal(
        "data-corpus-in-a-folder-under-a-file",
        ["data", "corpus", "--stdlib", "--out", "{tmp}/afile/no/c.txt"],
        "--out: {tmp}/afile/no/c.txt",
        A_FILE,
    ),
    # search --out: a folder, refused before the search runs (the tripwire)
    Refusal(
        "search-out-is-a-file",
        [*SEARCH, "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        {**DB, **A_FILE},
    ),
    Refusal(
        "search-result-is-a-folder",
        [*SEARCH, "--out", "{tmp}/s"],
        "--out: {tmp}/s: {tmp}/s/best.json is a folder",
        {**DB, "s/best.json/x": "x"},
    ),
    Refusal(
        "search-artifacts-is-a-file",
        [*SEARCH, "--verify", "1", "--out", "{tmp}/s", "--artifacts", "{tmp}/afile"],
        "--artifacts: {tmp}/afile: is a file",
        {**DB, **A_FILE},
    ),
    # supernet train --out, demo --out: folders
    Refusal(
        "train-out-is-a-file",
        ["supernet", "train", "--data", "{tmp}/d", "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        A_FILE,
    ),
    Refusal(
        "train-checkpoint-file-is-a-folder",
        ["supernet", "train", "--data", "{tmp}/d", "--out", "{tmp}/sn"],
        "--out: {tmp}/sn: {tmp}/sn/trainer.json is a folder",
        {"sn/trainer.json/x": "x"},
    ),
    Refusal(
        "demo-out-is-a-file",
        ["demo", "--out", "{tmp}/afile"],
        "--out: {tmp}/afile: is a file",
        A_FILE,
    ),
    Refusal(
        "demo-artifacts-under-a-file",
        ["demo", "--out", "{tmp}/demo", "--artifacts", "{tmp}/afile/a"],
        "--artifacts: {tmp}/afile/a",
        A_FILE,
    ),
]

# The same commands onto a read-only filesystem mounted at {tmp}/mnt.
READ_ONLY_ROWS = [
    Refusal(
        "csv-on-a-read-only-fs",
        ["db", "export", "--db", "{tmp}/lat.db", "--csv", "{tmp}/mnt/lat.csv"],
        "--csv: {tmp}/mnt/lat.csv",
        DB,
        needs=as_root,
    ),
    Refusal(
        "export-on-a-read-only-fs",
        [*EXPORT, "--out", "{tmp}/mnt/cache"],
        "--out: {tmp}/mnt/cache",
        SPACE,
        needs=as_root,
    ),
    Refusal(
        "fit-on-a-read-only-fs", [*FIT, "--out", "{tmp}/mnt"], "--out: {tmp}/mnt", DB, needs=as_root
    ),
    Refusal(
        "report-on-a-read-only-fs",
        ["report", "--db", "{tmp}/lat.db", "--out", "{tmp}/mnt/r"],
        "--out: {tmp}/mnt/r",
        DB,
        needs=as_root,
    ),
    Refusal(
        "data-build-on-a-read-only-fs",
        [*BUILD, "--out", "{tmp}/mnt/d"],
        "--out: {tmp}/mnt/d",
        CORPUS,
        needs=as_root,
    ),
    Refusal(
        "search-on-a-read-only-fs",
        [*SEARCH, "--out", "{tmp}/mnt/s"],
        "--out: {tmp}/mnt/s",
        DB,
        needs=as_root,
    ),
]

CORPUS_ROWS = [
    Refusal(
        "empty-corpus",
        BUILD + ["--out", "{tmp}/d"],
        "{tmp}/corpus.txt: no text",
        {"corpus.txt": ""},
    ),
    Refusal(
        "whitespace-corpus",
        BUILD + ["--out", "{tmp}/d"],
        "{tmp}/corpus.txt: no text",
        {"corpus.txt": "  \n\n\t\n   \r\n\n"},
    ),
    Refusal(
        "folder-of-blank-files",
        ["data", "build", "--corpus", "{tmp}/texts", "--tokenizer", "minilm", "--out", "{tmp}/d"],
        "{tmp}/texts: no text",
        {"texts/a.txt": "", "texts/b.txt": "\n \n"},
    ),
    Refusal(
        "random-bytes-corpus",
        BUILD + ["--out", "{tmp}/d"],
        "{tmp}/corpus.txt: ",
        {"corpus.txt": random.Random(0).randbytes(100_000)},
    ),
    Refusal(
        "binary-corpus-gzip",
        BUILD + ["--out", "{tmp}/d"],
        "{tmp}/corpus.txt: ",
        {"corpus.txt": gzip.compress(SEED_FILE.read_bytes()[:300_000], mtime=0)},
    ),
    Refusal(
        "nul-bytes-corpus",
        BUILD + ["--out", "{tmp}/d"],
        "{tmp}/corpus.txt: ",
        {"corpus.txt": b"\0" * 5000},
    ),
    Refusal(
        "one-noise-file-in-a-folder",
        ["data", "build", "--corpus", "{tmp}/texts", "--tokenizer", "minilm", "--out", "{tmp}/d"],
        "{tmp}/texts/b.txt: ",
        {"texts/a.txt": CORPUS["corpus.txt"], "texts/b.txt": random.Random(1).randbytes(20_000)},
    ),
]


@pytest.fixture
def tripwire(monkeypatch):
    """The work each command does: reaching it means a refusal came too late."""

    def ran(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    for target in (
        "bfnas.search.loop.SearchJob.run",
        "bfnas.models.deploy.artifacts.ArtifactCache.build",
        "bfnas.models.train.pretraining_data.build_data",
        "bfnas.search.latency_predictor.LatencyPredictor.fit",
        "bfnas.search.report.build_report",
        "bfnas.pipeline.run_demo",
        "bfnas.models.train.pretraining_data.stdlib_docstrings",
        "bfnas.models.train.distill.SupernetTrainer",
        "bfnas.search.plots.plot_predictor",
        "bfnas.bench.jobs.profiling.ProfileJob",
    ):
        monkeypatch.setattr(target, ran)


@contextmanager
def tmpfs(where: Path, size: str = "4m", read_only: bool = False, fill: bool = False):
    """A tmpfs of `size` at `where` (read-only, or filled to the last byte), always unmounted."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        if fill:
            with (where / "filler").open("wb", buffering=0) as fh, pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 65536)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("case", OUTPUT_ROWS, ids=lambda c: c.id)
def test_an_output_path_is_refused_before_the_work(case, tmp_path, capsys, monkeypatch, tripwire):
    check_refusal(case, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", READ_ONLY_ROWS, ids=lambda c: c.id)
def test_a_read_only_filesystem_is_refused_before_the_work(
    case, tmp_path, capsys, monkeypatch, tripwire
):
    if why := as_root():
        pytest.skip(why)
    with tmpfs(tmp_path / "mnt", read_only=True):
        line = check_refusal(case, tmp_path, capsys, monkeypatch)
    assert "Read-only file system" in line


@pytest.mark.parametrize("case", CORPUS_ROWS, ids=lambda c: c.id)
def test_a_corpus_of_nothing_or_noise_is_refused(case, tmp_path, capsys, monkeypatch, tripwire):
    line = check_refusal(case, tmp_path, capsys, monkeypatch)
    assert "no text" in line or "unknown to the tokenizer" in line


FULL_DISK_ROWS = [
    # An FP32 subnet of the tiny space is over 7 MB (its embedding alone): it cannot fit.
    (
        Refusal(
            "export-onto-a-full-disk",
            [*EXPORT, "--out", "{tmp}/mnt"],
            "disk is full writing {tmp}/mnt",
            SPACE,
            code=1,
            needs=as_root,
        ),
        False,
    ),
    (
        Refusal(
            "csv-onto-a-full-disk",
            ["db", "export", "--db", "{tmp}/lat.db", "--csv", "{tmp}/mnt/lat.csv"],
            "disk is full writing {tmp}/mnt/lat.csv",
            DB,
            code=1,
            needs=as_root,
        ),
        True,
    ),
]


@pytest.mark.parametrize("case,fill", FULL_DISK_ROWS, ids=[c.id for c, _ in FULL_DISK_ROWS])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    case, fill, tmp_path, capsys, monkeypatch
):
    if why := as_root():
        pytest.skip(why)
    with tmpfs(tmp_path / "mnt", size="2m", fill=fill) as mnt:
        before = sorted(p.name for p in mnt.iterdir())
        check_refusal(case, tmp_path, capsys, monkeypatch)  # the folder as it was: exit 1
        assert sorted(p.name for p in mnt.iterdir()) == before


def test_a_missing_output_folder_is_made(tmp_path, capsys):
    """A folder that does not exist but can be made is no refusal: bfnas makes output folders
    (as it does for --out folders and stores), and the file in it is whole."""
    store(tmp_path / "lat.db")
    csv = tmp_path / "no" / "such" / "lat.csv"
    assert main(["db", "export", "--db", str(tmp_path / "lat.db"), "--csv", str(csv)]) == 0
    rows = int(capsys.readouterr().out.split()[1])  # "wrote N rows to ..."
    assert rows > 0 and len(csv.read_text().splitlines()) == rows + 1  # the header, every row
    assert [p.name for p in csv.parent.iterdir()] == ["lat.csv"]


def test_a_device_or_a_pipe_is_never_replaced(tmp_path):
    """Not through the table: reading a pipe to compare the folder would block. (And no real
    device: a bug here must not cost the machine its /dev/null.)"""
    import os

    from bfnas.errors import InputError
    from bfnas.models.outputs import atomic_path, check_output_file

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(fifo)
    for path in (fifo, tmp_path / "link"):
        with pytest.raises(InputError, match="not a regular file"):
            check_output_file(path, "--csv")
        with pytest.raises(InputError, match="not a regular file"), atomic_path(path):
            pass
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["link", "pipe"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    from bfnas.models.outputs import atomic_path, write_atomic

    target = write_atomic(tmp_path / "out.json", '{"old": true}\n')
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"new": ')
        raise RuntimeError("the writer failed half-way")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    write_atomic(target, '{"new": true}\n')
    assert json.loads(target.read_text()) == {"new": True}


def test_an_incomplete_cache_entry_is_built_again(tmp_path, tiny_supernet):
    from bfnas.models.deploy.artifacts import META_FILE, ArtifactCache, FidelitySettings
    from bfnas.models.space.subnet import SubnetConfig

    cache = ArtifactCache(tmp_path, fidelity=FidelitySettings(seq_len=32))
    cfg = SubnetConfig(1, 64, (1,), (32,), (64,))
    first = cache.build(tiny_supernet, cfg, "fp32")
    whole = first.path.read_bytes()
    first.path.write_bytes(whole[: len(whole) // 2])  # as a copy cut short would leave it
    again = cache.build(tiny_supernet, cfg, "fp32")
    assert not again.cached and again.path.read_bytes() == whole
    first.path.unlink()  # a folder holding the record but no model
    assert not cache.build(tiny_supernet, cfg, "fp32").cached
    (first.path.parent / META_FILE).write_text("{not json")
    rebuilt = cache.build(tiny_supernet, cfg, "fp32")
    assert not rebuilt.cached and rebuilt.sha256 == first.sha256
    assert cache.build(tiny_supernet, cfg, "fp32").cached  # whole again: from the cache
    assert not list(tmp_path.glob(".build-*"))


def test_real_text_with_some_unknown_characters_is_a_corpus(tmp_path):
    from bfnas.models.nn.checkpoint import minilm_dir
    from bfnas.models.train.pretraining_data import check_corpus, load_tokenizer

    tok, _, _ = load_tokenizer(minilm_dir())
    text = Path(__file__).with_name("refusals.py").read_text()
    emoji = "Had a great time at the beach 🌊☀️ with friends 🎉, back next weekend!\n"
    corpus = tmp_path / "mixed.txt"
    corpus.write_text(text + emoji * 50 + "Ça coûte très cher à Zürich.\n" * 20, encoding="utf-8")
    check_corpus(corpus, [corpus], tok)  # accepted: no error
