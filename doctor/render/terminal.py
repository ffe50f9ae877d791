"""The terminal report (rich): header, one line per check, findings with their remedies."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from doctor import __version__
from doctor.facts import Facts
from doctor.findings import CheckStatus, Finding, Remedy, RemedyKind, Severity, docs_url
from doctor.render.machine_rows import machine_rows
from doctor.render.runtime_rows import runtime_heading, runtime_rows
from doctor.render.shared import CODE_LANGUAGE, venv_relative
from doctor.report import Report, Verdict

__all__ = ["Verbatim", "render_terminal", "render_terminal_text", "without_trailing_spaces"]

SEVERITY_STYLE = {
    Severity.ERROR: ("✗", "bold red"),
    Severity.WARNING: ("!", "bold yellow"),
    Severity.INFO: ("i", "bold blue"),
}
STATUS_STYLE = {
    CheckStatus.PASSED: ("✓", "green"),
    CheckStatus.SKIPPED: ("-", "dim"),
    CheckStatus.CRASHED: ("?", "bold magenta"),
}
# What the report is made of: rich renderables (prose: wrapped to the width) and
# Verbatim text (code, links, table rows: never wrapped, never cut).
Line = Union[RenderableType, "Verbatim"]

VERDICT_STYLE = {
    Verdict.OK: "bold green",
    Verdict.WARNING: "bold yellow",
    Verdict.ERROR: "bold red",
    Verdict.INCOMPLETE: "bold magenta",
}


def short_path(path: str, facts: Facts) -> str:
    """A path relative to the venv or ~ where that is shorter, for reading."""
    in_venv = venv_relative(path, facts)
    if in_venv is not None:
        return in_venv
    home = str(Path.home())
    if home not in ("/", "") and path.startswith(home.rstrip("/") + "/"):
        return "~/" + path[len(home) :].lstrip("/")
    return path


def _header(report: Report) -> Panel:
    facts = report.facts
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")

    def row(label: str, value: Text | str) -> None:
        # Text cells, not strings: rich parses a string as markup and emoji codes (which
        # imports its emoji table, ~3 ms), and a "[...]" in a value would become a style.
        grid.add_row(Text(label), value if isinstance(value, Text) else Text(value))

    torch = facts.distribution("torch")
    build = facts.torch
    if torch is not None:
        # torch/version.py carries the local tag (+cu130) that PyPI's dist-info lacks.
        line = Text(build.version if build is not None and build.version else torch.version)
        if build is not None and build.cuda:
            line.append(f"  CUDA {build.cuda}")
        elif build is not None and build.hip:
            line.append(f"  ROCm/HIP {build.hip}")
        elif build is not None and build.version:
            line.append("  CPU-only build")
        if torch.installer:
            line.append(f"  installed by {torch.installer}", style="dim")
        row("torch", line)
    elif facts.interpreter is None:
        unknown = Text("unknown: the interpreter could not be inspected", style="magenta")
        row("torch", unknown)
    else:
        row("torch", Text("not installed", style="red"))
    interp = facts.interpreter
    if interp is not None:
        kind = "venv" if interp.is_venv else "no venv"
        row(
            "Python",
            Text(f"{interp.version} ({interp.implementation}, {kind})  {interp.executable}"),
        )
    plat = facts.platform
    if plat is not None:
        libc = f", {plat.libc} {plat.libc_version}" if plat.libc else ""
        row("Platform", f"{plat.system} {plat.machine}{libc}")
    for label, value in machine_rows(report.context):
        row(label, value)
    project = facts.project
    if project is not None:
        text = Text(short_path(project.root, facts))
        locked = project.locked_torch
        if locked:
            entry = locked[0]
            where = entry.source.get("registry") or entry.source.get("url") or ""
            text.append(f"  uv.lock: torch {entry.version} {where}".rstrip(), style="dim")
        elif project.lock_path is None:
            text.append("  no uv.lock", style="dim")
        row("Project", text)
    verdict = Text(report.summary, style=VERDICT_STYLE[report.verdict])
    row("Verdict", verdict)
    return Panel(grid, title=Text(f"torch-doctor {__version__}"), title_align="left", expand=False)


def _checks(report: Report, verbose: bool) -> Iterator[Line]:
    """The failed and crashed checks, one line each; passed and skipped ones are counted in
    one line (``--verbose`` lists them, labelled with what they checked)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1, no_wrap=True)
    table.add_column(overflow="fold")
    for result in report.results:
        root = report.root_of(result)
        if result.status is CheckStatus.FAILED:
            worst = max(result.findings, key=lambda f: f.severity.rank)
            note = Text(result.spec.id, style="bold")
            if root is not None:
                mark, style = "↳", "dim"
                note.append(f": {worst.title}")
                note.append(f" (because of {root})", style="dim")
            else:
                mark, style = SEVERITY_STYLE[worst.severity]
                note.append(f": {worst.title}", style=style.replace("bold ", ""))
        elif result.status is CheckStatus.CRASHED or verbose:
            mark, style = STATUS_STYLE[result.status]
            # What was checked; a crash (a bug to report) also by its id.
            crashed = result.status is CheckStatus.CRASHED
            note = Text(f"{result.spec.id}: " if crashed else "") + Text(result.spec.label)
            if result.reason:
                note.append(f" ({result.reason})", style="dim")
        else:
            continue
        table.add_row(Text(mark, style=style), note)
    if table.rows:
        yield table
    if verbose:
        return
    counted = []
    if report.passed:
        n = len(report.passed)
        counted.append(Text(f"✓ {n} check{'s' if n != 1 else ''} passed", style="green"))
    if report.skipped:
        n = len(report.skipped)
        counted.append(Text(f"- {n} skipped: nothing to judge", style="dim"))
    if counted:
        line = Text("  ").join(counted)
        line.append(" (--verbose lists them)", style="dim")
        yield line


def _finding(finding: Finding[Any], consequences: tuple[Finding[Any], ...]) -> Iterator[Line]:
    mark, style = SEVERITY_STYLE[finding.severity]
    title = Text(f"{finding.severity.value} ", style=style)
    title.append(finding.id, style="bold")
    title.append(f": {finding.title}")
    yield _bullets([title], mark=mark, style=style)
    yield Padding(Text(finding.detail), (0, 0, 0, 2))
    if finding.evidence:
        yield Padding(_bullets(Text(line) for line in finding.evidence), (0, 0, 0, 2))
    if consequences:
        yield Padding(Text("because of this:", style="bold"), (0, 0, 0, 2))
        lines = []
        for consequence in consequences:
            because = Text(consequence.id, style="bold")
            because.append(f": {consequence.title}")
            lines.append(because)
        yield Padding(_bullets(lines, mark="↳"), (0, 0, 0, 2))
    for remedy in finding.remedies:
        yield from _remedy(remedy, indent=2)
    yield _link(docs_url(finding.id), indent=2)


def _remedy(remedy: Remedy, indent: int) -> Iterator[Line]:
    text = remedy.summary
    if remedy.kind is RemedyKind.TOML and remedy.target:
        text += f" (in {remedy.target})"  # where the block goes, as Markdown says it
    summary = _bullets([Text(text, style="bold cyan")], mark="→", style="bold cyan")
    yield Padding(summary, (0, 0, 0, indent))
    if remedy.kind.is_code:
        yield Verbatim.code(remedy.text, CODE_LANGUAGE[remedy.kind], indent + 2)
    else:
        yield Padding(Text(remedy.text), (0, 0, 0, indent + 2))


def _bullets(lines: Iterable[Text], mark: str = "•", style: str = "dim") -> Table:
    """One line per item, wrapped lines hanging under the text, not under the mark; a
    token longer than the line (a path) folds, it is never cut short."""
    table = Table.grid(padding=(0, 1))
    table.add_column(width=len(mark), no_wrap=True, style=style)
    table.add_column(overflow="fold")
    for line in lines:
        table.add_row(Text(mark), line)
    return table


def _link(url: str, indent: int) -> Verbatim:
    # A link is one token: it overflows rather than being split (a split link does not open).
    return Verbatim(Text(" " * indent + url, style="dim"))


@dataclass(frozen=True)
class Verbatim:
    """Text printed as is: never wrapped, never cut, whatever the width; a line longer than
    the terminal overflows (the terminal soft-wraps it, and copying it gives the line back
    whole). The one way this report prints code, links and table rows."""

    text: Text
    language: str | None = None  # code: highlighted when the console shows colour
    indent: int = 0

    @classmethod
    def code(cls, code: str, language: str, indent: int) -> Verbatim:
        """A remedy's code, every line indented by ``indent`` spaces."""
        lines = code.rstrip("\n").split("\n")
        return cls(_indented([Text(line) for line in lines], indent), language, indent)

    def styled(self, console: Console) -> Text:
        if self.language is None or console.color_system is None:
            return self.text
        # rich.syntax pulls in pygments (~12 ms): imported only to colour code on a
        # terminal, which a healthy run or a pipe never needs.
        from rich.syntax import Syntax

        code = "\n".join(line.plain[self.indent :] for line in self.text.split("\n"))
        highlighted = Syntax(code, self.language, theme="ansi_dark", background_color="default")
        lines = highlighted.highlight(code).split("\n", allow_blank=True)[: code.count("\n") + 1]
        # Highlighting never changes the characters; if it did, the plain text is the truth.
        if "\n".join(line.plain for line in lines) != code:
            return self.text
        return _indented(list(lines), self.indent)


def _indented(lines: list[Text], indent: int) -> Text:
    return Text("\n").join(Text(" " * indent) + line for line in lines)


def _cuda_libraries(report: Report, width: int) -> Iterator[Line]:
    """torch's CUDA libraries: soname, version, where loaded from, owner wheel, status.

    Nothing is wrapped or cut: columns are dropped until the rest fits ``width`` (the full
    values are in the JSON and Markdown reports), and where even that does not fit, each
    library takes two lines, the directory on the second."""
    libraries = report.facts.libraries
    if libraries is None or not libraries.cuda:
        return
    interpreter = report.facts.interpreter
    # Library paths are symlink-resolved; so are these (by the probe).
    real_sites = list(interpreter.real_site_dirs) if interpreter is not None else []
    rows = []
    for row in libraries.cuda:
        version = row.load.version if row.load is not None and row.load.version else ""
        where = ""
        if row.path:
            directory, name = os.path.split(row.path)
            where = _site_relative(directory, real_sites) or short_path(directory, report.facts)
            # The directory says where; the file name only when it is not the soname.
            if name != row.soname:
                where += f"/{name}"
        rows.append(
            {
                "soname": row.soname,
                "version": version,
                "where": where,
                "wheel": row.owner or "",
                "status": row.status,
            }
        )
    probe = libraries.load_probe
    headers = {
        "soname": "soname",
        "version": "version",
        "where": "loaded from" if probe is not None and probe.ran else "resolves to",
        "wheel": "wheel",
        "status": "status",
    }
    widths = {key: max(len(h), *(len(r[key]) for r in rows)) for key, h in headers.items()}
    gap = 2

    def fits(keys: tuple[str, ...]) -> bool:
        return sum(widths[k] for k in keys) + gap * (len(keys) - 1) <= width

    # Most useful first: which library, what happened to it, where it came from, which
    # version, which wheel owns it.
    layouts = (
        ("soname", "version", "where", "wheel", "status"),
        ("soname", "version", "where", "status"),
        ("soname", "where", "status"),
    )
    columns = next((keys for keys in layouts if fits(keys)), None)
    stacked = columns is None
    if columns is None:
        columns = ("soname", "version", "status")

    def line(cells: dict[str, str], style: str = "") -> Text:
        text = Text(style=style)
        for i, key in enumerate(columns):
            last = i == len(columns) - 1
            value = cells[key]
            text.append(value if last else value.ljust(widths[key] + gap))
        return text

    lines = [line(headers, style="bold")]
    for cells in rows:
        lines.append(line(cells))
        if stacked and cells["where"]:
            lines.append(Text(f"  {headers['where']} {cells['where']}", style="dim"))
    yield Verbatim(Text("\n").join(lines))


RUNTIME_STYLE = {
    "passed": "green",
    "failed": "bold red",
    "skipped": "dim",
    "timed out": "bold magenta",
    "crashed": "bold red",
}


def _runtime(report: Report) -> Iterator[RenderableType]:
    """check --deep: one line per stage with its time, torch's warnings under it."""
    runtime = report.facts.runtime
    if runtime is None:
        return
    yield Text("")
    yield Text(runtime_heading(runtime), style="bold underline")
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    table.add_column()
    for row in runtime_rows(runtime):
        style = RUNTIME_STYLE.get(row.status, "")
        note = Text(row.note, style="dim" if row.status == "skipped" else "")
        if row.status not in ("passed", "skipped"):
            note = Text(f"{row.status}: ", style=style) + Text(row.note)
        for warning in row.warnings:
            note.append(f"\nwarning: {warning}", style="yellow")
        table.add_row(Text(row.mark, style=style), Text(row.title), Text(row.seconds), note)
    yield table


SITE = "<site>"  # the inspected site-packages, spelled out under the table


def _site_relative(path: str, real_site_dirs: list[str]) -> str | None:
    """``<site>/nvidia/cu13/lib`` for a path inside the inspected site-packages (short, so
    the table fits 80 columns)."""
    for real in real_site_dirs:
        if path == real or path.startswith(real.rstrip("/") + "/"):
            return f"{SITE}/" + os.path.relpath(path, real)
    return None


def _summary(report: Report, command: str) -> Iterator[Line]:
    """The end of every report: the verdict, each root cause in one line, what to run first."""
    yield Text("Summary", style="bold underline")
    yield Text(report.summary, style=VERDICT_STYLE[report.verdict])
    if report.roots:
        lines = []
        for finding in report.roots:
            line = Text(finding.id, style="bold")
            line.append(f": {finding.title}")
            lines.append((SEVERITY_STYLE[finding.severity], line))
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1, no_wrap=True)
        table.add_column(overflow="fold")
        for (mark, style), line in lines:
            table.add_row(Text(mark, style=style), line)
        yield table
    step = report.next_step(command)
    if step is not None:
        finding, remedy = step
        first = Text("First, for ", style="bold")
        first.append(finding.id, style="bold")
        first.append(":", style="bold")
        yield first
        yield from _remedy(remedy, indent=2)


def _sections(report: Report, width: int, command: str, verbose: bool) -> Iterator[Line]:
    if report.explanation is not None:
        from doctor.render.explanation import explanation_text

        yield Text("\n".join(explanation_text(report.explanation)))
    yield _header(report)
    yield Text("Checks", style="bold underline")
    yield from _checks(report, verbose)
    libraries = list(_cuda_libraries(report, width))
    if libraries:
        yield Text("")
        yield Text("CUDA libraries", style="bold underline")
        yield from libraries
        interpreter = report.facts.interpreter
        if interpreter is not None and interpreter.purelib:
            yield Verbatim(Text(f"{SITE} = {interpreter.purelib}", style="dim"))
    yield from _runtime(report)
    if report.roots:
        yield Text("")
        yield Text("Findings", style="bold underline")
        for finding in report.roots:
            yield from _finding(finding, report.consequences_of(finding))
            yield Text("")
    others = report.other_roots
    if others:
        yield Text(
            "Not shown, not related to this error: "
            + ", ".join(f.id for f in others)
            + " (`torch-doctor` shows them)",
            style="dim",
        )
    failures = report.facts.failures
    if failures:
        yield Text("Could not inspect", style="bold underline")
        for failure in failures:
            yield Text(f"  {failure.probe}: {failure.reason}", style="yellow")
        yield Text("")
    yield from _summary(report, command)


def render_terminal(
    report: Report, console: Console, *, command: str = "torch-doctor", verbose: bool = False
) -> None:
    """Print the report; ``command`` is the command line that made it (the summary's
    `torch-doctor fix` keeps its --python and --project)."""
    for section in _sections(report, console.width, command, verbose):
        if isinstance(section, Verbatim):
            console.print(section.styled(console), soft_wrap=True)
        else:
            console.print(section)


def render_terminal_text(
    report: Report,
    width: int | None = 100,
    *,
    command: str = "torch-doctor",
    verbose: bool = False,
) -> str:
    """Plain text without colour, for --output and tests."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, color_system=None, highlight=False)
    render_terminal(report, console, command=command, verbose=verbose)
    return without_trailing_spaces(buffer.getvalue())


def without_trailing_spaces(text: str) -> str:
    """Each line without the spaces rich pads it with to the width: noise in a file or a
    pipe (a diff, a paste), where nothing needs the padding."""
    return "\n".join(line.rstrip() for line in text.split("\n"))
