"""Content-addressed ONNX artifacts: the same inputs never export twice.

An artifact's key hashes everything that can change the file: the subnet, the hash of its
weights, precision, recipe settings, exporter settings and tool versions. Each artifact lives
in `ROOT/KEY/` as `model.onnx` + `artifact.json`; a folder appears only when complete
(built in a temporary folder, then renamed), so a crash leaves no half artifact behind, and
a folder that is not whole (its record unreadable, its model missing or of another size) is
never taken from the cache: it is built again. A full disk is one line (`disk_full`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bfnas.errors import InputError
from bfnas.models.deploy.encoder_io import token_batches
from bfnas.models.deploy.graph_writer import WRITER_VERSION, can_write, write_onnx
from bfnas.models.deploy.onnx_export import (
    ExportSettings,
    Fidelity,
    export_onnx,
    measure_fidelity,
    torch_outputs,
)
from bfnas.models.deploy.quantize import QUANTIZATION_OPS, fuse_transformer, quantize
from bfnas.models.deploy.recipes import Recipe
from bfnas.models.digest import file_sha256
from bfnas.models.nn.supernet import SuperBert, supernet_outputs, weights_sha256
from bfnas.models.outputs import disk_full_is_failure
from bfnas.models.space.subnet import SubnetConfig

PRECISIONS = ("fp32", "int8")
MODEL_FILE = "model.onnx"
META_FILE = "artifact.json"


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from bfnas.version import bfnas_version

    return {
        "bfnas": bfnas_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@dataclass(frozen=True)
class FidelitySettings:
    threshold: float = 0.99
    inputs: int = 4
    batch: int = 2
    seq_len: int = 128
    seed: int = 1234


@dataclass
class Artifact:
    key: str
    path: Path
    arch: dict[str, Any]
    arch_key: str
    precision: str
    recipe: dict[str, Any] | None
    fuse: bool
    export: dict[str, Any]
    weights_sha256: str
    supernet_source: dict[str, Any]
    versions: dict[str, str]
    sha256: str
    bytes: int
    fidelity: dict[str, Any]
    seconds: dict[str, float]
    graph: dict[str, dict[str, int]] = field(default_factory=dict)
    created: str = ""
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def read(cls, folder: Path) -> Artifact:
        data = json.loads((folder / META_FILE).read_text())
        data["path"] = folder / MODEL_FILE
        return cls(**data)

    @classmethod
    def complete(cls, folder: Path) -> Artifact | None:
        """The cached artifact in `folder`, or None where there is none or it is not whole."""
        try:
            art = cls.read(folder)
            whole = art.path.stat().st_size == art.bytes
        except (OSError, ValueError, TypeError):
            return None
        if not whole:
            return None
        art.cached = True
        return art


class ArtifactCache:
    """Builds and caches FP32 and INT8 ONNX files of subnets of one supernet."""

    def __init__(
        self,
        root: Path,
        export: ExportSettings | None = None,
        fidelity: FidelitySettings | None = None,
    ) -> None:
        self.root = Path(root)
        self.export = export or ExportSettings()
        self.fidelity = fidelity or FidelitySettings()

    def key(
        self,
        cfg: SubnetConfig,
        weights: str,
        precision: str,
        recipe: Recipe | None,
        fuse: bool,
        export: ExportSettings | None = None,
    ) -> str:
        ident = {
            "arch": cfg.to_dict(),
            "weights_sha256": weights,
            "precision": precision,
            "recipe": recipe.to_dict() if recipe else None,
            "fuse": fuse,
            "export": (export or self.export).to_dict(),
            "writer": WRITER_VERSION if (export or self.export).exporter == "direct" else None,
            "fidelity": asdict(self.fidelity),
            "versions": tool_versions(),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def export_for(self, precision: str, recipe: Recipe | None, fuse: bool) -> ExportSettings:
        """The export settings really used: `direct` falls back to TorchScript for what the
        graph writer does not produce (fused graphs, static QDQ)."""
        if self.export.exporter == "direct" and not can_write(precision, recipe, fuse):
            return replace(self.export, exporter="torchscript")
        return self.export

    def discard(self, art: Artifact) -> None:
        """Delete an artifact's folder (its record lives on wherever it was stored)."""
        folder = Path(art.path).parent
        if folder.parent.resolve() == self.root.resolve() and (folder / META_FILE).exists():
            shutil.rmtree(folder, ignore_errors=True)

    def build(
        self,
        supernet: SuperBert,
        cfg: SubnetConfig,
        precision: str = "fp32",
        recipe: Recipe | None = None,
        fuse: bool = False,
    ) -> Artifact:
        """The artifact for (subnet, precision, recipe): from the cache, or made now."""
        with disk_full_is_failure(self.root):
            return self._build(supernet, cfg, precision, recipe, fuse)

    def _build(
        self,
        supernet: SuperBert,
        cfg: SubnetConfig,
        precision: str,
        recipe: Recipe | None,
        fuse: bool,
    ) -> Artifact:
        request = self._checked_request(supernet, cfg, precision, recipe, fuse)
        recipe, fuse = request.recipe, request.fuse
        export = self.export_for(precision, recipe, fuse)
        log = _BuildLog()
        with log.timed("extract"):
            state = supernet.sliced_state(cfg)
            weights = weights_sha256(state)

        key = self.key(cfg, weights, precision, recipe, fuse, export)
        folder = self.root / key
        cached = Artifact.complete(folder)
        if cached is not None:
            return cached

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            fidelity = self._make_model(tmp, supernet, cfg, state, request, export, log)
            art = Artifact(
                key=key,
                path=folder / MODEL_FILE,
                arch=cfg.to_dict(),
                arch_key=cfg.key(),
                precision=precision,
                recipe=recipe.to_dict() if recipe else None,
                fuse=fuse,
                export=export.to_dict(),
                weights_sha256=weights,
                supernet_source=supernet.source,
                versions=tool_versions(),
                sha256=file_sha256(tmp / MODEL_FILE),
                bytes=(tmp / MODEL_FILE).stat().st_size,
                fidelity=fidelity.to_dict(),
                seconds={k: round(v, 4) for k, v in log.seconds.items()},
                graph=log.graph,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            return _publish(tmp, folder, art)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _checked_request(
        self,
        supernet: SuperBert,
        cfg: SubnetConfig,
        precision: str,
        recipe: Recipe | None,
        fuse: bool,
    ) -> _Request:
        """What is really built, once the request is known to be buildable: FP32 has no
        recipe, and an INT8 recipe says itself whether it fuses."""
        if precision not in PRECISIONS:
            raise InputError.bad_setting(
                "precision", f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})"
            )
        if precision == "int8" and recipe is None:
            raise InputError.bad_setting("recipe", "int8 needs a recipe")
        if precision == "fp32":
            recipe = None
        else:
            assert recipe is not None
            fuse = recipe.fuse
        supernet.check_fits(cfg)
        positions = supernet.dims.vocab.max_positions
        if self.fidelity.seq_len > positions:
            raise InputError.bad_setting(
                "checkpoint",
                f"{positions} positions, but exports are checked at sequence length "
                f"{self.fidelity.seq_len}",
                field="max_position_embeddings",
            )
        if supernet.dims.vocab.vocab_size < 2:
            raise InputError.bad_setting(
                "checkpoint", "a vocabulary needs at least 2 tokens", field="vocab_size"
            )
        return _Request(precision, recipe, fuse)

    def _make_model(
        self,
        tmp: Path,
        supernet: SuperBert,
        cfg: SubnetConfig,
        state: dict[str, Any],
        request: _Request,
        export: ExportSettings,
        log: _BuildLog,
    ) -> Fidelity:
        """Write `tmp/model.onnx` (written or exported, then fused and quantized as asked)
        and check it against the FP32 subnet; the other files made on the way are removed."""
        fs = self.fidelity
        vocab_size = supernet.dims.vocab.vocab_size
        feeds = token_batches(fs.inputs, fs.batch, fs.seq_len, vocab_size, fs.seed)
        direct = export.exporter == "direct"
        if direct:
            source, reference = _write_direct(tmp, supernet, cfg, state, request.int8, feeds, log)
        else:
            dense = supernet.extract(cfg)
            source = tmp / "fp32.onnx"
            with log.timed("export"):
                export_onnx(dense, source, export, fs.seq_len)
            reference = torch_outputs(dense, feeds)
        if request.fuse:
            with log.timed("optimize"):
                log.graph["fusion"] = fuse_transformer(source, tmp / "fused.onnx")
            source = tmp / "fused.onnx"
        if request.int8 and not direct:
            assert request.recipe is not None
            source = self._quantize(source, tmp, request.recipe, vocab_size, log)
        with log.timed("fidelity"):
            fidelity = measure_fidelity(source, reference, feeds, fs.threshold)
        os.replace(source, tmp / MODEL_FILE)
        for leftover in tmp.glob("*.onnx*"):
            if leftover.name != MODEL_FILE:
                leftover.unlink()
        return fidelity

    def _quantize(
        self, source: Path, tmp: Path, recipe: Recipe, vocab_size: int, log: _BuildLog
    ) -> Path:
        """`source` quantized by ONNX Runtime's tools into `tmp/int8.onnx`."""
        fs = self.fidelity
        calib = None
        if recipe.method == "static":
            # Calibration inputs are drawn apart from the fidelity inputs (other seed).
            calib = token_batches(
                recipe.calibration_samples, 1, fs.seq_len, vocab_size, fs.seed + 1
            )
        with log.timed("quantize"):
            log.graph["quantization"] = quantize(source, tmp / "int8.onnx", recipe, calib)
        return tmp / "int8.onnx"


@dataclass(frozen=True)
class _Request:
    """What one build makes: the precision, and the recipe and fusion really applied."""

    precision: str
    recipe: Recipe | None
    fuse: bool

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


@dataclass
class _BuildLog:
    """What a build records as it goes: seconds per step, and op counts of its graphs."""

    seconds: dict[str, float] = field(default_factory=dict)
    graph: dict[str, dict[str, int]] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - t


def _write_direct(
    tmp: Path,
    supernet: SuperBert,
    cfg: SubnetConfig,
    state: dict[str, Any],
    int8: bool,
    feeds: list[dict[str, np.ndarray]],
    log: _BuildLog,
) -> tuple[Path, list[np.ndarray]]:
    """The graph writer's file, INT8 emitted by the writer itself (no export-then-quantize),
    and the supernet's own FP32 outputs on `feeds` to check it against."""
    source = tmp / ("int8.onnx" if int8 else "fp32.onnx")
    numpy_state = {k: v.detach().numpy() for k, v in state.items()}
    with log.timed("export"):
        ops = write_onnx(numpy_state, cfg, source, int8, supernet.dims.vocab.layer_norm_eps)
    if int8:
        log.graph["quantization"] = {k: ops[k] for k in QUANTIZATION_OPS if ops.get(k)}
    return source, supernet_outputs(supernet, cfg, feeds)


def _publish(tmp: Path, folder: Path, art: Artifact) -> Artifact:
    """Write `art`'s record into the finished build `tmp` and rename it to `folder`: a folder
    appears whole or not at all. Where another process finished the same artifact first,
    theirs (identical) is kept and ours dropped."""
    meta = art.to_dict()
    meta.pop("path")
    meta.pop("cached")
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if folder.exists() and Artifact.complete(folder) is None:
        shutil.rmtree(folder)  # not whole (left by hand, or by an older bfnas)
    try:
        os.rename(tmp, folder)
    except OSError:
        theirs = Artifact.complete(folder)
        if theirs is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return theirs
    return art
