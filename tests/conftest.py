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


FAST_PROFILE = """
name = "test-cpu-int8"
description = "this machine, measured briefly: for tests only"
precision = "int8"
[runtime]
intra_op_threads = 1
[quantization]
recipe = "dynamic"
[measure]
warmup_runs = 2
warmup_seconds = 0.0
min_runs = 10
min_seconds = 0.02
max_seconds = 0.3
timeout_s = 120
drift_every = 3
# Tests check the pipeline, not how quiet the machine is: a busy CI host must not turn
# their measurements "unstable" (tests of the marking itself use their own profiles).
max_cov = 1.0
max_other_cpu = 8.0
"""


@pytest.fixture(scope="session")
def fast_profile_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hw") / "test-cpu-int8.toml"
    path.write_text(FAST_PROFILE)
    return path


SHARED = Path(os.environ.get("BFNAS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SEED_FILE = SHARED / "data" / "seed-latency-fp32.tsv"


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory) -> tuple[Path, dict]:
    """The standard library's docstrings as a corpus (real prose, made here, offline), and
    the counts `stdlib_docstrings` reported."""
    from bfnas.models.pretraining import stdlib_docstrings

    path = tmp_path_factory.mktemp("corpus") / "stdlib.txt"
    return path, stdlib_docstrings(path)


def corpus_head(corpus: Path, lines: int, out: Path) -> Path:
    """The first `lines` lines of a corpus, as a file of their own."""
    out.write_text("\n".join(corpus.read_text().splitlines()[:lines]) + "\n")
    return out
