"""`bfnas_version`: the version this code records in what it writes (artifacts, device probes),
read from the installed package's metadata, so a lower layer never imports `bfnas` itself."""

from __future__ import annotations

from importlib import metadata


def bfnas_version() -> str:
    try:
        return metadata.version("bfnas")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
