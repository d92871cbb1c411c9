"""INT8 recipes: a name plus every setting that changes the quantized graph. The settings are
recorded with each artifact, so a latency can always be traced to the graph that produced it.

Plain data, importing neither onnx nor numpy: a profile names its recipe and is validated on
devices that only time a file (`bench.hardware_profile`); `quantize` applies a recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bfnas.errors import InputError


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str  # "dynamic" | "static"
    activation_type: str  # "uint8" | "int8" (dynamic: always uint8, chosen at run time)
    weight_type: str  # "int8"
    per_channel: bool
    symmetric_activations: bool
    op_types: tuple[str, ...] | None  # None: ONNX Runtime's default set for the method
    calibration_samples: int = 0
    calibration_method: str = "minmax"
    fuse: bool = False  # ORT transformer-optimizer fusion before quantizing

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types else None
        return d


RECIPES: dict[str, Recipe] = {
    # Weights int8 ahead of time, activations uint8 scaled per run: no calibration data.
    "dynamic": Recipe(
        name="dynamic",
        method="dynamic",
        activation_type="uint8",
        weight_type="int8",
        per_channel=False,
        symmetric_activations=False,
        op_types=None,
    ),
    # Static QDQ the way x86 CPUs run it fastest: uint8 activations (VNNI's u8 x s8).
    "qdq": Recipe(
        name="qdq",
        method="static",
        activation_type="uint8",
        weight_type="int8",
        per_channel=True,
        symmetric_activations=False,
        op_types=("MatMul", "Gemm"),
        calibration_samples=16,
    ),
    # TensorRT's explicit quantization: int8 both sides, zero-point 0, GEMMs only.
    "qdq-symmetric": Recipe(
        name="qdq-symmetric",
        method="static",
        activation_type="int8",
        weight_type="int8",
        per_channel=True,
        symmetric_activations=True,
        op_types=("MatMul", "Gemm"),
        calibration_samples=16,
    ),
}


def get_recipe(name: str, fuse: bool = False, calibration_samples: int | None = None) -> Recipe:
    if name not in RECIPES:
        raise InputError.bad_setting(
            "recipe", f"unknown recipe {name!r} (known: {', '.join(RECIPES)})"
        )
    recipe = replace(RECIPES[name], fuse=fuse)
    if calibration_samples is not None and recipe.method == "static":
        recipe = replace(recipe, calibration_samples=calibration_samples)
    return recipe
