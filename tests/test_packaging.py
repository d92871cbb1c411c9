"""The wheel ships the data bfnas needs at run time: the hardware profiles and the search spaces.

The wheel is built (no isolation, no network) from a copy of the source tree: a checkout's
own `build/` and `*.egg-info` keep files from earlier builds, which would hide a file that
the packaging configuration no longer ships.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bfnas

ROOT = Path(__file__).resolve().parent.parent
# Build outputs, caches and environments: never part of what a build should read.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "artifacts",
    "runs",
    "bfnas-demo",
    "*.onnx",
    "*.onnx.data",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list((tmp / "dist").glob("bfnas-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.parametrize(
    ("folder", "package"),
    [
        ("hw_profiles", "bfnas/hw_profiles"),
        ("models/space/presets", "bfnas/models/space/presets"),
    ],
)
def test_wheel_ships_every_toml(wheel: Path, folder: str, package: str) -> None:
    expected = sorted(p.name for p in (ROOT / folder).glob("*.toml"))
    assert expected, f"no TOML files in {folder}/"
    names = wheel_names(wheel)
    missing = [name for name in expected if f"{package}/{name}" not in names]
    assert not missing, f"{wheel.name} lacks {package}/{missing}"


def test_wheel_ships_the_profiles_package(wheel: Path) -> None:
    # importlib.resources finds the profiles through this package (bench.hardware_profile).
    assert "bfnas/hw_profiles/__init__.py" in wheel_names(wheel)


def test_wheel_version_is_the_package_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(meta_name))
    assert meta["Version"] == bfnas.__version__
    assert wheel.name.startswith(f"bfnas-{bfnas.__version__}-")


def test_the_recorded_version_is_the_package_version():
    """Artifacts and device probes record `bfnas_version()`, read from the installed package's
    metadata: the version setup.cfg declares, the one place it is written."""
    import configparser

    import bfnas
    from bfnas.version import bfnas_version

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    assert bfnas_version() == cfg["metadata"]["version"] == bfnas.__version__
