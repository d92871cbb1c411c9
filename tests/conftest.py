import os
from pathlib import Path

import pytest

# Tests run offline: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_SPACE = """
name = "tiny"
description = "small enough to export in a second"
uniform = false
layers = {min = 1, max = 2}
hidden = {min = 64, max = 128, step = 32}
heads = [1, 2, 4]
qkv = {min = 32, max = 128, step = 32}
ffn = {min = 64, max = 256, step = 64}
"""


@pytest.fixture(scope="session")
def tiny_space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.toml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture(scope="session")
def tiny_space(tiny_space_file):
    from bfnas.models.space import SearchSpace

    return SearchSpace.from_toml(tiny_space_file)


@pytest.fixture(scope="session")
def tiny_supernet(tiny_space):
    from bfnas.models.supernet import SuperBert, SupernetDims

    return SuperBert.random(SupernetDims.for_space(tiny_space), seed=0)


@pytest.fixture(scope="session")
def minilm_supernet():
    from bfnas.models.checkpoint import load_supernet

    return load_supernet("minilm")


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")
