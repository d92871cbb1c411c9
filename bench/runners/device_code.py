"""The device code a host ships: the device package (`bench/device/`) as one zip a device's
Python runs (`python3 bfnas-device-<sha256>.pyz forkserver`), named by its hash.

A device then needs only Python >= 3.8 and its runtime (numpy and onnxruntime, or TensorRT
and pycuda): no bfnas, no pydantic, no torch. Because the host sends the code it speaks, by
hash as it sends models, host and device can never run two versions of the worker protocol.

The zip is built from this installation's files, byte for byte the same each time (sorted
names, a fixed timestamp and mode), so its hash changes exactly when the code does. In the
zip the package is `bfnas_device`, not `bfnas.bench.device`: nothing in it imports by
absolute name, and a device that has some bfnas installed never mixes the two.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import bfnas.bench.device as device_package

# The package's name inside the zip.
SHIPPED_NAME = "bfnas_device"
# Zip entries get this time and mode whatever the files' own: the bytes depend on the code only.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644 << 16
# The zip's entry point: `python CODE.pyz COMMAND ...` runs the package's `__main__`.
_ZIP_MAIN = f"""import runpy
runpy.run_module({SHIPPED_NAME!r}, run_name="__main__", alter_sys=True)
"""


# Runs the device code once without keeping it: `python -c EPHEMERAL_RUN N COMMAND ...` reads
# the zip's N bytes from stdin (what follows is the command's own input), writes them to a
# temporary file, runs the zip and deletes it. `hw check` probes a device this way, leaving
# nothing on it. Python 3.8 compatible, as all device code.
EPHEMERAL_RUN = """import os, runpy, sys, tempfile
n = int(sys.argv[1])
data = sys.stdin.buffer.read(n)
fd, path = tempfile.mkstemp(prefix="bfnas-device-", suffix=".pyz")
try:
    os.write(fd, data)
    os.close(fd)
    sys.argv = [path] + sys.argv[2:]
    runpy.run_path(path, run_name="__main__")
finally:
    os.unlink(path)
"""


@dataclass(frozen=True)
class DeviceCode:
    """The shipped zip: its bytes, their sha256, and the file name a device keeps it under."""

    data: bytes
    sha256: str

    @property
    def file_name(self) -> str:
        return f"bfnas-device-{self.sha256[:16]}.pyz"


def source_files(root: Path) -> list[tuple[str, Path]]:
    """(name in the zip, file) for every Python file of the device package at `root`, sorted."""
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted((f"{SHIPPED_NAME}/{p.relative_to(root).as_posix()}", p) for p in files)


@functools.cache
def device_code() -> DeviceCode:
    """The device package of this installation as a zip (built once per process)."""
    return build_device_code(Path(device_package.__file__).parent)


def build_device_code(root: Path) -> DeviceCode:
    """The device package at `root` as the zip a device runs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        entries = [("__main__.py", _ZIP_MAIN.encode())]
        entries += [(name, path.read_bytes()) for name, path in source_files(root)]
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = _FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    data = buffer.getvalue()
    return DeviceCode(data, hashlib.sha256(data).hexdigest())
