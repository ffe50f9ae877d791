"""From a report to bytes somewhere: redaction (once), the chosen renderer, stdout or a file.

Redaction is on by default for the formats people paste (markdown, json) and off for the
terminal (local viewing); ``--redact`` / ``--no-redact`` override either default.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.render.formats import Format, assert_never
from doctor.report import Report

if TYPE_CHECKING:
    from doctor.collective import ClusterView
    from doctor.redact import RedactionRules

__all__ = [
    "Format",
    "OutputError",
    "Prepared",
    "default_redaction",
    "for_encoding",
    "prepare",
    "render_text",
    "report_dict",
    "show",
    "terminal_width",
    "wrap_prose",
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
    explanation = prepared.report.explanation
    cluster = _cluster_view(prepared)
    if fmt is Format.JSON:
        if explanation is not None:
            from doctor.render.explanation import explanation_dict

            # The report stays one schema-valid object (docs/report.schema.json) under "report".
            both = {"explain": explanation_dict(explanation), "report": report_dict(prepared)}
            return json.dumps(both, indent=2) + "\n"
        data = report_dict(prepared)
        if cluster is not None:
            from doctor.render.compare import cluster_to_dict

            data["cluster"] = cluster_to_dict(cluster, prepared.redactions)
        return json.dumps(data, indent=2) + "\n"
    if fmt is Format.MARKDOWN:
        from doctor.render.markdown import render_markdown

        return render_markdown(
            prepared.report, command=prepared.command, redactions=prepared.redactions
        ) + _cluster_text(prepared, fmt)
    if fmt is Format.TERMINAL:
        from doctor.render.terminal import render_terminal_text

        text = render_terminal_text(
            prepared.report, width=width, command=prepared.command, verbose=verbose
        )
        return text + _redaction_note(prepared) + _cluster_text(prepared, fmt)
    assert_never(fmt)


def _cluster_view(prepared: Prepared) -> ClusterView | None:
    """Rank 0's cluster view (check --deep under torchrun), if this report has one."""
    if prepared.extra is None:
        return None
    from doctor.collective import ClusterView

    return prepared.extra if isinstance(prepared.extra, ClusterView) else None


def _cluster_text(prepared: Prepared, fmt: Format) -> str:
    cluster = _cluster_view(prepared)
    if cluster is None:
        return ""
    from doctor.render.compare import render_cluster

    return render_cluster(cluster, fmt, prepared.redactions)


def _redaction_note(prepared: Prepared) -> str:
    if not prepared.redactions:
        return ""
    from doctor.redact import KIND_LABELS

    return "Redacted: " + ", ".join(KIND_LABELS[k] for k in prepared.redactions) + "\n"


# COLUMNS outside this range is a mistake or an attack (0: an empty report; 100000: a
# megabyte of padding); the terminal's own width, else 80, is used instead.
SANE_COLUMNS = range(20, 1001)
# The glyphs the reports use, for a stdout that cannot encode them (PYTHONIOENCODING=ascii).
ASCII_GLYPHS = str.maketrans(
    {
        "✓": "+",
        "✗": "x",
        "•": "*",
        "→": "->",
        "…": "...",
        "─": "-",
        "━": "-",
        "│": "|",
        "╭": "+",
        "╮": "+",
        "╰": "+",
        "╯": "+",
        "├": "+",
        "┤": "+",
        "┬": "+",
        "┴": "+",
        "┼": "+",
        "‘": "'",
        "’": "'",
        "“": '"',
        "”": '"',
        "–": "-",
        "—": "-",
        "×": "x",
        "≥": ">=",
        "≤": "<=",
    }
)


def report_width() -> int:
    """The width to wrap prose to: a sane COLUMNS, else the terminal's when stdout is one,
    else 80 (a pipe, a file)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) in SANE_COLUMNS:
        return int(columns)
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            width = os.get_terminal_size(sys.stdout.fileno()).columns
            if width in SANE_COLUMNS:
                return width
    except (OSError, ValueError, AttributeError):
        pass
    return 80


def wrap_prose(text: str, width: int, indent: str, subsequent: str) -> list[str]:
    """Prose wrapped for a plain-text report (lock, compare): words and hyphenated names
    (wheel names, paths) are never split; empty text gives no line."""
    return textwrap.wrap(
        text,
        max(width, 40),
        initial_indent=indent,
        subsequent_indent=subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def terminal_width() -> int | None:
    """The width for the terminal report: None lets rich use COLUMNS or the terminal's."""
    columns = os.environ.get("COLUMNS")
    if columns is None:
        return None
    try:
        if int(columns) in SANE_COLUMNS:
            return None
    except ValueError:
        pass
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80
    return width if width in SANE_COLUMNS else 80


def _stdout() -> Any:
    stream = sys.stdout
    if stream is None or getattr(stream, "closed", False):
        raise OutputError("standard output is closed: nothing to write the report to")
    return stream


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _encodable(stream: Any, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def for_encoding(text: str, encoding: str) -> str:
    """``text`` as ``encoding`` can carry it: ASCII glyphs, then ``?`` for the rest."""
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    text = text.translate(ASCII_GLYPHS)
    try:
        return text.encode(encoding, "replace").decode(encoding)
    except LookupError:
        return text.encode("ascii", "replace").decode("ascii")


def show(
    prepared: Prepared, fmt: Format, output: str | None, no_color: bool, *, verbose: bool = False
) -> None:
    """Print to the terminal (colour when it is one) or write ``output``."""
    if fmt is not Format.TERMINAL or output is not None:
        write_output(
            render_text(prepared, fmt, verbose=verbose),
            output,
            redacted=prepared.redactions is not None,
        )
        return
    stream = _stdout()
    width = terminal_width()
    if not _encodable(stream, "✓✗•→…─╭"):
        # rich would raise on the first glyph: plain text in the glyphs stdout can carry.
        if width is None:
            import shutil

            width = shutil.get_terminal_size((80, 24)).columns
        text = render_text(prepared, Format.TERMINAL, width=width, verbose=verbose)
        write_output(text, None)
        return
    from rich.console import Console

    from doctor.render.terminal import render_terminal, without_trailing_spaces

    # A terminal gets the report as rich prints it; a pipe or a file gets it without the
    # spaces rich pads each line with (the same text otherwise: colour as rich decides).
    interactive = _isatty(stream)
    sink = stream if interactive else io.StringIO()
    console = Console(
        file=sink,
        width=width,
        no_color=no_color or "NO_COLOR" in os.environ,
        highlight=False,
        soft_wrap=False,
    )
    try:
        render_terminal(prepared.report, console, command=prepared.command, verbose=verbose)
        note = _redaction_note(prepared)
        if note:
            console.print(note.rstrip("\n"), style="dim")
        cluster = _cluster_text(prepared, fmt)
        if cluster:
            console.print(cluster.rstrip("\n"), markup=False)
        if not interactive:
            stream.write(without_trailing_spaces(sink.getvalue()))
        stream.flush()
    except BrokenPipeError:
        raise  # the reader left (`| head`): the CLI's business
    except OSError as exc:
        raise OutputError(f"cannot write the report to standard output: {exc}") from exc


def write_output(text: str, output: str | None, *, redacted: bool = False) -> None:
    """Print ``text`` or write it to ``output`` (placeholders expanded; in a redacted
    report's file name, {host} is the host's pseudonym, as in the report)."""
    if output is None:
        stream = _stdout()
        text = for_encoding(text, getattr(stream, "encoding", None) or "utf-8")
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            raise  # the reader left (`| head`): the CLI's business
        except OSError as exc:
            raise OutputError(f"cannot write the report to standard output: {exc}") from exc
        return
    from doctor.render.destination import PlaceholderError, expand_output, write_atomically

    try:
        host = None
        if redacted:
            import socket

            from doctor.redact import host_pseudonym, run_key

            host = host_pseudonym(socket.gethostname(), run_key())
        path = Path(expand_output(output, host=host)).expanduser()
    except PlaceholderError as exc:
        raise OutputError(str(exc)) from exc
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise OutputError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc
    print(f"torch-doctor: report written to {path}", file=sys.stderr)
