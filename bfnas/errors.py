"""The two errors a user sees as one line: `InputError` (input they can fix: a file, a field
and a reason; exit 2) and `OperationFailed` (the input was fine but the work could not go on:
a full disk, a busy machine, an unreachable cluster; exit 1)."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input. The CLI prints it as one line and exits with code 2.

    `where` is the file the input came from (None when it was not a file), `setting` the
    library's name for the setting whose value was refused (a dataclass field or a function
    parameter, such as `seq_len`; never a CLI flag: the library is also called from Python),
    and `field` the offending key inside the file or inside the setting's value. The CLI prints
    the setting as the flag that set it; from Python it reads `seq_len: must be ...`.
    """

    def __init__(
        self, where: str | None, field: str | None, reason: str, *, setting: str | None = None
    ) -> None:
        self.where = where
        self.setting = setting
        self.field = field
        self.reason = reason
        super().__init__(self.line())

    @classmethod
    def bad_setting(cls, setting: str, reason: str, field: str | None = None) -> InputError:
        """A refused setting value that came from no file (the CLI names its flag)."""
        return cls(None, field, reason, setting=setting)

    def line(self, setting_label: str | None = None) -> str:
        """The error as one line; `setting_label` prints the setting under another name (the
        CLI passes the flag the user typed)."""
        field = (
            [self.field if len(self.field) <= 80 else self.field[:80] + "..."] if self.field else []
        )
        setting = [setting_label or self.setting] if self.setting else []
        where = [self.where] if self.where is not None else []
        parts = [*where, *setting, *field, self.reason]
        return ": ".join(_printable(p) for p in parts)


def _printable(text: str) -> str:
    """One line whatever a file held: a key named "\\n" or a reason quoting a message of
    several lines is escaped, not printed as a line break."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def read_text_input(path: str | Path, where: str | None = None) -> str:
    """A file the user named, as text: a missing, unreadable or binary file is one line
    naming it (never an OSError or UnicodeDecodeError traceback)."""
    where = where or str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(where, None, f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(where, None, "not a text file (UTF-8)") from None


def short(value: object, limit: int = 120) -> str:
    """`repr(value)` cut to `limit` characters: a message echoes what it refused, not a
    200,000-entry list."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class OperationFailed(RuntimeError):
    """The work could not go on for a reason outside the input (a full disk, a busy machine,
    an unreachable cluster). The CLI prints it as one line and exits with code 1; what was
    finished before it is kept."""


def disk_full(path: str | Path) -> OperationFailed:
    """The one message for a write that ran out of space."""
    return OperationFailed(
        f"the disk is full writing {path}: nothing half-written was kept; "
        "free some space and run the same command again"
    )
