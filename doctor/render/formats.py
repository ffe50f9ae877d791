"""The report formats: one enum, used by the CLI, the output sink and explain."""

from __future__ import annotations

import enum
from typing import NoReturn

__all__ = ["Format", "assert_never"]


class Format(str, enum.Enum):
    """How a report is shown: rich text for a terminal, JSON for programs, Markdown for a
    ticket."""

    TERMINAL = "terminal"
    JSON = "json"
    MARKDOWN = "markdown"

    def __str__(self) -> str:
        # argparse shows choices and defaults with str(): "terminal", not "Format.TERMINAL".
        return self.value


def assert_never(value: NoReturn) -> NoReturn:
    """Dispatch on a Format is exhaustive: mypy rejects a call reached with a member left
    unhandled (typing.assert_never, which Python 3.9 lacks)."""
    raise AssertionError(f"unhandled format: {value!r}")
