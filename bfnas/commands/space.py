"""`bfnas space list|show|sample`."""

from __future__ import annotations

import argparse
import random
import sys

from bfnas.commands.common import EXIT_OK, command, console, group, print_json
from bfnas.errors import InputError


def register(sub) -> None:
    space = group(sub, "space", "search spaces: list, show, sample", "bfnas space show minilm-l6")
    p = command(
        space, "list", "list the shipped search spaces", "bfnas space list --json", cmd_list
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        space, "show", "ranges and size of a space", "bfnas space show bigger-faster", cmd_show
    )
    p.add_argument("space", help="a shipped space name or a .toml file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        space,
        "sample",
        "sample architectures from a space",
        "bfnas space sample minilm-l6 -n 5 --seed 0 --json",
        cmd_sample,
    )
    p.add_argument("space", help="a shipped space name or a .toml file")
    p.add_argument("-n", type=int, default=5, help="how many (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON array of architectures")


def cmd_list(args: argparse.Namespace) -> int:
    from bfnas.models.space.search_space import load_space, shipped_spaces

    rows = []
    for name in shipped_spaces():
        s = load_space(name)
        rows.append(
            {
                "name": name,
                "uniform": s.uniform,
                "architectures": s.count(),
                "description": s.description,
            }
        )
    if args.json:
        return print_json(rows)
    from rich.table import Table

    table = Table("space", "uniform", "architectures", "description")
    for r in rows:
        table.add_row(r["name"], str(r["uniform"]), f"{r['architectures']:,}", r["description"])
    console().print(table)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from bfnas.models.space.search_space import load_space

    info = load_space(args.space).describe()
    if args.json:
        return print_json(info)
    from rich.table import Table

    table = Table("field", "value", title=f"space {info['name']}", show_header=False)
    for k, v in info.items():
        if k != "name":
            table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    console().print(table)
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from bfnas.models.space.search_space import load_space

    if args.n < 1:
        raise InputError("-n", None, f"must be at least 1, got {args.n}")
    space = load_space(args.space)
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    if args.json:
        # One canonical architecture per line: valid JSON that is also easy to read and grep.
        sys.stdout.write("[\n" + ",\n".join("  " + a.to_json() for a in archs) + "\n]\n")
        return EXIT_OK
    from rich.table import Table

    table = Table("key", "architecture", "params (M)", "GMACs @128")
    for a in archs:
        table.add_row(a.key(), str(a), f"{a.params() / 1e6:.2f}", f"{a.total_macs(128) / 1e9:.3f}")
    console().print(table)
    return EXIT_OK
