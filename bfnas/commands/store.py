"""`bfnas import` and `bfnas db summary|export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bfnas.commands.common import EXIT_OK, command, console, group, print_json
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_file


def register(sub) -> None:
    p = command(
        sub,
        "import",
        "import latencies measured elsewhere (AutoTinyBERT dict<TAB>ms files)",
        "bfnas import --format autotinybert benchmarks/data/seed-latency-fp32.tsv "
        "--hw seed-cpu-fp32 --space bigger-faster --db lat.db --json",
        cmd_import,
    )
    p.add_argument("file", help="the file to import")
    p.add_argument("--format", default="autotinybert", help="autotinybert (the only format so far)")
    p.add_argument(
        "--hw",
        required=True,
        help="an existing profile, or a new label for data measured elsewhere",
    )
    p.add_argument("--space", required=True, help="the space every row must belong to")
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--json", action="store_true", help="print JSON")

    db = group(
        sub, "db", "the latency store: summary, export", "bfnas db summary --db lat.db --json"
    )
    p = command(
        db,
        "summary",
        "counts per profile and status",
        "bfnas db summary --db lat.db --json",
        cmd_db_summary,
    )
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        db,
        "export",
        "every measurement as CSV",
        "bfnas db export --db lat.db --csv lat.csv",
        cmd_db_export,
    )
    p.add_argument("--db", required=True, help="SQLite latency store")
    p.add_argument("--csv", required=True, help="CSV file to write")
    p.add_argument("--json", action="store_true", help="print JSON")


def _existing_db(path: str):
    from bfnas.bench.store.latency_store import LatencyStore

    # Read-only: a missing, empty, foreign or damaged file is one line and stays as it was.
    return LatencyStore(path, read_only=True)


def cmd_import(args: argparse.Namespace) -> int:
    import re

    from bfnas.bench.hardware_profile import load_profile, shipped_profiles
    from bfnas.bench.store.importer import FORMATS, imported_profile, parse_autotinybert
    from bfnas.bench.store.latency_store import LatencyStore
    from bfnas.models.digest import file_sha256
    from bfnas.models.space.search_space import load_space

    if args.format not in FORMATS:
        raise InputError(
            "--format", None, f"unknown format {args.format!r} (known: {', '.join(FORMATS)})"
        )
    space = load_space(args.space)
    path = Path(args.file)
    rows = parse_autotinybert(path, space)  # every line checked before anything is written
    if args.hw in shipped_profiles() or args.hw.endswith(".toml"):
        prof = load_profile(args.hw)
        resolved, phash, name, imported = prof.resolved(), prof.hash(), prof.name, False
    else:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.hw):
            raise InputError("--hw", None, f"{args.hw!r} is not a valid profile label")
        resolved, phash = imported_profile(args.hw, path)
        name, imported = args.hw, True
    source = {
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "format": args.format,
        "method": "the source's figure (AutoTinyBERT / Bigger&Faster: mean of a few runs)",
    }
    data = []
    for r in rows:
        data.append(
            (
                r.cfg,
                {
                    "status": "imported",
                    "median_ms": r.ms,
                    "mean_ms": r.ms,
                    "stats": {**source, "line": r.line},
                },
            )
        )
    # One transaction: a disk that fills up halfway leaves the store as it was (no profile,
    # no run, no rows of it), and the same command run again does it all.
    with LatencyStore(args.db) as store, store.transaction():
        store.add_profile(name, resolved, phash, imported=imported)
        run_id = store.start_run(phash, "import", {"file": str(path), "space": space.name})
        added, present = store.add_imported(phash, space.name, data)
        store.finish_run(run_id, "finished", {"added": added, "already_present": present})
    out = {
        "profile": name,
        "profile_hash": phash,
        "rows": len(rows),
        "added": added,
        "already_present": present,
        "db": args.db,
    }
    if args.json:
        return print_json(out)
    console().print(
        f"imported {added} measurements into {args.db} as profile {name} "
        f"({present} already present)"
    )
    return EXIT_OK


def cmd_db_summary(args: argparse.Namespace) -> int:
    from bfnas.bench.store.latency_reports import store_summary

    with _existing_db(args.db) as store:
        summary = store_summary(store)
        summary["integrity"] = store.integrity()
    if args.json:
        return print_json(summary)
    from rich.table import Table

    table = Table(
        "profile",
        "hash",
        "measurements",
        "by status",
        "reference runs",
        title=f"{summary['db']}: {summary['subnets']} subnets, {summary['runs']} runs",
    )
    for p in summary["profiles"]:
        table.add_row(
            p["profile"] + (" (imported)" if p["imported"] else ""),
            p["hash"],
            str(p["measurements"]),
            ", ".join(f"{k} {v}" for k, v in p["by_status"].items()),
            str(p["reference_measurements"]),
        )
    console().print(table)
    return EXIT_OK


def cmd_db_export(args: argparse.Namespace) -> int:
    from bfnas.bench.store.latency_reports import export_csv

    check_output_file(args.csv, "--csv")
    with _existing_db(args.db) as store:
        n = export_csv(store, Path(args.csv))
    if args.json:
        return print_json({"csv": args.csv, "rows": n})
    console().print(f"wrote {n} rows to {args.csv}")
    return EXIT_OK
