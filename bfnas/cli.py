"""The `bfnas` command line. Handlers are thin: they parse, call the library, and print.

Bad input (an `InputError`) is one line on stderr naming the file or flag and the field,
exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bfnas import __version__
from bfnas.models.errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (it prints the whole usage block by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def _command(sub: Any, name: str, help: str, example: str, handler: Callable) -> Parser:
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler)
    return p


def build_parser() -> Parser:
    root = Parser(
        prog="bfnas",
        description="Find BERT architectures that are fast as deployed: INT8, on a named device.",
        epilog="example:\n  bfnas space sample minilm-l6 -n 3 --seed 0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"bfnas {__version__}")
    sub = root.add_subparsers(dest="command", required=True, parser_class=Parser)

    space = sub.add_parser(
        "space", help="search spaces: list, show, sample",
        description="Search spaces: list, show, sample.",
        epilog="example:\n  bfnas space show minilm-l6",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    space_sub = space.add_subparsers(dest="space_command", required=True, parser_class=Parser)
    p = _command(space_sub, "list", "list the shipped search spaces", "bfnas space list --json",
                 cmd_space_list)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _command(space_sub, "show", "ranges and size of a space",
                 "bfnas space show bigger-faster", cmd_space_show)
    p.add_argument("space", help="a shipped space name or a .toml file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _command(space_sub, "sample", "sample architectures from a space",
                 "bfnas space sample minilm-l6 -n 5 --seed 0 --json", cmd_space_sample)
    p.add_argument("space", help="a shipped space name or a .toml file")
    p.add_argument("-n", type=int, default=5, help="how many (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON array of architectures")

    p = _command(
        sub, "export", "export a subnet to ONNX (FP32 or INT8), cached by content",
        "bfnas export --space minilm-l6 --sample --seed 3 --precision int8 --recipe dynamic "
        "--checkpoint minilm --out artifacts --json",
        cmd_export,
    )
    _add_model_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture as JSON text or a .json file")
    which.add_argument("--sample", action="store_true", help="sample one from the space")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--recipe", default=None,
                   help="INT8 recipe: dynamic | qdq | qdq-symmetric (default dynamic)")
    p.add_argument("--fuse", action="store_true",
                   help="run ONNX Runtime's transformer fusion before quantizing")
    p.add_argument("--calibration-samples", type=int, default=None,
                   help="inputs for static calibration (qdq recipes; default 16)")
    p.add_argument("--fidelity-threshold", type=float, default=0.99,
                   help="minimum cosine vs torch FP32 (default 0.99)")
    p.add_argument("--out", default="artifacts", help="artifact cache folder (default artifacts/)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = _command(
        sub, "demo", "sample a subnet, export FP32 and INT8, time both on this machine",
        "bfnas demo --json", cmd_demo,
    )
    _add_model_args(p, default_space="minilm-l6")
    p.add_argument("--seed", type=int, default=0, help="which subnet to sample (default 0)")
    p.add_argument("--recipe", default="dynamic", help="INT8 recipe (default dynamic)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per model (default 100)")
    p.add_argument("--out", default="artifacts", help="artifact cache folder (default artifacts/)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return root


def _add_model_args(p: argparse.ArgumentParser, default_space: str | None = None) -> None:
    p.add_argument("--space", required=default_space is None, default=default_space,
                   help="search space: a shipped name or a .toml file")
    p.add_argument("--checkpoint", default=None,
                   help="Hugging Face BERT folder, or 'minilm' for the packaged all-MiniLM-L6-v2; "
                        "without it the supernet is randomly initialised")
    p.add_argument("--supernet-seed", type=int, default=0,
                   help="seed of the random supernet when no checkpoint is given (default 0)")


# -- handlers -----------------------------------------------------------------------------
def cmd_space_list(args: argparse.Namespace) -> int:
    from bfnas.models.space import load_space, shipped_spaces

    rows = []
    for name in shipped_spaces():
        s = load_space(name)
        rows.append({"name": name, "uniform": s.uniform, "architectures": s.count(),
                     "description": s.description})
    if args.json:
        return _print_json(rows)
    from rich.table import Table

    table = Table("space", "uniform", "architectures", "description")
    for r in rows:
        table.add_row(r["name"], str(r["uniform"]), f"{r['architectures']:,}", r["description"])
    _console().print(table)
    return EXIT_OK


def cmd_space_show(args: argparse.Namespace) -> int:
    from bfnas.models.space import load_space

    info = load_space(args.space).describe()
    if args.json:
        return _print_json(info)
    from rich.table import Table

    table = Table("field", "value", title=f"space {info['name']}", show_header=False)
    for k, v in info.items():
        if k != "name":
            table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    _console().print(table)
    return EXIT_OK


def cmd_space_sample(args: argparse.Namespace) -> int:
    import random

    from bfnas.models.space import load_space

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
    _console().print(table)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    import random

    from bfnas.models.quantize import get_recipe

    space, supernet = _space_and_supernet(args)
    if args.arch is not None:
        cfg = parse_arch(args.arch)
        space.check(cfg, where=_arch_where(args.arch))
    else:
        cfg = space.sample(random.Random(args.seed))
    if args.precision == "fp32" and args.recipe is not None:
        raise InputError("--recipe", None, "a recipe applies to --precision int8 only")
    if args.calibration_samples is not None and args.calibration_samples < 1:
        raise InputError("--calibration-samples", None, "must be at least 1")
    if not 0 < args.fidelity_threshold <= 1:
        raise InputError("--fidelity-threshold", None, "must be in (0, 1]")
    recipe = (
        get_recipe(args.recipe or "dynamic", args.fuse, args.calibration_samples)
        if args.precision == "int8"
        else None
    )
    cache = _cache(args.out, args.fidelity_threshold)
    art = cache.build(supernet, cfg, args.precision, recipe, fuse=args.fuse)
    result = {
        "path": str(art.path),
        "sha256": art.sha256,
        "bytes": art.bytes,
        "precision": art.precision,
        "recipe": art.recipe,
        "fuse": art.fuse,
        "arch": art.arch,
        "arch_key": art.arch_key,
        "key": art.key,
        "cached": art.cached,
        "fidelity": art.fidelity,
        "seconds": art.seconds,
    }
    if args.json:
        _print_json(result)
    else:
        f = art.fidelity
        _console().print(
            f"{'cached' if art.cached else 'exported'} {art.precision}"
            f"{' ' + art.recipe['name'] if art.recipe else ''}{' fused' if art.fuse else ''} "
            f"{cfg} -> {art.path} ({art.bytes / 1e6:.1f} MB), cosine {f['cosine']:.5f}, "
            f"max |diff| {f['max_abs_diff']:.2e}"
        )
    if not art.fidelity["passed"]:
        sys.stderr.write(
            f"bfnas: export failed fidelity: cosine {art.fidelity['cosine']:.4f} < "
            f"{art.fidelity['threshold']}\n"
        )
        return EXIT_FAILED
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bfnas.pipeline import run_demo

    space, supernet = _space_and_supernet(args)
    if args.runs < 10:
        raise InputError("--runs", None, "must be at least 10")
    result = run_demo(space, supernet, _cache(args.out), args.seed, args.recipe, args.runs,
                      console=None if args.json else _console())
    if args.json:
        _print_json(result)
    return EXIT_OK if result["status"] == "ok" else EXIT_FAILED


# -- helpers -----------------------------------------------------------------------------
def _arch_where(text: str) -> str:
    return "--arch" if text.lstrip().startswith("{") else text


def parse_arch(text: str):
    """`--arch` as JSON text, or as the path of a .json file holding it."""
    from bfnas.models.subnet import SubnetConfig

    if text.lstrip().startswith("{"):
        return SubnetConfig.from_json(text, where="--arch")
    try:
        body = Path(text).read_text()
    except OSError as exc:
        raise InputError(text, None, f"--arch is neither JSON nor a readable file ({exc.strerror})") from None
    return SubnetConfig.from_json(body, where=text)


def _space_and_supernet(args: argparse.Namespace):
    from bfnas.models.space import load_space
    from bfnas.models.supernet import SuperBert, SupernetDims

    space = load_space(args.space)
    if args.checkpoint:
        from bfnas.models.checkpoint import load_supernet

        supernet = load_supernet(args.checkpoint)
        supernet.check_space(space)
    else:
        supernet = SuperBert.random(SupernetDims.for_space(space), seed=args.supernet_seed)
    return space, supernet


def _cache(out: str, threshold: float = 0.99):
    from bfnas.models.artifact import ArtifactCache, FidelitySettings

    return ArtifactCache(Path(out), fidelity=FidelitySettings(threshold=threshold))


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _print_json(obj: Any) -> int:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except InputError as exc:
        sys.stderr.write(f"bfnas: error: {exc.line()}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("bfnas: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
