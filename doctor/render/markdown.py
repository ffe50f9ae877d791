"""`--format markdown`: a report to paste into a GitHub issue or a support ticket.

One verdict line, the findings with their remedies, a compact table of facts, and the
full detail folded into ``<details>`` blocks. Long lists are cut with a count so a
typical report stays well under 64 KB. Redaction has already happened when this runs;
the renderer only says what was removed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from doctor import __version__
from doctor.facts import DistributionFacts, Facts, LockedPackage, to_jsonable
from doctor.findings import (
    CheckResult,
    CheckStatus,
    Finding,
    Remedy,
    RemedyKind,
    Severity,
    docs_url,
)
from doctor.redact import KIND_LABELS
from doctor.render.shared import CODE_LANGUAGE, venv_relative
from doctor.report import Report, Verdict

__all__ = ["MAX_BYTES", "render_markdown"]

MAX_BYTES = 64 * 1024

# Caps that keep a report pasteable; what is cut is counted.
MAX_EVIDENCE = 12
MAX_DISTRIBUTIONS = 60
MAX_LIST = 40
MAX_RAW_JSON = 12_000

VERDICT_MARK = {Verdict.OK: "✅", Verdict.WARNING: "⚠️", Verdict.ERROR: "❌"}
UNKNOWN_VERDICT_MARK = "❓"  # e.g. incomplete: the doctor could not do all its work
SEVERITY_MARK = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}
STATUS_MARK = {
    CheckStatus.PASSED: "✅ passed",
    CheckStatus.FAILED: "❌ failed",
    CheckStatus.SKIPPED: "➖ skipped",
    CheckStatus.CRASHED: "❓ crashed",
}

# --- Markdown text helpers -------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def _escape_plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")


def md(text: str) -> str:
    """Prose that may hold `code spans` (kept) and <, >, * (escaped outside code)."""
    out: list[str] = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape_plain(text[last:]))
    return "".join(out)


def code(text: str) -> str:
    """An inline code span that survives backticks in ``text``."""
    if not text:
        return ""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def cell(text: str) -> str:
    """Table cell content: one line, pipes escaped (also inside code spans, as GFM wants)."""
    return text.replace("\n", "<br>").replace("|", r"\|")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def fence(body: str, language: str = "") -> list[str]:
    body = body.rstrip("\n")
    marker = "```"
    while marker in body:
        marker += "`"
    return [f"{marker}{language}", body, marker]


def details(summary: str, body: Sequence[str]) -> list[str]:
    # The blank line after <summary> lets GitHub render Markdown (tables) inside.
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def _more(count: int, noun: str) -> str:
    return f"… and {count} more {noun} (not shown)"


# --- Paths ---------------------------------------------------------------------------------


def short_path(path: str, facts: Facts) -> str:
    """Inside the venv: ``<venv>/…``; other paths as they are (redaction made ~ already)."""
    return venv_relative(path, facts) or path


# --- Sections --------------------------------------------------------------------------


def _verdict_line(report: Report) -> str:
    facts = report.facts
    context = []
    torch = facts.distribution("torch")
    if torch is not None:
        context.append(f"torch {torch.version}")
    if facts.interpreter is not None:
        context.append(f"Python {facts.interpreter.version}")
    if facts.platform is not None:
        context.append(f"{facts.platform.system} {facts.platform.machine}")
    driver = _driver_text(report)
    if driver:
        context.append(f"driver {driver}")
    tail = f" ({' · '.join(context)})" if context else ""
    mark = VERDICT_MARK.get(report.verdict, UNKNOWN_VERDICT_MARK)
    return f"**{mark} {report.verdict.value}: {md(report.summary)}**{tail}"


def _remedy(remedy: Remedy) -> list[str]:
    lines = [f"**→ {md(remedy.summary)}**"]
    if remedy.kind is RemedyKind.TOML and remedy.target:
        lines[0] += f" (in {code(remedy.target)})"
    lines.append("")
    language = CODE_LANGUAGE.get(remedy.kind)
    if language is not None:
        lines += fence(remedy.text, language)
    else:
        lines.append(md(remedy.text))
    lines.append("")
    return lines


def _finding(finding: Finding[Any], consequences: Sequence[Finding[Any]] = ()) -> list[str]:
    lines = [
        f"#### {SEVERITY_MARK[finding.severity]} {finding.severity.value}: "
        f"{code(finding.id)} — {md(finding.title)}",
        "",
        md(finding.detail),
        "",
    ]
    evidence = list(finding.evidence)
    for line in evidence[:MAX_EVIDENCE]:
        lines.append(f"- {md(line)}")
    if len(evidence) > MAX_EVIDENCE:
        lines.append(f"- {_more(len(evidence) - MAX_EVIDENCE, 'lines of evidence')}")
    if evidence:
        lines.append("")
    if consequences:
        lines += ["**Because of this:**", ""]
        for consequence in consequences:
            lines.append(
                f"- {SEVERITY_MARK[consequence.severity]} {code(consequence.id)}: "
                f"{md(consequence.title)}"
            )
            for line in consequence.evidence[:3]:
                lines.append(f"  - {md(line)}")
        lines.append("")
    for remedy in finding.remedies:
        lines += _remedy(remedy)
    lines += [f"[What {finding.id} means and how to fix it]({docs_url(finding.id)})", ""]
    return lines


def _findings(report: Report) -> list[str]:
    if not report.roots:
        return ["### Findings", "", "None: every check that could run passed.", ""]
    lines = ["### Findings", ""]
    for finding in report.roots:
        lines += _finding(finding, report.consequences_of(finding))
    return lines


def _other_roots(report: Report) -> list[str]:
    others = report.other_roots
    if not others:
        return []
    names = ", ".join(code(f.id) for f in others)
    return [f"_Not shown, not related to this error: {names} (`torch-doctor` shows them)._", ""]


def _torch_text(facts: Facts) -> str:
    torch = facts.distribution("torch")
    if torch is None:
        return "not installed"
    parts = [code(torch.version)]
    build = facts.torch
    if build is not None and build.cuda:
        parts.append(f"CUDA {build.cuda}")
    elif build is not None and build.hip:
        parts.append(f"ROCm/HIP {build.hip}")
    elif build is not None and build.version:
        parts.append("CPU-only build")
    if torch.installer:
        parts.append(f"installed by {torch.installer}")
    if len(facts.distributions_named("torch")) > 1:
        parts.append(f"{len(facts.distributions_named('torch'))} copies on sys.path")
    return " · ".join(parts)


def _driver_text(report: Report) -> str | None:
    machine = report.facts.machine
    if machine is None:
        return None
    version = machine.driver_version
    cuda = report.context.driver_cuda_text
    if version is None and cuda is None:
        return None
    text = version or "unknown version"
    if cuda:
        text += f" (supports CUDA {cuda})"
    return text


def _machine_rows(report: Report) -> list[tuple[str, str]]:
    """Driver and GPU rows, worded as in the terminal header (shared helper)."""
    from doctor.render.machine_rows import machine_rows

    machine = report.facts.machine
    if machine is None:
        return [("Driver", "not probed")]
    rows = [(label, md(text.plain)) for label, text in machine_rows(report.context)[: MAX_LIST + 1]]
    if len(machine.gpus) > MAX_LIST:
        rows.append(("GPUs", _more(len(machine.gpus) - MAX_LIST, "GPUs")))
    if not machine.gpus:
        rows.append(
            ("GPUs", f"{len(machine.pci_devices)} NVIDIA PCI device(s), no driver answer")
            if machine.pci_devices
            else ("GPUs", "none found")
        )
    cuda_driver = machine.cuda_driver
    if cuda_driver is not None and cuda_driver.loaded and not cuda_driver.init_ok:
        what = cuda_driver.error_name or cuda_driver.error_text or cuda_driver.probe_error
        rows.append(("cuInit", md(str(what or f"result {cuda_driver.init_result}"))))
    archs = machine.torch_archs
    if archs is not None and (archs.sm or archs.ptx):
        targets = " ".join((*archs.sm, *archs.ptx))
        rows.append(("torch GPU code", f"{targets} (from {archs.source})"))
    where = []
    if machine.container:
        where.append(f"container ({machine.container})")
    if machine.wsl:
        where.append("WSL")
    if where:
        rows.append(("Runs in", ", ".join(where)))
    return rows


def _project_text(facts: Facts) -> str | None:
    project = facts.project
    if project is None:
        return None
    parts = [code(project.root)]
    locked = project.locked_torch
    if locked:
        source = locked[0].source
        where = source.get("registry") or source.get("url") or source.get("path") or "?"
        parts.append(f"uv.lock: torch {locked[0].version} from {code(where)}")
    elif project.lock_path is None:
        parts.append("no uv.lock")
    torch_source = project.sources.get("torch")
    if torch_source:
        parts.append(f"source {code(json.dumps(torch_source, separators=(', ', ': ')))}")
    indexes = [i for i in project.indexes]
    if indexes:
        shown = ", ".join(code(f"{i.name or '(unnamed)'}={i.url}") for i in indexes[:4])
        parts.append(f"indexes {shown}")
    if any(str(m.get("name", "")).lower() == "torch" for m in project.dependency_metadata):
        parts.append("has a torch dependency-metadata entry")
    for error in (project.pyproject_error, project.lock_error):
        if error:
            parts.append(f"**unreadable:** {md(error)}")
    return " · ".join(parts)


def _facts_table(report: Report) -> list[str]:
    facts = report.facts
    rows: list[tuple[str, str]] = [("torch", _torch_text(facts))]
    interp = facts.interpreter
    if interp is not None:
        kind = "venv" if interp.is_venv else "no venv"
        rows.append(
            (
                "Python",
                f"{interp.version} ({interp.implementation}, {kind}) {code(interp.executable)}",
            )
        )
    else:
        rows.append(("Python", "could not be inspected"))
    plat = facts.platform
    if plat is not None:
        libc = f" · {plat.libc} {plat.libc_version}" if plat.libc else ""
        rows.append(("Platform", f"{plat.system} {plat.machine}{libc} · {md(plat.release)}"))
    installers = _installers_text(facts)
    if installers is not None:
        rows.append(("Installers", installers))
    rows += _machine_rows(report)
    toolchain = _toolchain_text(facts)
    if toolchain is not None:
        rows.append(("torch.compile", toolchain))
    project = _project_text(facts)
    if project is not None:
        rows.append(("uv project", project))
    return ["### Environment", "", *table(("fact", "value"), rows), ""]


def _installers_text(facts: Facts) -> str | None:
    """Who installed torch, which uv made the venv, which pip is in it."""
    parts = []
    torch = facts.distribution("torch")
    if torch is not None and torch.installer:
        parts.append(f"torch installed by {code(torch.installer)}")
    installers = facts.installers
    if installers is not None and installers.venv_uv_version:
        parts.append(f"venv created by uv {code(installers.venv_uv_version)}")
    if installers is not None and installers.pip_version:
        parts.append(f"pip {code(installers.pip_version)} in the venv")
    elif installers is not None:
        parts.append("no pip in the venv")
    return " · ".join(parts) or None


def _uv_project(facts: Facts) -> list[str]:
    """pyproject.toml's [tool.uv] and torch's uv.lock entry, as uv's maintainers ask."""
    project = facts.project
    if project is None:
        return []
    body: list[str] = []
    if project.tool_uv:
        import tomlkit

        text = tomlkit.dumps({"tool": {"uv": project.tool_uv}}).strip()
        if len(text) > MAX_RAW_JSON:
            text = text[:MAX_RAW_JSON] + f"\n# … {len(text) - MAX_RAW_JSON} more characters cut"
        body += ["`[tool.uv]` in pyproject.toml:", "", *fence(text, "toml"), ""]
    else:
        body += ["pyproject.toml has no `[tool.uv]` table.", ""]
    for entry in project.locked_torch:
        body += ["torch in uv.lock:", "", *fence(_lock_entry(entry), "toml"), ""]
    if not project.locked_torch:
        body.append("uv.lock records no torch." if project.lock_path else "No uv.lock.")
    return details("uv project: [tool.uv] and torch's uv.lock entry", body)


def _lock_entry(entry: LockedPackage) -> str:
    """A uv.lock [[package]] entry written back from what was read (the wheel list left
    out: it is long and the source says where they come from)."""

    def string(value: str) -> str:
        return json.dumps(value)

    lines = ["[[package]]", f"name = {string(entry.name)}"]
    if entry.version is not None:
        lines.append(f"version = {string(entry.version)}")
    if entry.source:
        inline = ", ".join(f"{k} = {string(v)}" for k, v in entry.source.items())
        lines.append(f"source = {{ {inline} }}")
    if entry.resolution_markers:
        lines.append("resolution-markers = [")
        lines += [f"    {string(m)}," for m in entry.resolution_markers]
        lines.append("]")
    lines.append("dependencies = [")
    for dep in entry.dependencies:
        fields = [f"name = {string(dep.name)}"]
        if dep.extras:
            fields.append(f"extra = [{', '.join(string(e) for e in dep.extras)}]")
        if dep.marker:
            fields.append(f"marker = {string(dep.marker)}")
        lines.append(f"    {{ {', '.join(fields)} }},")
    lines.append("]")
    return "\n".join(lines)


def _what_you_saw(pasted: str = "") -> list[str]:
    """Room for what only the user knows: how torch was installed, and the error (the text
    given to `explain`, when there is one)."""
    hint = (
        "<!-- Fill in: the exact install command(s); the error is the text given to "
        "torch-doctor explain. -->"
        if pasted
        else "<!-- Fill in: the exact install command(s), then the full error or traceback. -->"
    )
    return [
        "### What I ran and what I saw",
        "",
        hint,
        "",
        "Install command:",
        "",
        *fence("", "bash"),
        "",
        "Traceback:",
        "",
        *fence(pasted, "text"),
        "",
    ]


def _toolchain_text(facts: Facts) -> str | None:
    """triton's C compiler and ptxas tools, when triton is installed."""
    toolchain = facts.toolchain
    if toolchain is None:
        return None
    parts = [
        f"C compiler {code(toolchain.c_compiler)}" if toolchain.c_compiler else "no C compiler"
    ]
    for tool in toolchain.tools:
        parts.append(f"{tool.name} CUDA {tool.release}" if tool.release else f"{tool.name}: none")
    if toolchain.tools_skipped:
        parts.append(f"ptxas not run ({md(toolchain.tools_skipped)})")
    return " · ".join(parts)


# --- CUDA libraries (doctor/facts/libraries.py) --------------------------------------------


def _library_place(path: str, soname: str, facts: Facts) -> str:
    """``site-packages/nvidia/cu13/lib/`` (the file name only when it is not the soname)."""
    directory, name = os.path.split(path)
    place = short_path(directory, facts)
    interp = facts.interpreter
    sites = {interp.purelib, interp.platlib} if interp is not None else set()
    # Library paths are symlink-resolved; the probe resolved the site dirs too.
    sites |= set(interp.real_site_dirs) if interp is not None else set()
    for site in sorted(s for s in sites if s):
        if directory == site or directory.startswith(site.rstrip("/") + "/"):
            place = "site-packages/" + os.path.relpath(directory, site)
            break
    return place + ("/" if name == soname else f"/{name}")


def _libraries(facts: Facts) -> list[str]:
    libraries = facts.libraries
    if libraries is None or not libraries.cuda:
        return []
    body = []
    for row in libraries.cuda[:MAX_LIST]:
        version = row.load.version if row.load is not None and row.load.version else ""
        path = row.path
        body.append(
            (
                code(row.soname),
                version or "—",
                code(_library_place(path, row.soname, facts)) if path else "—",
                row.owner or "—",
                md(row.status),
            )
        )
    lines = [
        "### CUDA libraries",
        "",
        *table(("soname", "version", "loaded from", "wheel", "status"), body),
    ]
    if len(libraries.cuda) > MAX_LIST:
        lines += ["", _more(len(libraries.cuda) - MAX_LIST, "libraries")]
    return [*lines, ""]


def _loader_details(facts: Facts) -> list[str]:
    """Load errors, loader path entries holding CUDA libraries, and how the probe ran."""
    libraries = facts.libraries
    if libraries is None:
        return []
    body: list[str] = []
    probe = libraries.load_probe
    if probe is not None:
        ran = "ran" if probe.ran else f"did not run ({probe.skipped_reason or probe.error})"
        body.append(f"Load probe {md(ran)}: {probe.processes} process(es), {probe.seconds:.2f} s.")
        if probe.torch_import_error:
            body += ["", "`import torch` would fail with:", "", *fence(probe.torch_import_error)]
    failed = [load for load in libraries.loads if load.error or load.crashed_signal]
    if failed:
        body += ["", "Load failures:", ""]
        for load in failed[:MAX_LIST]:
            what = load.error or f"crashed with {load.crashed_signal}"
            body.append(f"- {code(load.soname)} ({md(load.stage)}): {code(what)}")
        if len(failed) > MAX_LIST:
            body.append(f"- {_more(len(failed) - MAX_LIST, 'failures')}")
    unreadable = [o for o in libraries.objects if o.error]
    if unreadable:
        body += ["", "ELF files that could not be read:", ""]
        for obj in unreadable[:MAX_LIST]:
            body.append(f"- {code(short_path(obj.path, facts))}: {md(str(obj.error))}")
        if len(unreadable) > MAX_LIST:
            body.append(f"- {_more(len(unreadable) - MAX_LIST, 'files')}")
    if libraries.loader_path:
        rows = [
            (code(e.variable), code(e.entry), ", ".join(e.cuda_files[:8]) or "—")
            for e in libraries.loader_path[:MAX_LIST]
        ]
        body += ["", *table(("variable", "entry", "CUDA libraries there"), rows)]
    if not body:
        return []
    return details("Library loading", body)


# --- Details ---------------------------------------------------------------------------------


def _check_note(result: CheckResult) -> str:
    if result.status is CheckStatus.FAILED and result.findings:
        worst = max(result.findings, key=lambda f: f.severity.rank)
        return md(worst.title)
    note = md(result.spec.label)
    if result.reason:
        note += f" ({md(result.reason)})"
    return note


def _checks(report: Report) -> list[str]:
    rows = [(code(r.spec.id), STATUS_MARK[r.status], _check_note(r)) for r in report.results]
    return details(f"All checks ({len(rows)})", table(("check", "status", "note"), rows))


def _relevant(report: Report) -> tuple[list[DistributionFacts], int]:
    relevant = list(report.context.relevant_distributions)
    return relevant, len(report.facts.distributions) - len(relevant)


def _distribution_note(dist: DistributionFacts) -> str:
    notes = []
    if dist.shadowed:
        notes.append("shadowed by an earlier copy")
    if dist.error:
        notes.append(dist.error)
    if dist.record is not None and dist.record.missing_count:
        notes.append(f"{dist.record.missing_count} of {dist.record.files} files missing")
    return md("; ".join(notes))


def _distributions(report: Report) -> list[str]:
    facts = report.facts
    relevant, others = _relevant(report)
    rows = [
        (
            code(d.display_name),
            code(d.version),
            d.installer or "—",
            code(short_path(d.location, facts)),
            _distribution_note(d),
        )
        for d in relevant[:MAX_DISTRIBUTIONS]
    ]
    body = (
        table(("distribution", "version", "installer", "location", "note"), rows)
        if rows
        else ["None found."]
    )
    if len(relevant) > MAX_DISTRIBUTIONS:
        body += ["", _more(len(relevant) - MAX_DISTRIBUTIONS, "distributions")]
    if others:
        body += ["", f"{others} other distributions installed (not related to torch; not listed)."]
    return details(f"Distributions related to torch ({len(relevant)})", body)


def _requirements(report: Report) -> list[str]:
    expectations = report.torch_requirements
    if expectations is None:
        return []
    rows = [
        (
            code(w.requirement),
            w.required_by,
            code(w.installed.version) if w.installed else "—",
            w.status,
        )
        for w in expectations.wheels[:MAX_LIST]
    ]
    body = table(("requirement", "required by", "installed", "status"), rows)
    if len(expectations.wheels) > MAX_LIST:
        body += ["", _more(len(expectations.wheels) - MAX_LIST, "requirements")]
    if expectations.toolkit_extras_unknown:
        extras = ", ".join(expectations.toolkit_extras_unknown)
        body += [
            "",
            f"cuda-toolkit is not installed: the wheels of its extras ({extras}) cannot be named.",
        ]
    return details(f"What torch requires here ({len(expectations.wheels)})", body)


def _environment(facts: Facts) -> list[str]:
    lines: list[str] = []
    if facts.environment:
        rows = [
            (code(k), code(v) if v else "(empty)") for k, v in sorted(facts.environment.items())
        ]
        lines += table(("variable", "value"), rows)
    else:
        lines.append("None of the variables torch-doctor reads is set.")
    interp = facts.interpreter
    if interp is not None:
        entries = [code(short_path(p, facts)) for p in interp.sys_path[:MAX_LIST]]
        if len(interp.sys_path) > MAX_LIST:
            entries.append(_more(len(interp.sys_path) - MAX_LIST, "entries"))
        lines += ["", "sys.path:", "", *(f"{i}. {e}" for i, e in enumerate(entries, 1))]
    return details(f"Environment variables ({len(facts.environment)}) and sys.path", lines)


def _failures(facts: Facts) -> list[str]:
    if not facts.failures:
        return []
    rows = [(code(f.probe), md(f.reason)) for f in facts.failures[:MAX_LIST]]
    body = table(("probe", "why it could not run"), rows)
    if len(facts.failures) > MAX_LIST:
        body += ["", _more(len(facts.failures) - MAX_LIST, "failures")]
    return details(f"Probe failures ({len(facts.failures)})", body)


def _raw_facts(facts: Facts) -> list[str]:
    """Driver facts verbatim, for what the tables above do not show (the library facts
    are summed up above; their full ELF view is in --format json)."""
    out: list[str] = []
    for title, value in (("Driver and GPU facts", facts.machine),):
        if value is None:
            continue
        text = json.dumps(to_jsonable(value), indent=1, default=str)
        if len(text) > MAX_RAW_JSON:
            cut = len(text) - MAX_RAW_JSON
            text = text[:MAX_RAW_JSON] + f"\n… {cut} more characters cut (run --format json)"
        out += details(f"{title} (raw)", fence(text, "json"))
    return out


def _footer(command: str, redactions: Sequence[str] | None) -> list[str]:
    if redactions is None:
        privacy = "not redacted (`--no-redact`): check it for private data before posting"
    elif redactions:
        privacy = "redacted: " + ", ".join(KIND_LABELS.get(k, k) for k in redactions)
    else:
        privacy = "redaction on, nothing private found"
    return [
        "---",
        f"<sub>Made by torch-doctor {__version__} · reproduce with {code(command)} · "
        f"{md(privacy) if redactions is None else privacy}</sub>",
        "",
    ]


def _runtime(facts: Facts) -> list[str]:
    """check --deep: the stages table; each failure's traceback tail folded below it."""
    from doctor.render.runtime_rows import runtime_heading, runtime_rows

    runtime = facts.runtime
    if runtime is None:
        return []
    lines = [f"### {md(runtime_heading(runtime))}", ""]
    rows = runtime_rows(runtime)
    lines += table(
        ("stage", "status", "time", "what it saw"),
        (
            (
                row.title,
                f"{row.mark} {row.status}",
                row.seconds,
                md("; ".join([row.note, *(f"warning: {w}" for w in row.warnings)])),
            )
            for row in rows
        ),
    )
    lines.append("")
    for row in rows:
        stage = row.stage
        tail = [*stage.traceback_tail, *(stage.error or "").splitlines()[:1]]
        if stage.stderr_tail:
            tail += ["", "stderr:", *stage.stderr_tail]
        if row.status in ("failed", "timed out", "crashed") and any(tail):
            lines += details(f"{md(stage.title)}: {row.status}", fence("\n".join(tail)))
    return lines


def render_markdown(
    report: Report,
    *,
    command: str = "torch-doctor --format markdown",
    redactions: Sequence[str] | None = (),
) -> str:
    """The report as GitHub-flavoured Markdown. ``redactions`` None: redaction was off."""
    lines = []
    if report.explanation is not None:
        from doctor.render.explanation import explanation_markdown

        lines += [*explanation_markdown(report.explanation), "## What this environment says", ""]
    else:
        lines += ["## torch-doctor report", ""]
    lines += [_verdict_line(report), ""]
    lines += _findings(report)
    lines += _other_roots(report)
    lines += _what_you_saw(report.explanation.pasted if report.explanation is not None else "")
    lines += _facts_table(report)
    lines += _libraries(report.facts)
    lines += _runtime(report.facts)
    lines += ["### Details", ""]
    lines += _checks(report)
    lines += _requirements(report)
    lines += _distributions(report)
    lines += _uv_project(report.facts)
    lines += _environment(report.facts)
    lines += _loader_details(report.facts)
    lines += _failures(report.facts)
    lines += _raw_facts(report.facts)
    lines += _footer(command, redactions)
    text = "\n".join(lines)
    if len(text.encode("utf-8")) > MAX_BYTES:
        # Drop the raw facts first: everything else is already capped.
        lines = lines[
            : len(lines) - len(_footer(command, redactions)) - len(_raw_facts(report.facts))
        ]
        lines += [
            "_Raw driver and library facts left out to stay under 64 KB; "
            "run `torch-doctor --format json` for them._",
            "",
        ]
        lines += _footer(command, redactions)
        text = "\n".join(lines)
    return text
