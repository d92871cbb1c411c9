"""The search spaces that ship with bfnas (TOML files, found with importlib.resources)."""
