"""The device package's commands: `python -m bfnas.bench.device COMMAND`, or on a device
`python DEVICE_CODE.pyz COMMAND` (the same package, shipped by the host as a zip; see
`bench.runners.device_code`).

- `forkserver`: serve measurement jobs over the pipes (`forkserver`).
- `worker --job FILE|-`: one measurement in this process (`worker`).
- `probe --json -`: the checks of a profile on this machine (`probe`).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"forkserver": ".forkserver", "worker": ".worker", "probe": ".probe"}
# The name this package is imported under: bfnas.bench.device here, bfnas_device in a zip.
PACKAGE = __spec__.parent if __spec__ else "bfnas.bench.device"  # type: ignore[name-defined]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        sys.stderr.write(
            f"usage: {PACKAGE} {{{','.join(COMMANDS)}}} [options]\n"
            f"example: python -m {PACKAGE} probe --json - < profile.json\n"
        )
        return 2
    module = importlib.import_module(COMMANDS[args[0]], PACKAGE)
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
