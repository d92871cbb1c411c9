"""A deployed text classifier, as an application runs it: a model folder (what `bfnas task
train` writes, `models.deploy.classifier_package`) read back, its INT8 (or FP32) ONNX file run
by ONNX Runtime with the folder's tokenizer, a label and a softmax score per text.

numpy, tokenizers and onnxruntime only: an application that classifies imports neither torch
nor onnx. Every file of the folder it needs is checked as it loads: a folder that is not
whole is one line naming the file and the field (`InputError`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bfnas.errors import InputError, read_text_input, short
from bfnas.models.deploy.encoder_io import INPUT_NAMES, LOGITS_NAME, pack_example

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
# The key of config.json under which bfnas keeps what Hugging Face's fields cannot say.
BFNAS_KEY = "bfnas"
ONNX_FILES = {"int8": INT8_FILE, "fp32": FP32_FILE}


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    score: float  # the softmax probability of `label`
    scores: dict[str, float]  # every label's probability

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "score": self.score, "scores": self.scores}


def _json_file(path: Path) -> Any:
    text = read_text_input(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), None, f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise InputError(str(path), None, "JSON nested too deeply") from None


def _need(path: Path) -> Path:
    if not path.is_file():
        raise InputError(
            str(path),
            None,
            "missing: the model folder is incomplete (write it again with `bfnas task train`)",
        )
    return path


def read_labels(folder: Path) -> tuple[str, ...]:
    """labels.json and config.json's id2label, which must agree: the label of each class id."""
    config_path = _need(folder / CONFIG_FILE)
    config = _json_file(config_path)
    if not isinstance(config, dict):
        raise InputError(str(config_path), None, f"expected a JSON object, got {short(config)}")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise InputError(
            str(config_path),
            "id2label",
            f"missing or not a mapping of class ids to labels, got {short(id2label)}",
        )
    wanted = [str(i) for i in range(len(id2label))]
    if sorted(id2label, key=lambda k: (len(k), k)) != wanted:
        raise InputError(
            str(config_path),
            "id2label",
            f"keys must be the class ids 0..{len(id2label) - 1}, got {short(sorted(id2label))}",
        )
    from_config = tuple(id2label[k] for k in wanted)
    labels_path = _need(folder / LABELS_FILE)
    labels = _json_file(labels_path)
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(x, str) and x for x in labels)
    ):
        raise InputError(
            str(labels_path),
            None,
            f"expected a list of two or more label names in class-id order, got {short(labels)}",
        )
    if tuple(labels) != from_config:
        raise InputError(
            str(labels_path),
            None,
            f"{short(labels)} differs from {CONFIG_FILE}'s id2label {short(list(from_config))}",
        )
    return tuple(labels)


def read_settings(folder: Path) -> dict[str, Any]:
    """What config.json's `bfnas` key says about the inputs: max_len and the text columns."""
    path = folder / CONFIG_FILE
    section = _json_file(path).get(BFNAS_KEY)
    if not isinstance(section, dict):
        raise InputError(str(path), BFNAS_KEY, "missing: not a folder `bfnas task train` wrote")
    max_len = section.get("max_len")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or not 4 <= max_len <= 4096:
        raise InputError(str(path), f"{BFNAS_KEY}.max_len", f"expected 4..4096, got {max_len!r}")
    columns = section.get("text_columns")
    if (
        not isinstance(columns, list)
        or len(columns) not in (1, 2)
        or not all(isinstance(c, str) for c in columns)
    ):
        raise InputError(
            str(path), f"{BFNAS_KEY}.text_columns", f"expected one or two names, got {columns!r}"
        )
    return {"max_len": max_len, "text_columns": columns}


def _session(path: Path, labels: int, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's messages are long and name no field
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(str(path), None, f"damaged or not an ONNX model ({first[:120]})") from None
    inputs = {i.name for i in session.get_inputs()}
    if not inputs <= set(INPUT_NAMES) or "input_ids" not in inputs:
        raise InputError(
            str(path), "inputs", f"{sorted(inputs)}: expected some of {', '.join(INPUT_NAMES)}"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    if LOGITS_NAME not in outputs:
        raise InputError(str(path), LOGITS_NAME, f"no such output (it has {', '.join(outputs)})")
    width = outputs[LOGITS_NAME].shape[-1]
    if isinstance(width, int) and width != labels:
        raise InputError(
            str(path), LOGITS_NAME, f"{width} classes, but {LABELS_FILE} names {labels}"
        )
    return session, inputs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class TextClassifier:
    """A model folder's classifier: `predict(texts)` gives each text's label and scores.

    Each text runs as a batch of its own, unpadded: the dynamic INT8 recipe scales
    activations by the range of the whole batch, so batching texts together would make one
    text's scores depend on the others it came with. A pair task's text is its two parts
    separated by a tab (as in the task's TSV files)."""

    def __init__(self, folder: str | Path, precision: str = "int8", threads: int | None = None):
        from bfnas.models.train.pretraining_data import load_tokenizer

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(str(folder), None, "not a directory (expected a model folder)")
        if precision not in ONNX_FILES:
            raise InputError.bad_setting(
                "precision", f"unknown {precision!r} (known: {', '.join(ONNX_FILES)})"
            )
        self.labels = read_labels(self.folder)
        settings = read_settings(self.folder)
        self.max_len = settings["max_len"]
        self.text_columns = tuple(settings["text_columns"])
        self.tokenizer, self.specials, self.tokenizer_file = load_tokenizer(self.folder)
        self.model_file = _need(self.folder / ONNX_FILES[precision])
        self.precision = precision
        self.session, self.inputs = _session(self.model_file, len(self.labels), threads)

    @property
    def pair(self) -> bool:
        return len(self.text_columns) == 2

    def feed(self, text: str) -> dict[str, np.ndarray]:
        """The model's inputs for one text, tokenized as it was in training."""
        parts = text.split("\t")
        if len(parts) != len(self.text_columns):
            what = (
                f"two parts separated by a tab ({' / '.join(self.text_columns)})"
                if self.pair
                else "one text without tabs"
            )
            raise InputError.bad_setting(
                "text", f"this model reads {what}; got {len(parts)}: {short(text, 60)}"
            )
        a = self.tokenizer.encode(parts[0], add_special_tokens=False).ids
        b = self.tokenizer.encode(parts[1], add_special_tokens=False).ids if self.pair else None
        ids, types, _ = pack_example(a, b, self.specials.cls, self.specials.sep, self.max_len)
        row = np.asarray([ids], dtype=np.int64)
        feed = {
            "input_ids": row,
            "attention_mask": np.ones_like(row),
            "token_type_ids": np.asarray([types], dtype=np.int64),
        }
        return {k: v for k, v in feed.items() if k in self.inputs}

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """[texts, labels]: the raw output for each text."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        rows = [self.session.run([LOGITS_NAME], self.feed(t))[0][0] for t in texts]
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = softmax(self.logits(texts).astype(np.float64))
        out = []
        for text, p in zip(texts, probs, strict=True):
            best = int(p.argmax())
            out.append(
                Prediction(
                    text,
                    self.labels[best],
                    float(p[best]),
                    {label: float(v) for label, v in zip(self.labels, p, strict=True)},
                )
            )
        return out


def load_classifier(
    folder: str | Path, precision: str = "int8", threads: int | None = None
) -> TextClassifier:
    """The classifier in a model folder (`bfnas task train --out`): `precision` "int8" runs
    model.int8.onnx, "fp32" model.onnx; `threads` sets ONNX Runtime's intra-op threads
    (default: its own choice)."""
    return TextClassifier(folder, precision, threads)
