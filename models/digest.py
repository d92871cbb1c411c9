"""`file_sha256`: the one content hash of a file (artifacts, checkpoints, shards, imports,
and the worker's check that it times the file it was sent); `json_digest`: the one short hash
of a setting's JSON (a fine-tune protocol's identity). Standard library only, so a device
that only times files imports nothing heavy for it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks (ONNX files run to hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """The first 16 hex digits of the sha256 of `value` as sorted JSON: equal settings give
    equal digests whatever order their keys came in."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
