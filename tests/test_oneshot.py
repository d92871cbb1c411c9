"""One-shot quality with the real MiniLM weights on held-out real prose."""

import json

import numpy as np
import pytest
import torch
from conftest import corpus_head

from bfnas.cli import main
from bfnas.errors import InputError
from bfnas.models.nn.checkpoint import minilm_dir
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.oneshot import OneShotScorer, held_out_batch, linear_cka
from bfnas.models.train.pretraining_data import DataSettings, build_data


@pytest.fixture(scope="module")
def data_dir(stdlib_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    small = corpus_head(stdlib_corpus[0], 3000, folder / "small.txt")
    build_data(small, minilm_dir(), folder / "data", DataSettings(seq_len=64, shard_size=200))
    return folder / "data"


@pytest.fixture(scope="module")
def scorer(minilm_supernet, data_dir):
    return OneShotScorer(
        minilm_supernet, load_space("minilm-l6").largest(), held_out_batch(data_dir, 8)
    )


def _uniform(layers, hidden=384, ffn=1536):
    return SubnetConfig(layers, hidden, (12,) * layers, (384,) * layers, (ffn,) * layers)


def test_the_teacher_scores_one_and_smaller_subnets_less(scorer):
    assert scorer(_uniform(6)) == pytest.approx(1.0)
    depth = [scorer(_uniform(n)) for n in (1, 3, 5)]
    width = [scorer(_uniform(6, h)) for h in (128, 256)]
    assert depth == sorted(depth) and depth[-1] < 1.0
    assert width == sorted(width) and width[-1] < 1.0
    assert all(0 < s < 1 for s in depth + width)


def test_scores_are_cached_by_key(scorer, monkeypatch):
    cfg = _uniform(2, ffn=512)
    first = scorer(cfg)
    assert cfg.key() in scorer.cache

    def no_forward(cfg):
        raise AssertionError("computed again")

    monkeypatch.setattr(scorer, "_states", no_forward)
    assert scorer.many([cfg, _uniform(6)]) == [first, 1.0]


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x @ q) == pytest.approx(1.0)  # rotation
    assert linear_cka(x, 3.0 * x + 1.0) == pytest.approx(1.0)  # scale and shift
    assert linear_cka(x, torch.randn(200, 8, generator=g)) < 0.3  # unrelated, other width


def test_held_out_batch_restores_masked_tokens(data_dir):
    batch = held_out_batch(data_dir, 4)
    assert batch["input_ids"].shape == (4, 64) and 103 not in np.unique(
        batch["input_ids"]
    )  # no [MASK]
    with pytest.raises(InputError, match="manifest.json"):
        held_out_batch(data_dir.parent)


def test_search_with_the_oneshot_objective(
    capsys, data_dir, tmp_path, fast_profile_file, tiny_space_file
):
    db = tmp_path / "lat.db"
    assert (
        main(
            [
                "profile",
                "--hw",
                str(fast_profile_file),
                "--space",
                str(tiny_space_file),
                "--samples",
                "35",
                "--db",
                str(db),
                "--artifacts",
                str(tmp_path / "art"),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = main(
        [
            "search",
            "--hw",
            str(fast_profile_file),
            "--space",
            str(tiny_space_file),
            "--db",
            str(db),
            "--max-latency-ms",
            "100",
            "--objective",
            "oneshot",
            "--data",
            str(data_dir),
            "--population",
            "20",
            "--parents",
            "5",
            "--generations",
            "3",
            "--verify",
            "0",
            "--out",
            str(tmp_path / "s"),
            "--json",
        ]
    )
    best = json.loads(capsys.readouterr().out)["best"]
    # With no latency pressure the search climbs towards the teacher (CKA 1).
    assert code == 0 and 0.9 <= best["objective"] <= 1.0 + 1e-9
