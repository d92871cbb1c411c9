"""bfnas: find BERT architectures that are fast as deployed (INT8, on a named device)."""

from bfnas.version import bfnas_version

# Read from the package metadata: setup.cfg is the one place the version is written.
__version__ = bfnas_version()
