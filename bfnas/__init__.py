"""bfnas: find BERT architectures that are fast as deployed (INT8, on a named device)."""

__version__ = "0.1.0"
