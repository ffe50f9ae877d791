"""From a report to bytes somewhere: redaction (once), the chosen renderer, stdout or a file.

Redaction is on by default for the formats people paste (markdown, json) and off for the
terminal (local viewing); ``--redact`` / ``--no-redact`` override either default.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.render.formats import Format, assert_never
from doctor.report import Report

if TYPE_CHECKING:
    from doctor.redact import RedactionRules

__all__ = [
    "Format",
    "OutputError",
    "Prepared",
    "default_redaction",
    "prepare",
    "render_text",
    "report_dict",
    "show",
    "write_output",
]


class OutputError(Exception):
    """The report cannot be written where the user asked (exit 2)."""


@dataclass(frozen=True)
class Prepared:
    """A report ready to render: redacted (or not), with the command that reproduces it."""

    report: Report
    command: str
    redactions: tuple[str, ...] | None  # None: redaction was off
    extra: Any = None  # what a command shows beside the report (explain's verdicts)


def default_redaction(fmt: Format, flag: bool | None) -> bool:
    """``flag`` from --redact/--no-redact wins; otherwise on for markdown and json."""
    return flag if flag is not None else fmt in (Format.MARKDOWN, Format.JSON)


def prepare(
    report: Report,
    command: str,
    *,
    redacted: bool,
    extra: Any = None,
    rules: RedactionRules | None = None,
) -> Prepared:
    if not redacted:
        return Prepared(report, command, None, extra)
    # Imported only when redacting (the default terminal run does not): its patterns
    # compile at import.
    from doctor.redact import redact

    # One walk over everything that will be shown: one set of rules for all of it.
    (clean_report, clean_command, clean_extra), kinds = redact((report, command, extra), rules)
    return Prepared(clean_report, clean_command, tuple(kinds), clean_extra)


def report_dict(prepared: Prepared) -> dict[str, Any]:
    from doctor.render.json import report_to_dict

    data = report_to_dict(prepared.report)
    data["redacted"] = prepared.redactions is not None
    data["redactions"] = list(prepared.redactions or ())
    data["command"] = prepared.command
    return data


def render_text(
    prepared: Prepared, fmt: Format | str, width: int | None = 100, *, verbose: bool = False
) -> str:
    fmt = Format(fmt)
    if fmt is Format.JSON:
        return json.dumps(report_dict(prepared), indent=2) + "\n"
    if fmt is Format.MARKDOWN:
        from doctor.render.markdown import render_markdown

        return render_markdown(
            prepared.report, command=prepared.command, redactions=prepared.redactions
        )
    if fmt is Format.TERMINAL:
        from doctor.render.terminal import render_terminal_text

        text = render_terminal_text(
            prepared.report, width=width, command=prepared.command, verbose=verbose
        )
        return text + _redaction_note(prepared)
    assert_never(fmt)


def _redaction_note(prepared: Prepared) -> str:
    if not prepared.redactions:
        return ""
    from doctor.redact import KIND_LABELS

    return "Redacted: " + ", ".join(KIND_LABELS[k] for k in prepared.redactions) + "\n"


def show(
    prepared: Prepared, fmt: Format, output: str | None, no_color: bool, *, verbose: bool = False
) -> None:
    """Print to the terminal (colour when it is one) or write ``output``."""
    if fmt is not Format.TERMINAL or output is not None:
        write_output(render_text(prepared, fmt, verbose=verbose), output)
        return
    from rich.console import Console

    from doctor.render.terminal import render_terminal

    console = Console(
        no_color=no_color or "NO_COLOR" in os.environ, highlight=False, soft_wrap=False
    )
    render_terminal(prepared.report, console, command=prepared.command, verbose=verbose)
    note = _redaction_note(prepared)
    if note:
        console.print(note.rstrip("\n"), style="dim")


def write_output(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output).expanduser()
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    print(f"torch-doctor: report written to {path}", file=sys.stderr)
