"""The terminal report (rich): header, one line per check, findings with their remedies."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from doctor import __version__
from doctor.facts import Facts
from doctor.findings import CheckStatus, Finding, Severity, docs_url
from doctor.render import CODE_LANGUAGE, venv_relative
from doctor.render.machine_rows import machine_rows
from doctor.report import Report, Verdict

__all__ = ["render_terminal", "render_terminal_text"]

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
    grid.add_column()

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


def _checks(report: Report) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for result in report.results:
        root = report.root_of(result)
        if result.status is CheckStatus.FAILED and root is not None:
            worst = max(result.findings, key=lambda f: f.severity.rank)
            mark, style = "↳", "dim"
            note = Text(worst.title)
            note.append(f" (because of {root})", style="dim")
        elif result.status is CheckStatus.FAILED:
            worst = max(result.findings, key=lambda f: f.severity.rank)
            mark, style = SEVERITY_STYLE[worst.severity]
            note = Text(worst.title, style=style.replace("bold ", ""))
        else:
            mark, style = STATUS_STYLE[result.status]
            note = Text(
                result.spec.label, style="dim" if result.status is CheckStatus.PASSED else ""
            )
            if result.reason:
                note.append(f" ({result.reason})", style="dim")
        table.add_row(Text(mark, style=style), Text(result.spec.id), note)
    return table


def _finding(finding: Finding[Any], consequences: tuple[Finding[Any], ...]) -> RenderableType:
    mark, style = SEVERITY_STYLE[finding.severity]
    parts: list[RenderableType] = []
    title = Text()
    title.append(f"{mark} {finding.severity.value} ", style=style)
    title.append(finding.id, style="bold")
    title.append(f": {finding.title}")
    parts.append(title)
    parts.append(Padding(Text(finding.detail), (0, 0, 0, 2)))
    if finding.evidence:
        evidence = Text()
        for i, line in enumerate(finding.evidence):
            if i:
                evidence.append("\n")
            evidence.append("• ", style="dim")
            evidence.append(line)
        parts.append(Padding(evidence, (0, 0, 0, 2)))
    if consequences:
        parts.append(Padding(Text("because of this:", style="bold"), (0, 0, 0, 2)))
        for consequence in consequences:
            because = Text()
            because.append(f"{SEVERITY_STYLE[consequence.severity][0]} ", style="dim")
            because.append(consequence.id, style="bold")
            because.append(f": {consequence.title}")
            parts.append(Padding(because, (0, 0, 0, 4)))
    for remedy in finding.remedies:
        parts.append(Padding(Text(f"→ {remedy.summary}", style="bold cyan"), (0, 0, 0, 2)))
        lexer = CODE_LANGUAGE.get(remedy.kind)
        body: RenderableType = _code(remedy.text, lexer) if lexer else Text(remedy.text)
        parts.append(Padding(body, (0, 0, 0, 4)))
    parts.append(Padding(Text(docs_url(finding.id), style="dim"), (0, 0, 0, 2)))
    return Group(*parts)


def _code(text: str, lexer: str) -> RenderableType:
    # rich.syntax pulls in pygments (~12 ms): imported only when a report has a code
    # block to show, which a healthy run never has.
    from rich.syntax import Syntax

    return Syntax(text.rstrip("\n"), lexer, theme="ansi_dark", word_wrap=True)


def _cuda_libraries(report: Report, width: int) -> Table | None:
    """torch's CUDA libraries: soname, version, where loaded from, owner wheel, status."""
    libraries = report.facts.libraries
    if libraries is None or not libraries.cuda:
        return None
    interpreter = report.facts.interpreter
    sites = {interpreter.purelib, interpreter.platlib} if interpreter is not None else set()
    # Resolved once per table, not once per row (realpath is a system call per component).
    real_sites = [os.path.realpath(site) for site in sorted(sites) if site]
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
        rows.append((row.soname, version, where, row.owner or "", row.status))
    probe = libraries.load_probe
    where_header = "loaded from" if probe is not None and probe.ran else "resolves to"
    headers = ("soname", "version", where_header, "wheel", "status")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    # Where a library came from is the column people read: on a narrow terminal a long
    # soname folds first; version, wheel and status never wrap or get cut.
    widths[2] = min(widths[2], 40)
    room_for_soname = width - sum(widths[1:]) - 2 * (len(headers) - 1)
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", pad_edge=False)
    table.add_column(Text(headers[0]), overflow="fold", max_width=max(14, room_for_soname))
    table.add_column(Text(headers[1]), no_wrap=True)
    table.add_column(Text(headers[2]), overflow="fold", min_width=widths[2])
    table.add_column(Text(headers[3]), no_wrap=True)
    table.add_column(Text(headers[4]), no_wrap=True, min_width=widths[4])
    for cells in rows:
        # Text cells, not strings: rich parses a string as markup (slow, and a "[...]" in a
        # path would be taken for a style).
        table.add_row(*(Text(cell) for cell in cells))
    return table


SITE = "<site>"  # the inspected site-packages, spelled out under the table


def _site_relative(path: str, real_site_dirs: list[str]) -> str | None:
    """``<site>/nvidia/cu13/lib`` for a path inside the inspected site-packages (short, so
    the table fits 100 columns)."""
    for real in real_site_dirs:
        if path == real or path.startswith(real.rstrip("/") + "/"):
            return f"{SITE}/" + os.path.relpath(path, real)
    return None


def _sections(report: Report, width: int) -> Iterator[RenderableType]:
    if report.explanation is not None:
        from doctor.render.explanation import explanation_text

        yield Text("\n".join(explanation_text(report.explanation)))
    yield _header(report)
    yield Text("Checks", style="bold underline")
    yield _checks(report)
    libraries = _cuda_libraries(report, width)
    if libraries is not None:
        yield Text("")
        yield Text("CUDA libraries", style="bold underline")
        yield libraries
        interpreter = report.facts.interpreter
        if interpreter is not None and interpreter.purelib:
            yield Text(f"{SITE} = {interpreter.purelib}", style="dim")
    if report.roots:
        yield Text("")
        yield Text("Findings", style="bold underline")
        for finding in report.roots:
            yield _finding(finding, report.consequences_of(finding))
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


def render_terminal(report: Report, console: Console) -> None:
    for section in _sections(report, console.width):
        console.print(section)


def render_terminal_text(report: Report, width: int | None = 100) -> str:
    """Plain text without colour, for --output and tests."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, color_system=None, highlight=False)
    render_terminal(report, console)
    return buffer.getvalue()
