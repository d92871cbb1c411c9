"""The teacher a distilling protocol learns from: the space's largest subnet fine-tuned on
the task (labels only, the protocol's teacher settings), and its logits on train.

Made once per (supernet weights, architecture, task splits, teacher settings) and kept in a
folder of its own under `root`, named by the hash of those: every later fine-tune -- in this
process, in a worker, in a rerun -- reads the logits back (a plain float32 `.npy`, read
without pickle) and checks them against their sha256 in `teacher.json`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bfnas.errors import InputError
from bfnas.models.digest import file_sha256
from bfnas.models.nn.supernet import SuperBert
from bfnas.models.outputs import write_atomic
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import PreparedTask, finetune_classifier
from bfnas.models.train.protocols import FinetuneProtocol
from bfnas.models.train.task_classifier import classification_metrics, predict, predict_logits

TEACHER_FILE = "teacher.json"
LOGITS_FILE = "train-logits.npy"
EVAL_BATCH = 64  # rows sorted by length, so a batch pads little (no gradients: any size fits)


def teacher_key(
    supernet: SuperBert, cfg: SubnetConfig, data: PreparedTask, protocol: FinetuneProtocol
) -> str:
    what = {
        "arch_key": cfg.key(),
        "supernet_weights_sha256": supernet.source.get("weights_sha256"),
        "train_sha256": file_sha256(data.task.train.path),
        "dev_sha256": file_sha256(data.task.dev.path),
        "max_len": data.max_len,
        "teacher": asdict(protocol.teacher) if protocol.teacher else None,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _read(folder: Path, rows: int, labels: int) -> tuple[Tensor, dict[str, Any]] | None:
    meta_path, logits_path = folder / TEACHER_FILE, folder / LOGITS_FILE
    if not (meta_path.is_file() and logits_path.is_file()):
        return None
    try:
        about = json.loads(meta_path.read_text())
        logits = np.load(logits_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(
            str(folder), None, f"a damaged teacher ({exc}); delete the folder to make it again"
        ) from None
    if not isinstance(about, dict) or about.get("logits_sha256") != file_sha256(logits_path):
        raise InputError(
            str(logits_path),
            None,
            "does not match the sha256 in teacher.json; delete the folder to make it again",
        )
    if logits.shape != (rows, labels) or logits.dtype != np.float32:
        raise InputError(
            str(logits_path),
            None,
            f"logits of shape {logits.shape} ({logits.dtype}), the task needs ({rows}, {labels})",
        )
    return torch.from_numpy(logits), about


def teacher_logits(
    supernet: SuperBert,
    cfg: SubnetConfig,
    data: PreparedTask,
    protocol: FinetuneProtocol,
    root: str | Path,
    pooler: dict[str, Tensor] | None = None,
    on_step: Any = lambda row: None,
) -> tuple[Tensor, dict[str, Any]]:
    """The protocol's teacher's logits on train ([examples, labels], file order) and what
    made them (`teacher.json`); fine-tuned here the first time, read back after. `cfg` is the
    teacher's architecture: the space's largest subnet."""
    if protocol.teacher is None:
        raise ValueError(f"protocol {protocol.name} does not distil")
    rows, labels = len(data.train.ids), len(data.task.label_names)
    folder = Path(root) / teacher_key(supernet, cfg, data, protocol)
    found = _read(folder, rows, labels)
    if found is not None:
        return found
    model, result = finetune_classifier(
        supernet, cfg, data, protocol.teacher, pooler=pooler, on_step=on_step
    )
    logits = predict_logits(model, data.train, EVAL_BATCH, data.pad).float()
    train_accuracy = classification_metrics(
        predict(model, data.train, EVAL_BATCH, data.pad), data.train.labels, labels
    )["accuracy"]
    folder.mkdir(parents=True, exist_ok=True)
    buffer = folder / f".{LOGITS_FILE}.tmp"
    with buffer.open("wb") as fh:  # a file object: np.save would add ".npy" to a name
        np.save(fh, logits.numpy(), allow_pickle=False)
    buffer.replace(folder / LOGITS_FILE)
    about = {
        "arch": cfg.to_dict(),
        "dev_accuracy": result["accuracy"],
        "train_accuracy": train_accuracy,
        "train_seconds": result["train_seconds"],
        "settings": asdict(protocol.teacher),
        "supernet_weights_sha256": supernet.source.get("weights_sha256"),
        "task": str(data.task.folder),
        "logits_sha256": file_sha256(folder / LOGITS_FILE),
    }
    write_atomic(folder / TEACHER_FILE, json.dumps(about, indent=1) + "\n")
    return logits, about
