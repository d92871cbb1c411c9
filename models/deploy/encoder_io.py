"""What an exported encoder (or classifier) reads and writes: its input and output names,
and the generated token batches fed to it (fidelity check, calibration, timing).

numpy only, and nothing else of bfnas: a device that only times a file imports this without
torch or onnx.
"""

from __future__ import annotations

import numpy as np

# The order is the positional order of the encoder's forward (ids, mask, token types).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
# A classifier's output instead (a model package's files: encoder, pooler and classifier),
# [batch, labels].
LOGITS_NAME = "logits"

# BERT's [CLS] id, the first token of every generated row.
CLS_ID = 101
# Word-piece ids below this are BERT's reserved ones ([PAD], [unusedN], [CLS], ...).
FIRST_WORD_PIECE = 1000


def pack_example(
    a: list[int], b: list[int] | None, cls: int, sep: int, max_len: int
) -> tuple[list[int], list[int], bool]:
    """One example as a BERT classifier reads it: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`
    (token types 0, then 1 for b), cut to `max_len` tokens by trimming the longer text first
    as BERT's GLUE scripts do. Returns the ids, the token types and whether anything was cut.
    Fine-tuning and a deployed classifier both tokenize through this, so they agree."""
    cut = len(a) + (len(b) + 1 if b is not None else 0) > max_len - 2
    if b is None:
        a = a[: max_len - 2]
        return [cls, *a, sep], [0] * (len(a) + 2), cut
    room = max_len - 3
    while len(a) + len(b) > room:
        if len(a) > len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return [cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1), cut


def token_batches(
    n: int, batch: int, seq_len: int, vocab_size: int, seed: int = 0, padded: bool = True
) -> list[dict[str, np.ndarray]]:
    """`n` int64 token batches of [batch, seq_len], one dict of INPUT_NAMES each: random ids
    after a [CLS]-like token. With `padded`, a batch of two or more has its last row padded
    from a random point on, so masking is exercised; without, every row is full length.

    The draws are part of stored results (a fidelity check, a calibrated file's bytes and so
    its hash), so their order must not change: ids first, then the padding point."""
    rng = np.random.default_rng(seed)
    # Word-piece ids above the reserved ones where the vocabulary has them; a small
    # vocabulary (a tiny test checkpoint) draws from all but id 0, its padding.
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
        feed = dict(zip(INPUT_NAMES, (ids, mask, np.zeros_like(ids)), strict=True))
        out.append(feed)
    return out
