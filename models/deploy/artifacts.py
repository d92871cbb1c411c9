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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bfnas.errors import InputError
from bfnas.models.deploy.graph_writer import WRITER_VERSION, can_write, write_onnx
from bfnas.models.deploy.onnx_export import (
    ExportSettings,
    export_onnx,
    generated_inputs,
    measure_fidelity,
    torch_outputs,
)
from bfnas.models.deploy.quantize import QUANTIZATION_OPS, Recipe, fuse_transformer, quantize
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
        export = self.export_for(precision, recipe, fuse)
        direct = export.exporter == "direct"
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        state = supernet.sliced_state(cfg)
        weights = weights_sha256(state)
        seconds["extract"] = time.perf_counter() - t

        key = self.key(cfg, weights, precision, recipe, fuse, export)
        folder = self.root / key
        cached = Artifact.complete(folder)
        if cached is not None:
            return cached

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            graph: dict[str, dict[str, int]] = {}
            fs = self.fidelity
            vocab = supernet.dims.vocab
            feeds = generated_inputs(fs.inputs, fs.batch, fs.seq_len, vocab.vocab_size, fs.seed)
            t = time.perf_counter()
            if direct:
                # The graph writer emits the INT8 graph itself: no export-then-quantize.
                source = tmp / ("int8.onnx" if precision == "int8" else "fp32.onnx")
                numpy_state = {k: v.detach().numpy() for k, v in state.items()}
                ops = write_onnx(
                    numpy_state, cfg, source, precision == "int8", vocab.layer_norm_eps
                )
                seconds["export"] = time.perf_counter() - t
                if precision == "int8":
                    graph["quantization"] = {k: ops[k] for k in QUANTIZATION_OPS if ops.get(k)}
                reference = supernet_outputs(supernet, cfg, feeds)
            else:
                dense = supernet.extract(cfg)
                source = tmp / "fp32.onnx"
                export_onnx(dense, source, export, self.fidelity.seq_len)
                seconds["export"] = time.perf_counter() - t
                reference = torch_outputs(dense, feeds)
            if fuse:
                t = time.perf_counter()
                graph["fusion"] = fuse_transformer(source, tmp / "fused.onnx")
                source = tmp / "fused.onnx"
                seconds["optimize"] = time.perf_counter() - t
            if precision == "int8" and not direct:
                assert recipe is not None
                calib = None
                if recipe.method == "static":
                    # Calibration inputs are drawn apart from the fidelity inputs (other seed).
                    calib = generated_inputs(
                        recipe.calibration_samples, 1, fs.seq_len, vocab.vocab_size, fs.seed + 1
                    )
                t = time.perf_counter()
                graph["quantization"] = quantize(source, tmp / "int8.onnx", recipe, calib)
                source = tmp / "int8.onnx"
                seconds["quantize"] = time.perf_counter() - t
            t = time.perf_counter()
            fidelity = measure_fidelity(source, reference, feeds, fs.threshold)
            seconds["fidelity"] = time.perf_counter() - t

            os.replace(source, tmp / MODEL_FILE)
            for leftover in tmp.glob("*.onnx*"):
                if leftover.name != MODEL_FILE:
                    leftover.unlink()
            model = tmp / MODEL_FILE
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
                sha256=file_sha256(model),
                bytes=model.stat().st_size,
                fidelity=fidelity.to_dict(),
                seconds={k: round(v, 4) for k, v in seconds.items()},
                graph=graph,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            meta = art.to_dict()
            meta.pop("path")
            meta.pop("cached")
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if folder.exists() and Artifact.complete(folder) is None:
                shutil.rmtree(folder)  # not whole (left by hand, or by an older bfnas)
            try:
                os.rename(tmp, folder)
            except OSError:
                # Another process finished the same artifact first; theirs is identical.
                theirs = Artifact.complete(folder)
                if theirs is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return theirs
            return art
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
