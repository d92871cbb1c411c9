"""The Python API: `bfnas` exposes the CLI's objects lazily, and docs/python-api.md runs.

Every ```python block of the page is run, in order, in one fresh interpreter in a temporary
folder: an example that no longer matches the code fails here, not in a reader's notebook.
Importing `bfnas` (or its light modules) must not pull in the heavy libraries: that is
checked in a fresh interpreter too, since this test process has imported them long ago.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bfnas

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "python-api.md"
HEAVY = ("torch", "onnx", "onnxruntime", "lightgbm")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return PYTHON_BLOCK.findall(text)


def run_python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(cwd)}  # the page's tempfile.mkdtemp lands in cwd
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def heavy_after(statements: str, tmp_path: Path) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running `statements`."""
    probe = textwrap.dedent(statements) + (
        f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = run_python(probe, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_page_has_an_example_for_each_task():
    text = PAGE.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 5
    code = "\n".join(blocks)
    # Each task the page promises: a profile, one subnet, many into a store, a predictor
    # fitted, saved, loaded and used, a search.
    tasks = ("load_profile(", "measure_subnet(", "ProfileJob(", ".fit(", ".save(", ".load(")
    more = (".predict(", "SearchJob(", "UntilTrustedJob(", "train_task_model(", "load_classifier(")
    for call in (*tasks, *more):
        assert call in code, call


@pytest.mark.slow  # ~20 s: it measures 14 subnets and runs a small search
def test_every_example_on_the_page_runs_in_order(tmp_path):
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    # One namespace: each block is exec'd in turn, and a failure names the block it was in.
    driver = textwrap.dedent(f"""
        import traceback
        blocks = {blocks!r}
        namespace = {{"__name__": "__main__"}}
        for i, block in enumerate(blocks, 1):
            print(f"--- block {{i}}", flush=True)
            try:
                exec(compile(block, f"python-api.md block {{i}}", "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                raise SystemExit(f"block {{i}} of {{len(blocks)}} failed")
        print("--- all blocks ran", flush=True)
    """)
    done = run_python(driver, tmp_path)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert out.rstrip().endswith("--- all blocks ran")
    # What the blocks print shows they did their work, not only that they did not raise.
    assert "refused:" in out and "missing.toml" in out
    assert re.search(r"^(ok|unstable) ", out, re.M)  # the one subnet's trust verdict
    assert re.search(r"^12 already stored$", out, re.M)  # the rerun measured nothing again
    assert re.search(r"^stopped: (trusted|max-subnets) after [1-9]\d* estimates$", out, re.M)
    assert re.search(r"^within budget: (True|False)$", out, re.M)
    assert re.search(r"^INT8 raw median \d+\.\d{3} ms \[(ok|unstable)\]$", out, re.M)
    assert len(re.findall(r"^(weather|cooking) 0\.\d+$|^(weather|cooking) 1\.0$", out, re.M)) == 2
    # The example wrote its files under its own temporary folder, here.
    made = [p for p in tmp_path.iterdir() if p.name.startswith("bfnas-example-")]
    assert len(made) == 1
    work = made[0]
    assert (work / "lat.db").is_file() and (work / "predictor" / "predictor.json").is_file()
    assert all((work / "model" / f).is_file() for f in ("model.int8.onnx", "README.md"))


@pytest.mark.parametrize(
    "statements",
    [
        "import bfnas",
        "import bfnas.models",
        "import bfnas.models.space.search_space, bfnas.models.space.subnet",
        # Listing the public names and touching the light ones imports nothing heavy.
        "import bfnas\ndir(bfnas)\nbfnas.__all__\nbfnas.InputError\nbfnas.SubnetConfig\n"
        "bfnas.load_space\nbfnas.LatencyStore\nbfnas.load_profile\nbfnas.HardwareProfile",
    ],
    ids=["bfnas", "bfnas.models", "space-modules", "light-names"],
)
def test_importing_bfnas_loads_no_heavy_library(statements, tmp_path):
    assert heavy_after(statements, tmp_path) == []


def test_a_heavy_name_is_imported_when_first_used(tmp_path):
    # The other side of laziness: the name works, and only then is its library loaded.
    loaded = heavy_after("import bfnas\nbfnas.LatencyPredictor", tmp_path)
    assert "lightgbm" in loaded


def test_every_public_name_resolves_to_the_object_the_cli_uses():
    from bfnas.bench.jobs.context import open_setup
    from bfnas.bench.jobs.profiling import ProfileJob
    from bfnas.search.loop import SearchJob

    assert bfnas.open_setup is open_setup
    assert bfnas.ProfileJob is ProfileJob and bfnas.SearchJob is SearchJob
    for name in bfnas.__all__:
        assert getattr(bfnas, name) is not None, name
    assert set(bfnas.__all__) <= set(dir(bfnas))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        bfnas.no_such_thing  # noqa: B018
