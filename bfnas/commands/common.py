"""What every command shares: the one-line-error parser, JSON and console output, and the
flags that pick a space, a supernet and an artifact cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bfnas.errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (it prints the whole usage block by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def command(
    sub: Any, name: str, help: str, example: str, handler: Callable | None = None
) -> Parser:
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if handler is not None:
        p.set_defaults(handler=handler)
    return p


def group(sub: Any, name: str, help: str, example: str) -> Any:
    """A command with subcommands (`bfnas space ...`)."""
    p = command(sub, name, help, example)
    return p.add_subparsers(dest=f"{name}_command", required=True, parser_class=Parser)


def default_cache_dir() -> str:
    return os.environ.get("BFNAS_CACHE", str(Path.home() / ".cache" / "bfnas" / "artifacts"))


def add_model_args(p: argparse.ArgumentParser, default_space: str | None = None) -> None:
    p.add_argument(
        "--space",
        required=default_space is None,
        default=default_space,
        help="search space: a shipped name or a .toml file",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="Hugging Face BERT folder, or 'minilm' for the packaged all-MiniLM-L6-v2; "
        "without it the supernet is randomly initialised",
    )
    p.add_argument(
        "--supernet-seed",
        type=int,
        default=0,
        help="seed of the random supernet when no checkpoint is given (default 0)",
    )


def add_seq_len_arg(p: argparse.ArgumentParser) -> None:
    """`--seq-len`: time the workload a model fine-tuned at that length will serve."""
    p.add_argument(
        "--seq-len",
        type=int,
        help="tokens an input, instead of the profile's workload: the task's length (a "
        "protocol's max_len); the profile is then NAME-seqN, measured and stored apart",
    )


def profile_at(profile, seq_len: int | None):
    """The profile at `--seq-len` (itself without one): `HardwareProfile.at_seq_len`."""
    return profile if seq_len is None else profile.at_seq_len(seq_len)


def add_artifacts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        default=default_cache_dir(),
        help="artifact cache folder (default $BFNAS_CACHE or ~/.cache/bfnas/artifacts)",
    )


def space_and_supernet(args: argparse.Namespace):
    """The `--space` and the supernet `--checkpoint` / `--supernet-seed` name (loaded the way
    every measuring job's setup loads them: `bench.jobs.context`)."""
    from bfnas.bench.jobs.context import space_and_supernet as load

    return load(args.space, args.checkpoint, args.supernet_seed)


def artifact_cache(folder: str, threshold: float = 0.99, seq_len: int = 128):
    from bfnas.bench.jobs.context import artifact_cache as cache

    return cache(folder, threshold, seq_len)


ARCH_HELP = "the architecture: JSON text, or a .json file holding it (its path, or @path)"


def add_arch_arg(p: Any, required: bool = True) -> None:
    """`--arch`, the same flag with the same help in every command that takes one."""
    p.add_argument("--arch", required=required, help=ARCH_HELP)


def _arch_file(text: str) -> str | None:
    """The file an `--arch` value names, or None when it is JSON text itself."""
    if text.lstrip().startswith(("{", "[")):
        return None
    return text[1:] if text.startswith("@") else text


def parse_arch(text: str):
    """`--arch` as JSON text, or as a .json file holding it, named by its path or by @path
    (the one reader of every command's --arch)."""
    from bfnas.models.space.subnet import SubnetConfig

    path = _arch_file(text)
    if path is None:
        return SubnetConfig.from_json(text, where="--arch")
    if not path:
        raise InputError("--arch", None, "names no file: give JSON text, a .json path or @path")
    try:
        body = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        what = (
            "cannot read the --arch file"
            if text.startswith("@")
            else "--arch is neither JSON nor a readable file"
        )
        raise InputError(path, None, f"{what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(path, None, "--arch: not a text file (UTF-8)") from None
    return SubnetConfig.from_json(body, where=path)


def arch_where(text: str) -> str:
    """What an error about the parsed `--arch` names: the flag, or the file it came from."""
    return _arch_file(text) or "--arch"


def console(stderr: bool = False):
    from rich.console import Console

    # soft_wrap: a line is never cut at 80 columns when the output goes to a file or pipe
    # (a terminal wraps long lines itself).
    return Console(stderr=stderr, soft_wrap=True)


# How far a store's anchors may run from a predictor's before its ms are not the store's:
# anchor-normalized latencies themselves reproduce to about 1 % (docs/measuring.md).
ANCHOR_SHIFT_WARN = 0.02


def unit_warnings(predictor: Any, here_ms: dict[str, float], db: str) -> list[str]:
    """A predictor fitted on another store whose anchors ran at another speed predicts in
    that store's anchor-normalized ms: budgets, errors and verified latencies in `db` are
    off by it. `here_ms`: the anchors' usual times in `db`."""
    from bfnas.search.training import anchor_shift

    if predictor is None or not predictor.anchor_ms:
        return []
    shift = anchor_shift(predictor.anchor_ms, here_ms)
    if abs(shift) <= ANCHOR_SHIFT_WARN:
        return []
    return [
        f"--model was fitted where the anchors ran {abs(shift):.0%} "
        f"{'faster' if shift > 0 else 'slower'} than in --db {db}: its anchor-normalized "
        f"ms times {1 + shift:.2f} are this store's; fit it on this store "
        f"(`bfnas predictor fit --db {db}`)"
    ]


def print_json(obj: Any) -> int:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    return EXIT_OK


def runner_for(profile):
    """Where a profile's measurements run, as its `target.kind` registers
    (`bench.runners.registry`): this machine, an SSH device, or the devices of a Ray cluster
    (see `on_ray`)."""
    from bfnas.bench.runners.base import runner_for as registered_runner

    return registered_runner(profile)


def on_ray(profile, address: str | None):
    """The profile as measured through a Ray cluster at `address` (its devices advertise a
    resource named after the profile), or the profile itself without `--ray`. A malformed
    address is refused here, before anything connects."""
    from bfnas.bench.runners.targets import RayTarget, parse_ray_address
    from bfnas.errors import short

    if address is None:
        return profile
    try:
        parse_ray_address(address)
    except ValueError as exc:
        raise InputError("--ray", None, f"{short(address)}: {exc}") from None
    if isinstance(profile.target, RayTarget):  # its resource and timeout stay
        target = profile.target.model_copy(update={"address": address})
    else:  # the device nodes advertise the profile's name; its engine cache folder stays
        target = RayTarget(address=address, resource=profile.name, workdir=profile.target.workdir)
    return profile.model_copy(update={"target": target})
