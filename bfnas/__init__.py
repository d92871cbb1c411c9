"""bfnas: find BERT architectures that are fast as deployed (INT8, on a named device)."""

# The one place for the version: setup.cfg reads it (`version = attr: bfnas.__version__`).
__version__ = "0.1.0"
