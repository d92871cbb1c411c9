"""ONNX export of a dense subnet through torch, and the fidelity check of an exported file."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bfnas.models.deploy.encoder_io import INPUT_NAMES, OUTPUT_NAME, token_batches
from bfnas.models.nn.bert import Bert


@dataclass(frozen=True)
class ExportSettings:
    # "direct" writes the graph from the weights (models.deploy.graph_writer) for FP32 and the
    # dynamic INT8 recipe; what it cannot write (fusion, static QDQ) goes through
    # TorchScript, the exporter whose graphs ONNX Runtime's transformer optimizer fuses
    # (docs/MEASURED.md). An artifact records the exporter that really made it.
    exporter: str = "direct"
    opset: int = 17

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fidelity:
    cosine: float
    max_abs_diff: float
    threshold: float
    inputs: int

    @property
    def passed(self) -> bool:
        return self.cosine >= self.threshold

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def export_onnx(model: Bert, path: Path, settings: ExportSettings, seq_len: int = 128) -> None:
    """Write `model` as ONNX with dynamic batch and sequence axes, weights inside the file."""
    model = model.eval()
    example = token_batches(1, 1, min(seq_len, 16), model.vocab.vocab_size)[0]
    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
        if settings.exporter == "torchscript":
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=settings.opset,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        else:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", min=2)
            shapes = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                opset_version=max(settings.opset, 18),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes,
            )
            program.save(str(path), external_data=False)


def torch_outputs(model: Bert, inputs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    with torch.no_grad():
        return [
            model(*(torch.from_numpy(feed[name]) for name in INPUT_NAMES)).numpy()
            for feed in inputs
        ]


def measure_fidelity(
    onnx_path: Path,
    reference: list[np.ndarray],
    inputs: list[dict[str, np.ndarray]],
    threshold: float,
) -> Fidelity:
    """Cosine similarity and max abs difference of the ONNX model's outputs vs torch FP32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run([OUTPUT_NAME], feed)[0].ravel() for feed in inputs])
    want = np.concatenate([r.ravel() for r in reference])
    cosine = float(np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-30))
    return Fidelity(
        cosine=cosine,
        max_abs_diff=float(np.max(np.abs(got - want))),
        threshold=threshold,
        inputs=len(inputs),
    )
