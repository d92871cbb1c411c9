"""`file_sha256` on the device: the worker checks it times the file it was sent, TensorRT keys
its engine cache by it. `bfnas.models.digest.file_sha256` computed again, because the device
package ships without bfnas (a test holds the two equal)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
