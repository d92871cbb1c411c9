"""The docstrings of this Python's standard library, read with `ast` (never imported): real
English prose present on every machine with Python, the offline source of the pretraining
corpus (`pretraining_data.stdlib_docstrings`) and of the classification task (`task_data`).
"""

from __future__ import annotations

import ast
import sysconfig
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Tests are mostly code and fixtures, and idlelib/lib2to3 are tools rather than library prose.
SKIPPED_PARTS = frozenset({"site-packages", "test", "tests", "idlelib", "lib2to3"})
_DOCUMENTED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Docstring:
    """One docstring: the source file (relative to the stdlib root), the top-level statement
    it sits in (a class's methods share their class's number: they are written together and
    often repeat each other), and the text as `ast.get_docstring` cleans it."""

    path: tuple[str, ...]
    top_level: int
    text: str

    @property
    def module(self) -> str:
        """The top-level module or package documented, as users import it (`_pydecimal`
        documents `decimal`, `_pyio` documents `io`)."""
        name = self.path[0].removesuffix(".py")
        return _PURE_PYTHON_TWINS.get(name, name)


_PURE_PYTHON_TWINS = {"_pydecimal": "decimal", "_pyio": "io", "_collections_abc": "collections"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_docstrings_iter(root: Path | None = None) -> Iterator[Docstring]:
    """Every module, class and function docstring of the standard library, in a fixed order
    (files sorted by path, nodes in source order), so what is built from them is
    deterministic for a given Python."""
    root = root or stdlib_root()
    for src in sorted(root.rglob("*.py")):
        rel = src.relative_to(root).parts
        if any(p in SKIPPED_PARTS for p in rel):
            continue
        try:
            tree = ast.parse(src.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node, top in _statements_breadth_first(tree):
            if node is tree or isinstance(node, _DOCUMENTED):
                doc = ast.get_docstring(node)
                if doc:
                    yield Docstring(rel, top, doc)


# What can hold a function or class definition: statements, and the `except` and `case`
# clauses whose bodies are statements. Expressions never do.
_HOLDERS = (ast.stmt, ast.excepthandler, ast.match_case)


def _statements_breadth_first(tree: ast.Module) -> Iterator[tuple[ast.AST, int]]:
    """`ast.walk`'s order (breadth first, fields in order), which the pretraining corpus has
    always had, over only the nodes that can hold a definition, each with the index of the
    top-level statement it sits in (-1 for the module). Leaving the expressions out keeps
    that order (they are leaves of the statement tree) and saves two thirds of the time."""
    todo: deque[tuple[ast.AST, int]] = deque([(tree, -1)])
    while todo:
        node, top = todo.popleft()
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if isinstance(child, _HOLDERS):
                        todo.append((child, i if node is tree else top))
        yield node, top
