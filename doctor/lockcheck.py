"""`torch-doctor lock`: check uv.lock against the metadata of the wheels it locks.

No venv, no GPU, no torch: uv.lock and pyproject.toml are read, every torch-family
wheel's core metadata is fetched from its index (or the cache), and the
lock-metadata-inconsistent check judges. This is the only command that uses the
network, and it says so on its first line.

Exit codes: 0 the lock matches every wheel it was able to check and every wheel was
checked; 1 an error finding; 2 a wheel could not be checked (network, index, cache),
or bad input (no uv.lock, an unknown lock version).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.checks import REGISTRY, CheckStatus, attach_remedies, relate, run_checks
from doctor.checks.lock_metadata import LockMetadataInconsistent, PlatformDifference
from doctor.derive.uv import uv_marker_applies
from doctor.facts import Facts, LockedPackage, ProjectFacts, to_jsonable
from doctor.facts.lock_metadata import LockMetadataFacts, WheelMetadata
from doctor.findings import Finding, RemedyKind, docs_url
from doctor.probe.lockfile import LockFile, LockFileError, read_lock
from doctor.probe.progress import ProgressLine
from doctor.probe.project import probe_project
from doctor.probe.wheel_metadata import ReadOptions, read_wheel_metadata
from doctor.render.formats import Format
from doctor.render.output import for_encoding, report_width, wrap_prose, write_output
from doctor.report import EXIT_DOCTOR_FAILED, EXIT_ERRORS, EXIT_OK, Report

__all__ = ["LockOptions", "LockUsageError", "run_lock"]

CHECK_ID = "lock-metadata-inconsistent"


class LockUsageError(Exception):
    """No lock to check, or one this doctor cannot read: a message and exit code 2."""


@dataclass(frozen=True)
class LockOptions:
    project: Path
    offline: bool = False
    download: bool = False
    timeout: float = 30.0
    fmt: Format = Format.TERMINAL
    packages: tuple[str, ...] = ()
    all_packages: bool = False  # every package with wheels for several platforms
    fix: bool = False
    yes: bool = False
    dry_run: bool = False


def _serves(lock: LockFile, package: LockedPackage) -> Callable[[dict[str, str]], str | None]:
    def why_not(environment: dict[str, str]) -> str | None:
        if lock.supported_markers and not any(
            uv_marker_applies(m, environment) for m in lock.supported_markers
        ):
            return "outside the lock's [tool.uv] environments"
        if package.resolution_markers and not any(
            uv_marker_applies(m, environment) for m in package.resolution_markers
        ):
            return f"the lock uses another {package.name} there"
        return None

    return why_not


def gather(
    options: LockOptions,
    say: Callable[[str], None],
    reading: Callable[[str], None] = lambda _: None,
) -> tuple[Facts, str | None]:
    """The facts for the check (network here), and a note if the cache could not be written."""
    lock_path = options.project / "uv.lock"
    if not lock_path.is_file():
        raise LockUsageError(
            f"{lock_path}: no uv.lock (run `uv lock` first, or pass --project DIR)"
        )
    try:
        lock = read_lock(lock_path)
    except LockFileError as exc:
        raise LockUsageError(str(exc)) from exc
    project = probe_project(options.project, "--project")
    packages = lock.family(options.packages)
    if options.all_packages:
        packages += tuple(p for p in lock.platform_specific() if p not in packages)
    wheels: list[WheelMetadata] = []
    cache_note = None
    for package in packages:
        read, cache = read_wheel_metadata(
            lock.wheels_of(package),
            lock_requires_python=lock.requires_python,
            indexes=project.indexes,
            environ=os.environ,
            options=ReadOptions(
                offline=options.offline, download=options.download, timeout=options.timeout
            ),
            say=say,
            serves=_serves(lock, package),
            reading=reading,
        )
        wheels.extend(read)
        cache_note = cache_note or cache.write_error
    facts = Facts(
        project=project,
        lock_metadata=LockMetadataFacts(
            lock_path=str(lock_path),
            pyproject_path=project.pyproject_path,
            offline=options.offline,
            packages=packages,
            wheels=tuple(wheels),
            dependency_metadata=tuple(project.dependency_metadata),
        ),
    )
    return facts, cache_note


def judge(facts: Facts) -> Report:
    """Only lock-metadata-inconsistent: the other checks judge an environment, not a lock."""
    from doctor.derive import derive

    ctx = derive(facts)
    results = run_checks(ctx, [REGISTRY[CHECK_ID]])
    findings = attach_remedies(relate(results), ctx)
    return Report(context=ctx, results=tuple(results), findings=tuple(findings))


def exit_code(report: Report) -> int:
    lock = report.facts.lock_metadata
    if report.findings:
        return EXIT_ERRORS
    if report.crashed or lock is None or lock.unchecked:
        return EXIT_DOCTOR_FAILED
    return EXIT_OK


VIA = {
    "cache": "cache",
    "metadata-file": "metadata file (PEP 658)",
    "range": "range read of METADATA",
    "download": "whole wheel",
}


def first_line(options: LockOptions, cache_dir: str) -> str:
    if options.offline:
        return f"torch-doctor lock: offline: only the cache ({cache_dir}); no network request"
    return (
        "torch-doctor lock: uses the network: reads the metadata of the wheels uv.lock "
        f"records from their indexes (cache: {cache_dir})"
    )


def _table(differences: tuple[PlatformDifference, ...]) -> list[str]:
    """platform x package, one line per requirement the lock lacks or has extra."""
    if not differences:
        return []
    rows = [("platform", "package", "uv.lock")]
    for d in differences:
        platform = d.platform + (f" (py {', '.join(d.pythons)})" if d.pythons else "")
        changes = [f"lacks {m.split(';')[0].strip()}" for m in d.missing]
        changes += [f"has extra {name}" for name in d.extra]
        for number, change in enumerate(changes):
            first = number == 0
            rows.append(
                (platform if first else "", f"{d.package} {d.version}" if first else "", change)
            )
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"  {r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}" for r in rows]


def _differences(finding: Finding[Any]) -> tuple[PlatformDifference, ...]:
    data = finding.data
    return data.differences if isinstance(data, LockMetadataInconsistent) else ()


def _finding_text(finding: Finding[Any], width: int) -> list[str]:
    """Prose (title, explanation, a remedy's summary and text remedies) wraps at ``width``;
    the table and code (TOML, commands) never do: they are pasted."""
    lines = wrap_prose(f"✗ {finding.severity.value} {finding.id}: {finding.title}", width, "", "  ")
    lines += wrap_prose(finding.detail, width, "  ", "  ")
    lines += _table(_differences(finding))
    for remedy in finding.remedies:
        lines += wrap_prose(f"→ {remedy.summary}", width, "  ", "    ")
        if remedy.kind is RemedyKind.TEXT:
            lines += wrap_prose(remedy.text, width, "    ", "    ")
            continue
        lines += [f"    {line}" if line else "" for line in remedy.text.rstrip("\n").splitlines()]
    lines.append(f"  {docs_url(finding.id)}")
    return lines


def render_terminal(report: Report, width: int = 80) -> str:
    """Everything after the first line (which is written before any request)."""
    lock = report.facts.lock_metadata
    assert lock is not None
    names = ", ".join(f"{p.name} {p.version}" for p in lock.packages) or "no torch-family package"
    out = [f"{lock.lock_path}: {names}"]
    for wheel in lock.wheels:
        if wheel.skipped is not None:
            state = f"not checked: {wheel.skipped}"
        elif wheel.error is not None:
            state = f"COULD NOT CHECK: {wheel.error}"
        else:
            state = VIA.get(wheel.via or "", wheel.via or "")
        out.append(f"  {wheel.wheel.filename}  [{wheel.platform}]  {state}")
    for result in report.results:
        if result.status is CheckStatus.CRASHED:
            out.append(f"torch-doctor: internal error in {result.spec.id}: {result.reason}")
    for finding in report.findings:
        out += ["", *_finding_text(finding, width)]
    unchecked = lock.unchecked
    out.append("")
    if report.findings:
        out.append(f"Verdict: uv.lock is wrong for {_platforms(report)}.")
    if unchecked:
        why = "not in the cache" if lock.offline else "see the lines above"
        out.append(
            f"Could not check {len(unchecked)} of {len(lock.wheels)} wheels ({why}); "
            "the lock is not known to be clean."
        )
        if lock.offline and all(w.error and "not in the cache" in w.error for w in unchecked):
            # The cache is filled by a run with the network (the same project, once).
            project = shlex.quote(str(Path(lock.lock_path).parent))
            out += [
                "To fill the cache, run once with the network:",
                f"  torch-doctor lock --project {project}",
            ]
    elif not report.findings and not any(w.via is not None for w in lock.wheels):
        # Nothing was read: "every checked wheel" would claim a check that never ran.
        what = (
            "uv.lock locks no torch-family package"
            if not lock.packages
            else "none of the locked wheels is installed on a platform the lock covers"
        )
        out.append(f"No wheel was checked: {what}.")
        if not lock.packages:
            out.append(
                "To check other packages whose wheels differ by platform, run with "
                "--package NAME or --all."
            )
    elif not report.findings:
        out.append("uv.lock records what every checked wheel declares, on every platform.")
    return "\n".join(out) + "\n"


def _platforms(report: Report) -> str:
    return ", ".join(sorted({d.platform for f in report.findings for d in _differences(f)}))


def render_json(report: Report, head: str) -> str:
    lock = report.facts.lock_metadata
    document = {
        "command": "lock",
        "note": head,
        "exit_code": exit_code(report),
        "wheels": to_jsonable(lock.wheels if lock else ()),
        "findings": to_jsonable(report.findings),
        "unchecked": [w.wheel.filename for w in (lock.unchecked if lock else ())],
    }
    return json.dumps(document, indent=2) + "\n"


def _shown(report: Report) -> Report:
    """The report as it may be shown: credentials in URLs removed (uv never writes them
    into uv.lock, a hand-edited lock may hold them), and secret-looking values. Paths stay:
    this is a local or CI log, not a paste."""
    from doctor.redact import RedactionRules, redact

    shown, _ = redact(report, RedactionRules())
    return shown


def _say(text: str) -> None:
    """Progress and notes on stderr (stdout is the report); nothing if it is closed."""
    stream = sys.stderr
    if stream is None or getattr(stream, "closed", False):
        return
    with contextlib.suppress(OSError, ValueError):
        stream.write(for_encoding(f"torch-doctor lock: {text}\n", stream.encoding or "utf-8"))
        stream.flush()


def run_lock(options: LockOptions) -> int:
    """Check, show (through the output module: a closed or full stdout is an OutputError,
    exit 2), and with --fix write the remedy."""
    from doctor.probe.wheel_metadata import MetadataCache

    head = first_line(options, str(MetadataCache(os.environ).directory))
    if options.fmt is Format.TERMINAL:
        write_output(head + "\n", None)  # before any request: the network is said first

    # On a terminal, a request still going after a second (a slow or hanging index, up to
    # --timeout per request) is named on stderr, as `check` names a slow probe.
    current: list[str] = []

    def reading(what: str) -> None:
        current[:] = [what]

    with ProgressLine(lambda: list(current)):
        facts, cache_note = gather(options, _say, reading)
    report = judge(facts)
    if cache_note:
        _say(f"the cache could not be written ({cache_note}); the next run reads the index again")
    shown = _shown(report)
    if options.fmt is Format.JSON:
        write_output(render_json(shown, head), None)
    elif options.fmt is Format.TERMINAL:
        write_output(render_terminal(shown, report_width()), None)
    else:
        raise LockUsageError(f"--format {options.fmt.value}: lock writes terminal or json")
    code = exit_code(report)
    if options.fix:
        return _fix(report, options, code)
    return code


def _fix(report: Report, options: LockOptions, code: int) -> int:
    from doctor.fix import FixOptions, run_fix

    if not report.findings:
        write_output("lock --fix: nothing to write.\n", None)
        return code
    if not any(r.kind is RemedyKind.TOML for f in report.findings for r in f.remedies):
        # pyproject.toml already declares what the wheels do: only the lock is behind.
        write_output(
            "\nlock --fix: pyproject.toml already declares this metadata; nothing to write. "
            "Next, run in the project directory:\n  uv lock\n",
            None,
        )
        return code
    facts = report.facts
    project: ProjectFacts | None = facts.project
    if project is None or project.pyproject_path is None:
        write_output("lock --fix: no pyproject.toml beside uv.lock; nothing was written.\n", None)
        return EXIT_DOCTOR_FAILED
    write_output("\n", None)
    fixed = run_fix(report, FixOptions(yes=options.yes, dry_run=options.dry_run), stdout=sys.stdout)
    return fixed if fixed != EXIT_OK else code
