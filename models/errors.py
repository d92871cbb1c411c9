"""The one error type for input a user can fix: a file, a field and a reason."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. The CLI prints it as one line and exits with code 2.

    `where` is the file or flag the input came from, `field` the offending key inside it.
    """

    def __init__(self, where: str, field: str | None, reason: str) -> None:
        self.where = where
        self.field = field
        self.reason = reason
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.where] + ([self.field] if self.field else []) + [self.reason]
        return ": ".join(parts)
