"""What a device that only times a file has to import: the recipe names and the profile without
onnx, the timing feed without torch or onnx. Each import runs in a fresh interpreter, since
this test process has long imported everything."""

import subprocess
import sys

import pytest


def loaded_after(module: str, watched: tuple[str, ...]) -> list[str]:
    """The `watched` top-level packages found in sys.modules once `module` is imported."""
    code = f"import sys, {module}\nprint(' '.join(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # Plain data: a recipe is named and checked with neither onnx nor numpy.
        ("bfnas.models.deploy.recipes", ("onnx", "numpy", "torch")),
        # A profile names its recipe; validating it must not pull onnx onto the device.
        ("bfnas.bench.hardware_profile", ("onnx", "torch")),
        # The input names and the token batches a device feeds the file it times.
        ("bfnas.models.deploy.encoder_io", ("onnx", "torch")),
        ("bfnas.bench.device.backends.ort", ("onnx", "torch")),
    ],
)
def test_light_modules_import_no_heavy_package(module, absent):
    assert loaded_after(module, absent) == []


def test_the_check_sees_a_heavy_import():
    # The quantizer needs onnx: were nothing ever reported, the test above would prove nothing.
    assert loaded_after("bfnas.models.deploy.quantize", ("onnx",)) == ["onnx"]
