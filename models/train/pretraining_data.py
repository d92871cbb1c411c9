"""Stage-1 pretraining data: raw text -> token shards with BERT's whole-word masking.

Streaming: the corpus is read a line at a time and only the shard being filled is held in
memory, so a corpus larger than RAM is fine. Documents are separated by blank lines. Words
(a word's WordPiece pieces stay together) are packed into `[CLS] ... [SEP]` sequences of
`seq_len` tokens; a document boundary inside a sequence is marked with `[SEP]`. Masking is
applied per shard with an RNG seeded by (seed, shard index), so the output depends only on
the corpus, tokenizer and settings: a rerun writes the same bytes, and an interrupted build
resumes from its manifest (the partial sequence in progress is kept there).

A shard is `shard-NNNNN.npz` (numpy, no pickle): `input_ids` int32 [N, L], `attention_mask`
int8 [N, L], `labels` int32 [N, L] (-100 where nothing is predicted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bfnas.errors import InputError
from bfnas.models.digest import file_sha256
from bfnas.models.outputs import atomic_path, write_atomic

FORMAT = 1
MANIFEST = "manifest.json"
IGNORE = -100


@dataclass(frozen=True)
class DataSettings:
    seq_len: int = 128
    shard_size: int = 4096  # sequences per shard
    mask_prob: float = 0.15
    seed: int = 0
    lowercase: bool = True  # for a bare vocab.txt; tokenizer.json carries its own

    def __post_init__(self) -> None:
        if not 8 <= self.seq_len <= 512:
            raise InputError.bad_setting("seq_len", f"must be in [8, 512], got {self.seq_len}")
        if self.shard_size < 1:
            raise InputError.bad_setting("shard_size", f"must be at least 1, got {self.shard_size}")
        if not 0 < self.mask_prob < 1:
            raise InputError.bad_setting("mask_prob", f"must be in (0, 1), got {self.mask_prob}")


@dataclass(frozen=True)
class Specials:
    cls: int
    sep: int
    pad: int
    mask: int
    vocab_size: int
    first_normal: int  # random replacements are drawn from [first_normal, vocab_size)


def load_tokenizer(path: str | Path, lowercase: bool = True):
    """A `tokenizers.Tokenizer` from an HF `tokenizer.json` or a BERT `vocab.txt` (or a
    folder holding one), and its special token ids."""
    from tokenizers import Tokenizer

    p = Path(path)
    if p.is_dir():
        p = next(
            (p / n for n in ("tokenizer.json", "vocab.txt") if (p / n).is_file()),
            p / "tokenizer.json",
        )
    if not p.is_file():
        raise InputError(str(p), None, "no tokenizer.json or vocab.txt here")
    try:
        if p.suffix == ".json":
            tok = Tokenizer.from_file(str(p))
            tok.no_padding()
            tok.no_truncation()
        else:
            from tokenizers.implementations import BertWordPieceTokenizer

            tok = BertWordPieceTokenizer(str(p), lowercase=lowercase)
    except Exception as exc:  # the library's messages name no file
        raise InputError(str(p), None, f"not a tokenizer: {exc}") from None
    ids = {name: tok.token_to_id(name) for name in ("[CLS]", "[SEP]", "[PAD]", "[MASK]")}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise InputError(str(p), None, f"no {', '.join(missing)} token: not a BERT vocabulary")
    specials = Specials(
        ids["[CLS]"],
        ids["[SEP]"],
        ids["[PAD]"],
        ids["[MASK]"],
        tok.get_vocab_size(),
        first_normal=max(ids.values()) + 1,
    )
    return tok, specials, p


def corpus_files(corpus: str | Path) -> list[Path]:
    p = Path(corpus)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".text", ""))
        if files:
            return files
        raise InputError(str(p), None, "no .txt files in this folder")
    raise InputError(str(p), None, "no such file or folder")


# How much of each corpus file `check_corpus` reads to judge it.
SAMPLE_BYTES = 1 << 16
# The most of a file's (non-space) characters that may be unknown to the tokenizer: in an
# [UNK] token, or dropped before tokenizing (bytes that are not UTF-8, NULs, control bytes).
# Measured with the packaged MiniLM tokenizer on the first 64 KiB: English prose (stdlib
# docstrings, README.md), Python source, German, French and Russian UTF-8 and numbers CSV
# 0.0 %, English with emoji 3.8 %, French in Latin-1 2.5 %; random bytes 58 %, gzip 57 %,
# PNG 58 %, an ELF binary 66-87 %, one long hex line 100 % (and Chinese, which this English
# vocabulary mostly lacks, 68 %). 30 % lies far from both.
MAX_UNKNOWN_SHARE = 0.30


def _unknown_share(sample: str, tok) -> tuple[int, int]:
    """(non-space characters, those covered by a token the tokenizer knows) in `sample`."""
    unk = tok.token_to_id("[UNK]")
    chars = known = 0
    for line in sample.splitlines():
        if not line.strip():
            continue
        enc = tok.encode(line, add_special_tokens=False)
        chars += sum(not c.isspace() for c in line)
        known += sum(
            end - start for (start, end), i in zip(enc.offsets, enc.ids, strict=True) if i != unk
        )
    return chars, known


def _yields_tokens(path: Path, tok) -> bool:
    """Whether any line of `path` tokenizes to something (read as `build_data` reads it)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        return any(
            line.strip() and tok.encode(line.strip(), add_special_tokens=False).ids for line in fh
        )


def check_corpus(corpus: str | Path, files: list[Path], tok) -> None:
    """Refuse a corpus that would make no data or data of noise, before anything is written:
    one that yields no token at all (empty, whitespace), or a file of it whose first
    `SAMPLE_BYTES` are mostly characters the tokenizer does not know (random or binary
    bytes, or a language its vocabulary lacks)."""
    some_text = False
    for path in files:
        try:
            with path.open("rb") as fh:
                head = fh.read(SAMPLE_BYTES)
        except OSError as exc:
            raise InputError(str(path), None, f"cannot read ({exc.strerror or exc})") from None
        if len(head) == SAMPLE_BYTES and b"\n" in head:
            head = head[: head.rindex(b"\n")]  # whole lines (and no character cut in two)
        chars, known = _unknown_share(head.decode("utf-8", errors="replace"), tok)
        if chars and 1 - known / chars > MAX_UNKNOWN_SHARE:
            raise InputError(
                str(path),
                None,
                f"{1 - known / chars:.0%} of its text is unknown to "
                "the tokenizer ([UNK], bytes that are not UTF-8 text): not a corpus "
                f"(at most {MAX_UNKNOWN_SHARE:.0%})",
            )
        some_text = some_text or known > 0
    # Blank at the start of every file: only then is all of it read.
    if not some_text and not any(_yields_tokens(path, tok) for path in files):
        raise InputError(str(corpus), None, "no text: the corpus is empty or only whitespace")


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def mask_whole_words(
    ids: np.ndarray,
    word_starts: list[list[int]],
    specials: Specials,
    prob: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking by whole words: words are picked in random order until `prob` of the
    tokens are covered; each picked word's pieces are all [MASK] (80 %), all random (10 %)
    or all kept (10 %), and all predicted."""
    inputs, labels = ids.copy(), np.full_like(ids, IGNORE)
    for row, starts in enumerate(word_starts):
        n_tokens = int((ids[row] != specials.pad).sum()) - 2  # not [CLS] and the last [SEP]
        spans = [(s, e) for s, e in zip(starts, starts[1:], strict=False)]
        target = max(1, round(prob * max(n_tokens, 1)))
        covered = 0
        for i in rng.permutation(len(spans)):
            if covered >= target:
                break
            s, e = spans[i]
            labels[row, s:e] = ids[row, s:e]
            roll = rng.random()
            if roll < 0.8:
                inputs[row, s:e] = specials.mask
            elif roll < 0.9:
                inputs[row, s:e] = rng.integers(
                    specials.first_normal, specials.vocab_size, size=e - s
                )
            covered += e - s
    return inputs, labels


class _Packer:
    """Whole words into [CLS] ... [SEP] rows of `seq_len` tokens."""

    def __init__(self, seq_len: int, specials: Specials, carry: dict | None = None) -> None:
        self.room = seq_len - 2
        self.seq_len = seq_len
        self.s = specials
        # The row in progress: its tokens and where each word starts (kept across a resume).
        self.tokens: list[int] = list((carry or {}).get("tokens", []))
        self.starts: list[int] = list((carry or {}).get("starts", []))

    def add_word(self, pieces: list[int]) -> list[tuple[list[int], list[int]]]:
        pieces = pieces[: self.room]  # a word longer than a row is cut, not lost entirely
        done = []
        if len(self.tokens) + len(pieces) > self.room:
            done.append(self.flush())
        self.starts.append(len(self.tokens) + 1)  # +1: [CLS] comes first
        self.tokens.extend(pieces)
        return [d for d in done if d is not None]

    def end_document(self) -> list[tuple[list[int], list[int]]]:
        if not self.tokens:
            return []
        if len(self.tokens) + 1 > self.room:
            out = self.flush()
            return [out] if out else []
        self.tokens.append(self.s.sep)  # a boundary: the next document shares this row
        return []

    def flush(self) -> tuple[list[int], list[int]] | None:
        if not self.tokens:
            return None
        row = [self.s.cls, *self.tokens, self.s.sep]
        starts = [*self.starts, len(row) - 1]  # the final end, for span arithmetic
        self.tokens, self.starts = [], []
        return row, starts

    def carry(self) -> dict:
        return {"tokens": self.tokens, "starts": self.starts}


def build_data(
    corpus: str | Path,
    tokenizer: str | Path,
    out: str | Path,
    settings: DataSettings = DataSettings(),
    max_shards: int | None = None,
    on_progress: Callable[[dict], None] = lambda p: None,
) -> dict[str, Any]:
    """Tokenize, pack, mask and shard `corpus` into `out` (resuming what a manifest says is
    done). `max_shards` stops after that many new shards (the rest on a rerun)."""
    files = corpus_files(corpus)
    tok, specials, tok_path = load_tokenizer(tokenizer, settings.lowercase)
    out = Path(out)
    ident = _data_identity(corpus, files, tok_path, specials, settings)
    state = _state_to_resume(out / MANIFEST, ident)
    if state["complete"]:
        return {**ident, **state, "out": str(out), "resumed": True, "new_shards": 0}
    check_corpus(corpus, files, tok)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, settings, specials, ident, state, on_progress)
    writer.pack(files, tok, max_shards)
    return writer.result()


def _data_identity(
    corpus: str | Path,
    files: list[Path],
    tok_path: Path,
    specials: Specials,
    settings: DataSettings,
) -> dict[str, Any]:
    """What the shards are made from: a manifest that says otherwise is another build's."""
    return {
        "format": FORMAT,
        "settings": asdict(settings),
        "tokenizer": {
            "path": str(tok_path),
            "sha256": file_sha256(tok_path),
            "vocab_size": specials.vocab_size,
            "specials": asdict(specials),
        },
        "corpus": {
            "path": str(Path(corpus)),
            "files": len(files),
            "fingerprint": _fingerprint(files),
        },
    }


def _state_to_resume(manifest_path: Path, ident: dict[str, Any]) -> dict[str, Any]:
    """The progress a manifest records (nothing done when there is none); a manifest of
    another build is refused, not overwritten."""
    state = {"shards": [], "lines": 0, "carry": {}, "complete": False, "sequences": 0, "tokens": 0}
    if not manifest_path.is_file():
        return state
    old = json.loads(manifest_path.read_text())
    if {k: old.get(k) for k in ident} != ident:
        raise InputError.bad_setting(
            "out",
            f"{manifest_path}: made from another corpus, tokenizer or settings: give a new folder",
        )
    return {k: old[k] for k in state}


class _ShardWriter:
    """Packs the corpus lines not done before into rows and writes each full shard; the
    manifest is rewritten after every shard, so an interrupted build resumes from it."""

    def __init__(
        self,
        out: Path,
        settings: DataSettings,
        specials: Specials,
        ident: dict[str, Any],
        state: dict[str, Any],
        on_progress: Callable[[dict], None],
    ) -> None:
        self.out, self.settings, self.specials = out, settings, specials
        self.ident, self.state, self.on_progress = ident, state, on_progress
        self.manifest_path = out / MANIFEST
        self.resumed = state["lines"] > 0
        self.packer = _Packer(settings.seq_len, specials, state["carry"])
        # Finished rows not yet in a shard; with the packer's row in progress they are the
        # "carry" a resume starts from.
        self.rows: list[tuple[list[int], list[int]]] = [
            tuple(r) for r in state["carry"].get("rows", [])
        ]
        self.new_shards = 0

    def pack(self, files: list[Path], tok, max_shards: int | None) -> None:
        """Every line after those done before, then the last rows and the manifest marked
        complete; or stop once `max_shards` new shards are written."""
        line_no = 0
        for path in files:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    line_no += 1
                    if line_no <= self.state["lines"]:
                        continue  # done before the interruption
                    self._add_line(line.strip(), tok)
                    if self._write_full_shards(line_no, max_shards):
                        return
            line_no += 1  # the end of a file ends a document; it counts as a line
            if line_no > self.state["lines"]:
                self.rows += self.packer.end_document()
        self._finish(line_no)

    def _add_line(self, text: str, tok) -> None:
        if not text:  # a blank line ends a document
            self.rows += self.packer.end_document()
            return
        for pieces in _words(tok.encode(text, add_special_tokens=False)):
            self.rows += self.packer.add_word(pieces)

    def _write_full_shards(self, line_no: int, max_shards: int | None) -> bool:
        """Write every full shard the rows hold; True once `max_shards` new ones are written."""
        size = self.settings.shard_size
        while len(self.rows) >= size:
            batch, self.rows = self.rows[:size], self.rows[size:]
            self._write_shard(batch, line_no)
            if max_shards is not None and self.new_shards >= max_shards:
                return True
        return False

    def _finish(self, line_no: int) -> None:
        last = self.packer.flush()
        if last:
            self.rows.append(last)
        size = self.settings.shard_size
        while self.rows:
            batch, self.rows = self.rows[:size], self.rows[size:]
            self._write_shard(batch, line_no)
        self.state["complete"] = True
        self.state["carry"] = {}
        _write_manifest(self.manifest_path, {**self.ident, **self.state})

    def _write_shard(self, batch: list[tuple[list[int], list[int]]], lines: int) -> None:
        """One masked shard, then the manifest that counts it (the rows still pending and the
        packer's row in progress are its carry)."""
        settings, specials, state = self.settings, self.specials, self.state
        index = len(state["shards"])
        ids = np.full((len(batch), settings.seq_len), specials.pad, dtype=np.int32)
        for i, (row, _) in enumerate(batch):
            ids[i, : len(row)] = row
        rng = np.random.default_rng([settings.seed, index])
        inputs, labels = mask_whole_words(
            ids, [s for _, s in batch], specials, settings.mask_prob, rng
        )
        name = f"shard-{index:05d}.npz"
        with atomic_path(self.out / name) as tmp:
            np.savez(
                tmp,
                input_ids=inputs,
                attention_mask=(ids != specials.pad).astype(np.int8),
                labels=labels,
            )
        state["shards"].append(
            {"file": name, "sequences": len(batch), "sha256": file_sha256(self.out / name)}
        )
        state["sequences"] += len(batch)
        state["tokens"] += int((ids != specials.pad).sum())
        state["lines"] = lines
        state["carry"] = {**self.packer.carry(), "rows": [list(r) for r in self.rows]}
        self.new_shards += 1
        _write_manifest(self.manifest_path, {**self.ident, **state})
        self.on_progress(
            {"shards": len(state["shards"]), "sequences": state["sequences"], "lines": lines}
        )

    def result(self) -> dict[str, Any]:
        return {
            **self.ident,
            **self.state,
            "out": str(self.out),
            "resumed": self.resumed,
            "new_shards": self.new_shards,
        }


def _words(enc) -> Iterator[list[int]]:
    """The token ids of an encoding grouped by the word they belong to."""
    current, pieces = None, []
    for token_id, word in zip(enc.ids, enc.word_ids, strict=True):
        if word != current and pieces:
            yield pieces
            pieces = []
        current = word
        pieces.append(token_id)
    if pieces:
        yield pieces


def _write_manifest(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("input_ids", "attention_mask", "labels")}


def original_tokens(shard: dict[str, np.ndarray]) -> np.ndarray:
    """A shard's text before masking (int64 ids): the masked positions' labels put back."""
    return np.where(shard["labels"] != IGNORE, shard["labels"], shard["input_ids"]).astype(np.int64)


def shard_files(data_dir: str | Path, at_least: int = 1) -> list[Path]:
    """The shards of a `bfnas data build` folder in order. By convention the last one is
    held out (one-shot scoring reads it, training reads the others)."""
    folder = Path(data_dir)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(str(folder), None, "no manifest.json: not a `bfnas data build` folder")
    shards = [folder / s["file"] for s in json.loads(manifest.read_text()).get("shards", [])]
    if len(shards) < at_least:
        raise InputError(
            str(manifest),
            "shards",
            f"{len(shards)} shards, need at least {at_least}"
            + (" (the last is held out)" if at_least > 1 else ""),
        )
    return shards


def data_tokenizer(data_dir: str | Path) -> Path | None:
    """The tokenizer file a `bfnas data build` folder was made with, if it is still there:
    it is what the token ids mean, so a model trained on the folder ships with it."""
    manifest = Path(data_dir) / MANIFEST
    try:
        path = Path(json.loads(manifest.read_text())["tokenizer"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def stdlib_docstrings(out: str | Path, min_words: int = 20) -> dict[str, int]:
    """Write the docstrings of the Python standard library (`stdlib_text`) as a corpus: one
    docstring per document, paragraphs on their own lines. Real English prose, available on
    any machine with Python, for tests and demos."""
    from bfnas.models.train.stdlib_text import stdlib_docstrings_iter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    docs = words = 0
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for doc in stdlib_docstrings_iter():
            if len(doc.text.split()) < min_words:
                continue
            paragraphs = [" ".join(p.split()) for p in doc.text.split("\n\n")]
            fh.write("\n".join(p for p in paragraphs if p) + "\n\n")
            docs += 1
            words += len(doc.text.split())
    return {"documents": docs, "words": words}
