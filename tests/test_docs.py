"""The README and the pages under docs/ stay short where promised, link to files that exist, and
show only `bfnas` commands the real command line accepts.

Commands in code blocks are parsed, never run: with the parser `bfnas.cli.build_parser` builds,
so a renamed subcommand or flag breaks this test instead of a reader's first try.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from bfnas.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_MAX_LINES = 250
# Pages that other work is writing. A link to one of them is accepted while the file is
# missing, and only then; the maintainer empties this set once both pages exist.
PENDING_PAGES: frozenset[str] = frozenset()
# `bfnas` command lines in code blocks that the parser cannot take as they are (a placeholder
# standing for several flags, say), each with the reason. Keep it small: a complete command
# is what a reader can copy.
UNPARSABLE_COMMANDS: dict[str, str] = {}

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHORT_FLAG = re.compile(r"^-[A-Za-z]$")


def pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[list[tuple[int, str]]]]:
    """(numbered lines outside code blocks, the numbered lines of each fenced code block)."""
    prose: list[tuple[int, str]] = []
    blocks: list[list[tuple[int, str]]] = []
    block: list[tuple[int, str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is None:
            prose.append((number, line))
        else:
            block.append((number, line))
    return prose, blocks


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered -1, -2, ..."""
    anchors: set[str] = set()
    for _, line in split_fences(text)[0]:
        m = HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in anchors:
            n += 1
            unique = f"{slug}-{n}"
        anchors.add(unique)
    return anchors


def broken_links(page: Path, text: str, pending: frozenset[str] = PENDING_PAGES) -> list[str]:
    """Relative links of `page` whose file (or heading anchor) does not exist."""
    found = []
    for number, line in split_fences(text)[0]:
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.name}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(REPO):
                found.append(f"{where} (outside the repository)")
                continue
            if not resolved.exists():
                if resolved.relative_to(REPO).as_posix() not in pending:
                    found.append(f"{where} (no such file)")
                continue
            if (
                anchor
                and resolved.suffix == ".md"
                and anchor not in heading_anchors(resolved.read_text(encoding="utf-8"))
            ):
                found.append(f"{where} (no heading #{anchor} in {resolved.name})")
    return found


@dataclass(frozen=True)
class DocCommand:
    where: str  # page:line
    text: str  # the logical line, continuations joined
    args: list[str]  # what follows `bfnas` (or `-m bfnas.cli`)


def bfnas_args(tokens: list[str]) -> list[str] | None:
    """The arguments of a bfnas invocation (`bfnas ...`, `python -m bfnas.cli ...`,
    `torchrun ... -m bfnas.cli ...`), or None when the line runs something else."""
    words = list(tokens)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words and Path(words[0]).name == "bfnas":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "bfnas.cli":
            return words[i + 2 :]
    return None


def looks_like_bfnas(line: str) -> bool:
    first = next((w for w in line.split() if not ENV_ASSIGNMENT.match(w)), "")
    return Path(first).name == "bfnas" or "-m bfnas.cli" in line


def commands_in(page_name: str, text: str) -> tuple[list[DocCommand], list[str]]:
    """Every bfnas command line in the page's code blocks, and the lines shlex cannot split."""
    commands, unsplittable = [], []
    for block in split_fences(text)[1]:
        logical: list[tuple[int, str]] = []
        pending_line: tuple[int, str] | None = None
        for number, line in block:
            if pending_line is not None:
                pending_line = (pending_line[0], pending_line[1] + " " + line.strip())
            else:
                pending_line = (number, line.strip())
            if pending_line[1].endswith("\\"):
                pending_line = (pending_line[0], pending_line[1][:-1].rstrip())
                continue
            logical.append(pending_line)
            pending_line = None
        if pending_line is not None:
            logical.append(pending_line)
        for number, line in logical:
            if not looks_like_bfnas(line):
                continue
            where = f"{page_name}:{number}"
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                unsplittable.append(f"{where}: {exc}: {line}")
                continue
            args = bfnas_args(tokens)
            if args is not None:
                commands.append(DocCommand(where, line, args))
    return commands, unsplittable


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_problems(args: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Why the real parser would not take `bfnas ARGS`: a subcommand it does not have, a flag
    the subcommand does not have (spelled out in full: argparse would accept an abbreviation,
    which breaks as soon as a second flag shares the prefix), or anything argparse refuses."""
    node, path, rest = parser, ["bfnas"], list(args)
    while (choices := subparsers_of(node)) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name not in choices:
            return [
                f"`{' '.join(path)}` has no subcommand {name!r} "
                f"(it has: {', '.join(sorted(choices))})"
            ]
        node = choices[name]
        path.append(name)
    if subparsers_of(node):
        return [f"`{' '.join(path)}` needs a subcommand"]
    known = {flag for action in node._actions for flag in action.option_strings}
    problems = [
        f"`{' '.join(path)}` has no flag {flag}"
        for flag in (token.split("=", 1)[0] for token in rest)
        if (flag.startswith("--") or SHORT_FLAG.match(flag)) and flag not in known
    ]
    if not problems:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):  # 0: a --help in the example
                problems.append(err.getvalue().strip() or f"argparse exit {exc.code}")
    return problems


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference to docs/"
    )


def test_every_relative_link_points_at_a_file_that_exists():
    found = [
        problem
        for page in pages()
        for problem in broken_links(page, page.read_text(encoding="utf-8"))
    ]
    assert not found, "broken links:\n" + "\n".join(found)


def test_every_bfnas_command_in_a_code_block_parses():
    parser = build_parser()
    found, problems, seen = [], [], set()
    for page in pages():
        commands, unsplittable = commands_in(page.name, page.read_text(encoding="utf-8"))
        problems.extend(unsplittable)
        for cmd in commands:
            found.append(cmd)
            if cmd.text in UNPARSABLE_COMMANDS:
                seen.add(cmd.text)
                continue
            problems.extend(
                f"{cmd.where}: {p}\n    {cmd.text}" for p in command_problems(cmd.args, parser)
            )
    # The walk must really see the examples: the README alone shows a dozen.
    assert len(found) >= 40, [c.text for c in found]
    assert any("-m bfnas.cli" in c.text for c in found)  # torchrun lines are checked too
    stale = sorted(set(UNPARSABLE_COMMANDS) - seen)
    assert not stale, f"UNPARSABLE_COMMANDS entries no page shows any more: {stale}"
    assert not problems, "commands in the docs that bfnas would refuse:\n" + "\n".join(problems)


# The checks themselves must fail on what they are there to catch.


def test_link_check_catches_a_missing_file_and_anchor():
    page = REPO / "docs" / "measuring.md"
    assert broken_links(page, "see [x](no-such-page.md)")
    assert broken_links(page, "see [x](devices.md#no-such-heading)")
    assert broken_links(page, "see [x](#no-such-heading)")
    # Two folders up from docs/ is outside the checkout (spelled in parts: test_self_contained
    # flags any tracked file that names such a path).
    assert broken_links(page, "see [x](" + "../" * 2 + "outside.md)")
    assert not broken_links(page, "see [x](devices.md#add-your-device) and [y](../README.md)")
    assert not broken_links(page, "see [x](https://example.org/missing.md)")
    assert not broken_links(page, "`[x](no-such-page.md)` in inline code is not a link")
    assert not broken_links(page, "```\n[x](no-such-page.md)\n```")


def test_a_pending_page_is_accepted_only_through_the_allow_list():
    page = REPO / "docs" / "index.md"
    text = "see [x](not-written-yet.md)"
    assert broken_links(page, text, pending=frozenset())
    assert not broken_links(page, text, pending=frozenset({"docs/not-written-yet.md"}))


def test_heading_anchors_follow_github():
    text = "# Stage 1: data, the `supernet`\n## Measured\n## Measured\n```\n# not a heading\n```"
    assert heading_anchors(text) == {"stage-1-data-the-supernet", "measured", "measured-1"}


def test_command_check_catches_unknown_subcommands_and_flags():
    parser = build_parser()
    ok = ["profile", "--hw", "local-cpu-int8", "--space", "bigger-faster", "--samples", "3"]
    assert not command_problems(ok, parser)
    assert command_problems(["hw", "chek", "local-cpu-int8"], parser)
    assert command_problems(["db"], parser)
    assert command_problems([*ok, "--no-such-flag"], parser)
    assert command_problems([*ok, "--sampl", "4"], parser)  # an abbreviation argparse accepts
    assert command_problems(["search", "--hw", "local-cpu-int8"], parser)  # required flags
    assert command_problems(
        ["supernet", "train", "--data", "d/", "--out", "o/", "--device", "tpu"], parser
    )  # not one of the choices


def test_commands_are_found_across_continuations_and_launchers():
    text = (
        "```sh\n"
        "bfnas profile --hw local-cpu-int8 --space bigger-faster \\\n"
        "    --samples 3 --no-such-flag   # a comment --not-a-flag\n"
        "BFNAS_X=1 torchrun --nproc_per_node=2 -m bfnas.cli supernet train --data d/\n"
        "make demo\n"
        "```\n"
        "bfnas hw chek   (prose is not checked)\n"
    )
    commands, unsplittable = commands_in("x.md", text)
    assert not unsplittable
    assert [c.args[:2] for c in commands] == [["profile", "--hw"], ["supernet", "train"]]
    assert commands[0].where == "x.md:2" and "--not-a-flag" not in commands[0].args
    assert command_problems(commands[0].args, build_parser()) == [
        "`bfnas profile` has no flag --no-such-flag"
    ]
