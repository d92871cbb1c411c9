"""The `bfnas` command line. Handlers are thin: they parse, call the library, and print.

Bad input (an `InputError`) is one line on stderr naming the file or flag and the field,
exit code 2, and nothing written: the library names a refused setting by its own name (the
dataclass field, `seq_len`), and the CLI prints the flag of the running command that set it
(`--seq-len`). Work that cannot go on (`OperationFailed`: a full disk, a busy
machine) is one line and exit code 1. Anything else is a bug: one line, exit 1, and the
traceback in a log file (`bfnas.internal_error`), never on the terminal.
"""

from __future__ import annotations

import argparse
import errno
import sys

from bfnas import __version__
from bfnas.commands import (
    accuracy,
    data,
    demo,
    export,
    measure,
    predictor,
    search,
    space,
    store,
    supernet,
    task,
    tickets,
)
from bfnas.commands.common import EXIT_BAD_INPUT, EXIT_FAILED, Parser
from bfnas.errors import InputError, OperationFailed, disk_full


def build_parser() -> Parser:
    root = Parser(
        prog="bfnas",
        description="Find BERT architectures that are fast as deployed: INT8, on a named device.",
        epilog="example:\n  bfnas space sample minilm-l6 -n 3 --seed 0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"bfnas {__version__}")
    sub = root.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (
        space,
        export,
        measure,
        store,
        predictor,
        search,
        accuracy,
        demo,
        data,
        supernet,
        task,
        tickets,
    ):
        module.register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except InputError as exc:
        label = setting_flag(parser, args, exc.setting) if exc.setting else None
        sys.stderr.write(f"bfnas: error: {exc.line(label)}\n")
        return EXIT_BAD_INPUT
    except OperationFailed as exc:
        sys.stderr.write(f"bfnas: error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("bfnas: interrupted\n")
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _internal(exc, argv)
        sys.stderr.write(f"bfnas: error: {disk_full(exc.filename or 'a file')}\n")
        return EXIT_FAILED
    except Exception as exc:  # the net: see bfnas/internal_error.py
        return _internal(exc, argv)


# Settings whose flag's dest is not the library's name for them: the dests tried, in order.
SETTING_DESTS: dict[str, tuple[str, ...]] = {
    "max_ms": ("max_latency_ms",),  # Budget.max_ms is --max-latency-ms
    "min_ms": ("min_latency_ms",),
    "hw": ("profile",),  # `hw show PROFILE` and `hw check PROFILE` take it as a positional
    "checkpoint": ("supernet",),  # `task eval --supernet` is the checkpoint folder
    "oneshot": ("data",),  # `search --objective oneshot`: the scorer is made from --data
    # `search --objective task-finetune`: the candidates' fine-tune, by its --finetune-* flags
    "epochs": ("finetune_epochs",),
    "batch": ("finetune_batch",),
    "lr": ("finetune_lr",),
    "max_len": ("finetune_max_len",),
    "workers": ("finetune_workers",),
    "train_examples": ("finetune_examples",),
    # `profile --until`: the cap is given in minutes (checked there first), kept in seconds
    "max_device_s": ("max_device_minutes",),
    # `accuracy collect --until`: the bound's target is AccuracyUntilSettings.target_tau
    "target_tau": ("until",),
}


def setting_flag(parser: argparse.ArgumentParser, args: argparse.Namespace, setting: str) -> str:
    """How the running command spells a library setting: its flag (`--seq-len` for
    `seq_len`), a positional's name, or the setting itself where no argument sets it (a
    value read from a file)."""
    actions = _command_actions(parser, args)
    for dest in (setting, *SETTING_DESTS.get(setting, ())):
        for action in actions:
            if action.dest != dest:
                continue
            if not action.option_strings:
                return str(action.metavar or action.dest)
            return max(action.option_strings, key=len)  # --number over -n
    return setting


def _command_actions(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[argparse.Action]:
    """The arguments of the (sub)command that ran: `bfnas data build` is the root parser, then
    the `data` group's, then `build`'s, each picked by the name the parsed args hold."""
    while True:
        chooser = next(
            (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None
        )
        picked = getattr(args, chooser.dest, None) if chooser is not None else None
        if chooser is None or picked not in chooser.choices:
            return list(parser._actions)
        parser = chooser.choices[picked]


def _internal(exc: BaseException, argv: list[str]) -> int:
    from bfnas.internal_error import report

    sys.stderr.write(report(exc, argv) + "\n")
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
