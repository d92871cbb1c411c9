"""`bfnas data task`: the offline classification task made from the standard library's
docstrings (real prose, no download)."""

import json
import re
from pathlib import Path

import pytest

from bfnas.cli import main
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.task_data import (
    Example,
    TaskDataSettings,
    build_task,
    remove_near_duplicates,
    sentences,
    split_examples,
    stdlib_examples,
)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("task")
    return out, build_task(out)


def rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]


def words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def test_the_default_task_is_as_large_as_the_issue_asks_and_glue_readable(task):
    out, manifest = task
    train, dev = rows(out / "train.tsv"), rows(out / "dev.tsv")
    assert len({label for _, label in train}) >= 8
    assert len(train) >= 4000 and len(dev) >= 1000
    assert (manifest["train_examples"], manifest["dev_examples"]) == (len(train), len(dev))
    assert {label for _, label in dev} <= {label for _, label in train}
    assert all(len(r) == 2 and r[0].strip() == r[0] and r[0] for r in train + dev)
    glue = read_task(out)
    assert not glue.pair and glue.label_names == tuple(manifest["labels"])
    assert len(glue.train.a) == len(train) and len(glue.dev.a) == len(dev)
    # Balanced enough that the majority class is far from the whole of dev.
    majority = max(v["dev"] for v in manifest["per_label"].values())
    assert majority < 0.25 * len(dev)


def test_dev_holds_no_repeat_or_near_duplicate_of_train(task):
    out, manifest = task
    train, dev = rows(out / "train.tsv"), rows(out / "dev.tsv")
    train_words = {words(t) for t, _ in train}
    assert not any(words(t) in train_words for t, _ in dev)
    assert len({words(t) for t, _ in dev}) == len(dev)
    grams = {w[i : i + 3] for w in train_words for i in range(max(1, len(w) - 2))}
    threshold = manifest["settings"]["near_duplicate"]
    for text, _ in dev:
        w = words(text)
        mine = {w[i : i + 3] for i in range(max(1, len(w) - 2))}
        assert len(mine & grams) < threshold * len(mine), text
    assert manifest["dropped"]["near_duplicate_of_train"] > 0  # the filter had work to do


def test_qualified_names_do_not_spell_out_the_label(task):
    out, manifest = task
    prefix = re.compile(rf"(?<![\w.])_?(?:{'|'.join(manifest['labels'])})\.[A-Za-z_]")
    texts = [t for t, _ in rows(out / "train.tsv") + rows(out / "dev.tsv")]
    assert not [t for t in texts if prefix.search(t)]


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return stdlib_examples(TaskDataSettings())[0]


def test_the_split_keeps_every_group_on_one_side(examples):
    settings = TaskDataSettings()
    train, dev = split_examples(examples, settings)
    assert not {e.group for e in train} & {e.group for e in dev}
    share = len(dev) / (len(train) + len(dev))
    assert abs(share - settings.dev_fraction) < 0.03
    for label in {e.label for e in examples}:
        kept = sum(e.label == label for e in train + dev)
        assert kept <= settings.max_per_class


def test_the_same_python_and_settings_give_the_same_bytes_and_a_seed_moves_groups(
    task, examples, tmp_path
):
    out, manifest = task
    again = build_task(tmp_path / "again")
    assert again["files"] == manifest["files"]
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    # Another seed puts other groups in dev (and shuffles the rows: `build_task`).
    dev0 = {e.group for e in split_examples(examples, TaskDataSettings())[1]}
    dev1 = {e.group for e in split_examples(examples, TaskDataSettings(seed=1))[1]}
    assert dev0 != dev1


def test_a_sentence_under_two_labels_is_dropped_from_both_splits():
    s = TaskDataSettings()
    train = [
        Example("Return the value of the option.", "a", "g1"),
        Example("x y z w v u", "a", "g2"),
    ]
    dev = [Example("Return the value of the option!", "b", "g3"), Example("p q r s t", "b", "g4")]
    kept_train, kept_dev, dropped = remove_near_duplicates(train, dev, s)
    assert [e.group for e in kept_train] == ["g2"] and [e.group for e in kept_dev] == ["g4"]
    assert dropped == {"ambiguous": 2}


def test_sentences_skip_doctests_code_and_out_of_range_lengths():
    settings = TaskDataSettings(min_words=4, max_words=12)
    text = (
        "Open the file and read every line of it.  Short one.\n\n"
        ">>> open('x').read()\n'data'\n\n"
        "x = {'a': [1, 2], 'b': (3, 4)} ; y = x['a'][0] ** 2\n\n"
        "A sentence that goes on and on well past the twelve words the settings allow here."
    )
    assert sentences(text, settings) == ["Open the file and read every line of it."]


def test_cli_writes_the_task_and_reports_it_as_json(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["data", "task", "--out", str(out), "--classes", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["labels"]) == 8
    assert json.loads((out / "task.json").read_text())["files"] == report["files"]
    assert read_task(out).label_names == tuple(report["labels"])


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--classes", "1"], "--classes"),
        (["--dev-fraction", "0.9"], "--dev-fraction"),
        (["--max-per-class", "3"], "--max-per-class"),
        (["--min-words", "70"], "--min-words"),
        (["--near-duplicate", "0"], "--near-duplicate"),
    ],
)
def test_bad_settings_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, flag):
    out = tmp_path / "t"
    assert main(["data", "task", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("mine")
    assert main(["data", "task", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and out.read_text() == "mine"


def test_docstrings_come_in_ast_walks_order_with_their_top_level_statement(tmp_path):
    # The short walk over statements must give what a full ast.walk gives (the order the
    # pretraining corpus has always had), definitions nested in every kind of block included.
    import ast

    from bfnas.models.train.stdlib_text import stdlib_docstrings_iter

    source = '''"""Module."""
if X:
    def a():
        """In an if."""
        class B:
            """Nested class."""
            def c(self):
                """Its method."""
try:
    pass
except ValueError:
    def d():
        """In a handler."""
finally:
    class E:
        """In finally."""
match y:
    case 1:
        def f():
            """In a case."""
def g(x=lambda: 1):
    """After the blocks."""
    for i in x:
        with open(i):
            def h():
                """Deep."""
'''
    (tmp_path / "mod.py").write_text(source)
    tree = ast.parse(source)
    top_of = {id(n): i for i, top in enumerate(tree.body) for n in ast.walk(top)}
    want = [
        (top_of.get(id(n), -1), ast.get_docstring(n))
        for n in ast.walk(tree)
        if n is tree or isinstance(n, ast.FunctionDef | ast.ClassDef)
    ]
    got = [(d.top_level, d.text) for d in stdlib_docstrings_iter(tmp_path)]
    assert got == want and len(got) == 9
