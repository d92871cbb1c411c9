"""The encoder's generated token batches: one generator for the fidelity check, calibration
and the timing feed."""

import numpy as np
import pytest

from bfnas.bench.device.backends.ort import ORDINARY_IDS_BELOW, token_feed
from bfnas.models.deploy.encoder_io import INPUT_NAMES, token_batches


@pytest.mark.parametrize(("batch", "seq_len"), [(1, 16), (3, 40), (4, 7)])
def test_padded_batches_pad_only_their_last_row(batch, seq_len):
    for feed in token_batches(5, batch, seq_len, 30522, seed=2):
        assert tuple(feed) == INPUT_NAMES
        ids, mask = feed["input_ids"], feed["attention_mask"]
        assert ids.shape == mask.shape == (batch, seq_len) and ids.dtype == np.int64
        assert not feed["token_type_ids"].any()
        assert (ids[:, 0] == 101).all()
        assert mask[:-1].all()  # every row but the last is full length
        last = mask[-1]
        keep = int(last.sum())
        # 1s then 0s, at least half the row kept; padded positions carry id 0.
        assert (last[:keep] == 1).all() and not last[keep:].any()
        assert keep >= seq_len // 2 and (batch > 1 or keep == seq_len)
        assert not ids[-1, keep:].any()
        real = ids[:, 1:][mask[:, 1:] == 1]
        assert real.min() >= 1000 and real.max() < 30522


def test_small_vocabularies_draw_from_all_but_padding():
    ids = np.concatenate([f["input_ids"].ravel() for f in token_batches(20, 1, 64, 50, seed=0)])
    assert ids.min() >= 1 and ids.max() <= 49
    assert (ids.reshape(20, 64)[:, 0] == 49).all()  # [CLS] clipped into the vocabulary


def test_same_seed_same_batches_other_seed_other_ones():
    a, b, c = (token_batches(2, 2, 32, 30522, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in INPUT_NAMES)
    assert not np.array_equal(a[0]["input_ids"], c[0]["input_ids"])


def test_timing_feed_is_full_length_ordinary_ids():
    feed = token_feed(4, 48, seed=3)
    ids = feed["input_ids"]
    assert tuple(feed) == INPUT_NAMES and ids.shape == (4, 48)
    assert feed["attention_mask"].all() and not feed["token_type_ids"].any()
    assert (ids[:, 0] == 101).all()
    assert ids[:, 1:].min() >= 1000 and ids.max() < ORDINARY_IDS_BELOW
    assert np.array_equal(token_feed(4, 48, seed=3)["input_ids"], ids)
