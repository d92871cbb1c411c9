"""The library (bfnas.bench, bfnas.search, bfnas.models) is called from Python too, where a CLI
flag means nothing: its messages name a setting by the library's own name (`InputError`'s
`setting=`, `InputError.bad_setting`), and the CLI prints the flag the running command spells
it as (`bfnas.cli.setting_flag`). No string the library can show a user holds flag text.

Every str constant of every module under bench/, search/ and models/ is read (f-string parts
included; docstrings and bare string statements are documentation, not messages). The few
strings that hold a flag but are not bfnas messages are allowed below, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("bench", "search", "models")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

# (file, a substring of the literal): why that literal is not a bfnas message naming a flag.
ALLOWED: dict[tuple[str, str], str] = {
    ("bench/device/__main__.py", " probe --json - < profile.json"): (
        "the device package's own command line (`python -m bfnas.bench.device`): its usage"
    ),
    ("bench/device/probe.py", "--json"): (
        "the device package's own command line: the `probe` argparse definition and epilog"
    ),
    ("bench/device/worker.py", "--job"): (
        "the device package's own command line: the `worker` argparse definition and epilog"
    ),
    ("bench/runners/local.py", "--job"): "subprocess argv: `bfnas.bench.device worker --job -`",
    ("bench/runners/ssh.py", " probe --json -"): "a remote shell command line, not a message",
    ("bench/runners/adb.py", "build.py --android_abi "): (
        "the onnxruntime harness build script's flag (another tool's command line)"
    ),
    ("bench/runners/perf_test.py", "onnxruntime_perf_test --help"): (
        "a line onnxruntime_perf_test prints, matched in its output (not ours)"
    ),
    ("bench/runners/ray.py", "ray start --head --port "): "Ray's own command line (`ray start`)",
    ("bench/runners/ray.py", "ray start --address ... --resources "): (
        "Ray's own command line (`ray start`)"
    ),
    ("models/deploy/classifier_package.py", "bfnas task predict --model "): (
        "the model card (README.md) written into a model folder: documentation of the CLI"
    ),
    ("models/deploy/classifier_package.py", ' --text "..."'): (
        "the model card (README.md) written into a model folder: documentation of the CLI"
    ),
    ("models/deploy/classifier_package.py", "(`--int8-aware` trains as the INT8 file runs)"): (
        "the model card (README.md) written into a model folder: documentation of the CLI"
    ),
}


def _documentation(tree: ast.AST) -> set[int]:
    """The ids of string constants that are statements: docstrings, and strings standing
    alone as a comment would."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def flag_texts(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, literal) of every str constant in `source` holding CLI flag text, f-string
    parts included, docstrings left out."""
    tree = ast.parse(source, filename)
    docs = _documentation(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and FLAG.search(node.value)
    )


def violations(source: str, filename: str) -> list[str]:
    """The literals of `source` (the file `filename`, relative to the repository) that hold
    flag text and are not allowed."""
    return [
        f"{filename}:{line}: {text!r}"
        for line, text in flag_texts(source, filename)
        if not any(path == filename and part in text for path, part in ALLOWED)
    ]


def _library_files() -> list[Path]:
    return sorted(p for root in LIBRARY for p in (REPO / root).rglob("*.py"))


def test_library_messages_name_settings_never_cli_flags():
    files = _library_files()
    assert len(files) > 50  # the library was found
    found = [
        v
        for path in files
        for v in violations(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())
    ]
    assert not found, (
        "library strings holding CLI flag text: name the setting instead (InputError's "
        "setting=, InputError.bad_setting; the CLI prints its flag):\n" + "\n".join(found)
    )


def test_every_allowed_literal_is_still_there():
    """An allow-list entry whose string is gone is removed, not kept as a hole."""
    held = {
        (path.relative_to(REPO).as_posix(), text)
        for path in _library_files()
        for _, text in flag_texts(path.read_text(encoding="utf-8"))
    }
    stale = [key for key in ALLOWED if not any(f == key[0] and key[1] in t for f, t in held)]
    assert not stale, f"ALLOWED entries no library string holds any more: {stale}"


@pytest.mark.parametrize(
    "source",
    [
        'raise InputError("x", None, "pass --task-dir DIR")\n',
        'def f(d):\n    raise InputError(d, None, f"{d}: use a new --out folder")\n',
        'raise InputError.bad_setting("db", "run `bfnas profile --hw X` " "first")\n',
        'ANOTHER = "give another --db"\n',
    ],
)
def test_the_check_catches_flag_text(source):
    assert violations(source, "search/example.py")


def test_the_allow_list_is_per_file():
    source = 'p.add_argument("--json", action="store_true")\n'
    assert violations(source, "bench/device/probe.py") == []
    assert violations(source, "search/example.py") == ["search/example.py:1: '--json'"]


@pytest.mark.parametrize(
    "source",
    [
        '"""Module docstring: `bfnas search --task-dir DIR` is documentation."""\n',
        'def f():\n    """Called by `bfnas profile --until`."""\n',
        "x = 1  # a comment naming --out\n",
        'raise InputError.bad_setting("task_dir", "the task folder is needed")\n',
        'cmd = ["ls", "-l", "--", name]\n',  # a bare `--` ends options; no flag named
        'rate = "0.5--0.9"\n',
    ],
)
def test_the_check_leaves_documentation_and_plain_text(source):
    assert violations(source, "search/example.py") == []


def test_an_input_error_names_the_setting_and_the_cli_its_flag(capsys):
    """What a library message without flags becomes on each side: the setting's name from
    Python, the flag of the running command in the CLI's one line."""
    from bfnas.cli import build_parser, setting_flag
    from bfnas.errors import InputError

    err = InputError.bad_setting("task_dir", "the task folder is needed")
    assert str(err) == "task_dir: the task folder is needed"
    parser = build_parser()
    args = parser.parse_args(
        ["search", "--hw", "h", "--space", "s", "--db", "d", "--max-latency-ms", "1", "--out", "o"]
    )
    assert err.line(setting_flag(parser, args, err.setting)) == (
        "--task-dir: the task folder is needed"
    )
