"""The `bfnas` command line. Handlers are thin: they parse, call the library, and print.

Bad input (an `InputError`) is one line on stderr naming the file or flag and the field,
exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import sys

from bfnas import __version__
from bfnas.commands import (
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
)
from bfnas.commands.common import EXIT_BAD_INPUT, EXIT_FAILED, Parser
from bfnas.models.errors import InputError


def build_parser() -> Parser:
    root = Parser(
        prog="bfnas",
        description="Find BERT architectures that are fast as deployed: INT8, on a named device.",
        epilog="example:\n  bfnas space sample minilm-l6 -n 3 --seed 0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"bfnas {__version__}")
    sub = root.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (space, export, measure, store, predictor, search, demo, data, supernet, task):
        module.register(sub)
    return root


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
    except RuntimeError as exc:
        # Imported here: only a command that measured can raise it, and it has the module.
        from bfnas.bench.measure import MachineBusy

        if not isinstance(exc, MachineBusy):
            raise
        sys.stderr.write(f"bfnas: error: {exc}. What was finished is stored: stop the other work "
                         "on this machine (or wait for it) and run the same command again\n")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
