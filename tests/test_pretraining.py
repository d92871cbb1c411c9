"""Stage-1 data on real prose (the standard library's docstrings) with MiniLM's tokenizer."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import corpus_head

from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.nn.checkpoint import minilm_dir
from bfnas.models.train.pretraining_data import (
    DataSettings,
    build_data,
    load_shard,
    load_tokenizer,
)

SETTINGS = DataSettings(seq_len=64, shard_size=300, seed=7)


@pytest.fixture(scope="module")
def corpus(stdlib_corpus, tmp_path_factory):
    path, counts = stdlib_corpus
    assert counts["documents"] > 1000 and counts["words"] > 100_000
    return corpus_head(path, 6000, tmp_path_factory.mktemp("corpus") / "small.txt")


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return build_data(corpus, minilm_dir(), out, SETTINGS), out


def test_rows_are_packed_bert_sequences(built):
    result, out = built
    assert result["complete"] and result["sequences"] == sum(
        s["sequences"] for s in result["shards"]
    )
    tok, sp, _ = load_tokenizer(minilm_dir())
    shard = load_shard(out / result["shards"][0]["file"])
    ids, mask, labels = shard["input_ids"], shard["attention_mask"], shard["labels"]
    assert ids.shape == (300, 64) and ids.dtype == np.int32
    assert np.all(ids[:, 0] == sp.cls)
    lengths = mask.sum(axis=1)
    assert np.all(ids[np.arange(len(ids)), lengths - 1] == sp.sep)
    assert np.all((ids == sp.pad) == (mask == 0))
    assert lengths.mean() > 50  # packed, not one short sentence per row
    original = np.where(labels != -100, labels, ids)
    text = tok.decode(original[5].tolist())
    assert len(text.split()) > 20 and text.isascii()


def test_whole_word_masking_statistics(built):
    result, out = built
    tok, sp, _ = load_tokenizer(minilm_dir())
    vocab = {v: k for k, v in tok.get_vocab().items()}
    shard = load_shard(out / result["shards"][1]["file"])
    ids, mask, labels = shard["input_ids"], shard["attention_mask"], shard["labels"]
    predicted = labels != -100
    share = predicted.sum() / (mask.sum() - 2 * len(mask))
    assert 0.13 < share < 0.17
    assert 0.75 < (ids[predicted] == sp.mask).mean() < 0.85
    assert not predicted[:, 0].any()  # [CLS] is never predicted
    original = np.where(predicted, labels, ids)
    for row in range(len(ids)):  # a word's pieces are predicted together or not at all
        for j in range(1, ids.shape[1]):
            if vocab[int(original[row, j])].startswith("##"):
                assert predicted[row, j] == predicted[row, j - 1]


def test_deterministic_and_an_interrupted_build_resumes_to_the_same_bytes(corpus, built, tmp_path):
    result, out = built
    first = build_data(corpus, minilm_dir(), tmp_path, SETTINGS, max_shards=2)
    assert not first["complete"] and first["new_shards"] == 2
    again = build_data(corpus, minilm_dir(), tmp_path, SETTINGS)
    assert (
        again["complete"] and again["resumed"] and again["new_shards"] == len(result["shards"]) - 2
    )
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in result["shards"]]
    assert all(
        filecmp.cmp(out / s["file"], tmp_path / s["file"], shallow=False) for s in result["shards"]
    )
    done = build_data(corpus, minilm_dir(), tmp_path, SETTINGS)
    assert done["new_shards"] == 0


def test_vocab_txt_gives_the_same_data_as_tokenizer_json(corpus, built, tmp_path):
    result, out = built
    other = build_data(corpus, minilm_dir() / "vocab.txt", tmp_path, SETTINGS, max_shards=1)
    assert filecmp.cmp(out / "shard-00000.npz", tmp_path / "shard-00000.npz", shallow=False)
    assert other["tokenizer"]["path"].endswith("vocab.txt")


def test_a_folder_with_other_settings_is_refused(capsys, corpus, built):
    _, out = built
    refusal = (
        f"{out / 'manifest.json'}: made from another corpus, tokenizer or settings: "
        "give a new folder"
    )
    with pytest.raises(InputError) as err:
        build_data(corpus, minilm_dir(), out, DataSettings(seq_len=128, shard_size=300, seed=7))
    assert str(err.value) == f"out: {refusal}"  # the library names its setting
    argv = ["data", "build", "--corpus", str(corpus), "--tokenizer", "minilm", "--out", str(out)]
    code = main([*argv, "--shard-size", "300", "--seed", "7"])  # --seq-len 128: another build
    assert (code, capsys.readouterr().err) == (2, f"bfnas: error: --out: {refusal}\n")


def test_cli_build_json(capsys, corpus, tmp_path):
    code = main(
        [
            "data",
            "build",
            "--corpus",
            str(corpus),
            "--tokenizer",
            "minilm",
            "--out",
            str(tmp_path / "d"),
            "--seq-len",
            "32",
            "--shard-size",
            "2000",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["complete"] and out["shards"] >= 2 and out["seq_len"] == 32
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["settings"]["seq_len"] == 32 and manifest["tokenizer"]["sha256"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "/no/such/corpus.txt", "--tokenizer", "minilm"], "no such file or folder"),
        (["--tokenizer", "/no/such/tokenizer.json"], "no tokenizer.json or vocab.txt"),
        (["--tokenizer", "minilm", "--seq-len", "4"], "--seq-len"),
        (["--tokenizer", "minilm", "--mask-prob", "1.5"], "--mask-prob"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, corpus, tmp_path, args, message):
    argv = ["data", "build", "--out", str(tmp_path / "o")]
    if "--corpus" not in args:
        argv += ["--corpus", str(corpus)]
    code = main(argv + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_no_tokenizer(tmp_path, corpus):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a tokenizer"):
        build_data(corpus, bad, tmp_path / "o", SETTINGS)
    assert not (tmp_path / "o").exists()
    assert Path(corpus).is_file()


def test_memory_stays_flat_as_the_corpus_grows(corpus, tmp_path):
    import tracemalloc

    lines = Path(corpus).read_text().splitlines()[:1500]
    peaks = []
    for copies in (1, 4):
        text = tmp_path / f"x{copies}.txt"
        text.write_text("\n".join(lines * copies) + "\n")
        tracemalloc.start()
        build_data(
            text, minilm_dir(), tmp_path / f"d{copies}", DataSettings(seq_len=64, shard_size=100)
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0]  # four times the text, not four times the memory
