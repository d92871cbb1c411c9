"""The token batches a device feeds the model it times (and TensorRT's calibrator reads).

These are `bfnas.models.deploy.encoder_io.token_batches`'s draws, written again here because
the device package is shipped to devices without bfnas; a test holds the two equal draw for
draw, since stored latencies and calibrated engines were made from them.
"""

from __future__ import annotations

import numpy as np

# The encoder's inputs in positional order (ids, mask, token types).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# BERT's [CLS] id, the first token of every generated row.
CLS_ID = 101
# Word-piece ids below this are BERT's reserved ones ([PAD], [unusedN], [CLS], ...).
FIRST_WORD_PIECE = 1000


def token_batches(
    n: int, batch: int, seq_len: int, vocab_size: int, seed: int = 0, padded: bool = True
) -> list[dict[str, np.ndarray]]:
    """`n` int64 token batches of [batch, seq_len]: random ids after a [CLS]-like token; with
    `padded`, a batch of two or more has its last row padded from a random point on. The
    order of the draws (ids, then the padding point) is part of stored results."""
    rng = np.random.default_rng(seed)
    low = FIRST_WORD_PIECE if vocab_size > 2 * FIRST_WORD_PIECE else 1
    out = []
    for _ in range(n):
        ids = rng.integers(low, vocab_size, size=(batch, seq_len), dtype=np.int64)
        ids[:, 0] = min(CLS_ID, vocab_size - 1)
        mask = np.ones((batch, seq_len), dtype=np.int64)
        if padded and batch > 1:
            keep = int(rng.integers(seq_len // 2, seq_len))
            mask[-1, keep:] = 0
            ids[-1, keep:] = 0
        out.append(dict(zip(INPUT_NAMES, (ids, mask, np.zeros_like(ids)))))
    return out
