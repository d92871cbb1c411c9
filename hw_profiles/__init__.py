"""The shipped hardware profiles (TOML files), installed as the data package `bfnas.hw_profiles`.

This file only makes the folder a regular package: setuptools' editable installs cannot
import a namespace package mapped through `package_dir` below a regular one, and
`importlib.resources` then finds the profiles the same way in a checkout, an editable install
and a wheel. `bfnas.bench.hardware_profile` reads them.
"""
