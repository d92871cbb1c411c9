"""Reading the engine inspector: which precision each layer of a built engine really runs
in (`layer_precisions`, pure: tested on CPU on inspector JSON), and asking a built engine
for that JSON (`inspect_precisions`, needs TensorRT).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

_PRECISIONS = (  # (substring of "Format/Datatype", precision); first match wins
    ("int8", "int8"),
    ("fp8", "fp8"),
    ("int4", "int4"),
    ("bf16", "bf16"),
    ("half", "fp16"),
    ("fp16", "fp16"),
    ("float", "fp32"),
    ("fp32", "fp32"),
)
_ORDER = ("int4", "int8", "fp8", "fp16", "bf16", "fp32")
BOOKKEEPING_LAYERS = frozenset({"Reformat", "NoOp"})


def tensor_precision(fmt: str) -> str | None:
    """ "Row major linear Int8 format" -> "int8"; None for index/bool tensors or "N/A"."""
    low = fmt.lower()
    if not low or low.startswith("n/a") or any(t in low for t in ("int32", "int64", "bool")):
        return None
    for needle, precision in _PRECISIONS:
        if needle in low:
            return precision
    return None


def layer_precisions(info: str | dict) -> dict[str, Any]:
    """Per-layer precision shares from `IEngineInspector.get_engine_information(JSON)`.

    A layer's precision is the lowest among its input tensors (an INT8 GEMM reads int8 and
    may write float). Reformat and NoOp layers are format bookkeeping, not compute, and are
    left out. Layers compiled by Myelin (TensorRT's fused-graph compiler, LayerType
    "Myelin") show only their boundary tensors, so their inner precision is unknown: they
    are counted apart, and `int8_share` is over the layers whose precision could be read.
    Engines built without ProfilingVerbosity.DETAILED list names only: `detailed` is False.
    """
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        return {"detailed": False, "layers": len(layers)}
    counts: Counter[str] = Counter()
    myelin = bookkeeping = 0
    for layer in layers:
        kind = str(layer.get("LayerType", ""))
        if kind in BOOKKEEPING_LAYERS:
            bookkeeping += 1
            continue
        if kind == "Myelin":
            myelin += 1
            continue
        found = {
            tensor_precision(str(t.get("Format/Datatype", "")))
            for t in layer.get("Inputs", [])
            if isinstance(t, dict)
        }
        found.discard(None)
        counts[min(found, key=_ORDER.index) if found else "unknown"] += 1
    known = sum(v for k, v in counts.items() if k != "unknown")
    return {
        "detailed": True,
        "layers": len(layers),
        "bookkeeping": bookkeeping,
        "myelin": myelin,
        "by_precision": dict(sorted(counts.items())),
        "int8_share": counts["int8"] / known if known else None,
    }


def inspect_precisions(trt, engine, context) -> dict[str, Any]:
    """Per-layer precision shares from the engine inspector. The context (with its input
    shapes set) is attached so dynamic-shape formats are resolved, not "N/A"."""
    inspector = engine.create_engine_inspector()
    try:
        inspector.execution_context = context  # TensorRT >= 10
    except AttributeError:
        inspector.context = context  # TensorRT 8.x
    return layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
