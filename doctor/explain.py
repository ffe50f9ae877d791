"""`torch-doctor explain "<error text>"`: name a pasted error, then let the checks that can
confirm or rule out its causes judge this environment.

The signatures are data (doctor/knowledge/signatures.toml). The result is a Report with an
``Explanation``, focused on the checks that bear on the error; the ordinary renderers show
it, and its verdict and exit code are the whole diagnosis's, as `check` would give them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from doctor.checks import REGISTRY
from doctor.findings import CheckResult, CheckStatus
from doctor.knowledge.signatures import Match, match_signatures, pasted_text
from doctor.render.formats import Format
from doctor.report import EXIT_OK, Explanation, Recognised, Report

__all__ = ["UNKNOWN_MESSAGE", "ExplainOptions", "explain", "explanation_of"]

UNKNOWN_MESSAGE = (
    "torch-doctor does not recognise this error text.\n"
    "Run `torch-doctor` for the full diagnosis of this environment; to ask for help, attach "
    "`torch-doctor --format markdown` (redacted by default) together with the error.\n"
)


@dataclass(frozen=True)
class ExplainOptions:
    fmt: Format = Format.TERMINAL
    output: str | None = None
    redact: bool | None = None
    no_color: bool = False
    command: str = "torch-doctor explain -"


def _recognised(matches: Sequence[Match]) -> tuple[Recognised, ...]:
    return tuple(
        Recognised(
            id=m.signature.id,
            name=m.signature.name,
            matched=m.quote,
            findings=m.signature.findings,
            advice=m.signature.advice,
            source=m.signature.source,
        )
        for m in matches
    )


# Characters of the pasted text a ticket carries: its end, where the error is.
MAX_PASTED = 8000


def pasted_excerpt(text: str) -> str:
    """The pasted text as the ticket's traceback: cleaned, at most MAX_PASTED characters
    (the end kept, with a line saying how much was cut)."""
    text = pasted_text(text).strip("\n")
    if len(text) <= MAX_PASTED:
        return text
    tail = text[-MAX_PASTED:]
    tail = tail[tail.find("\n") + 1 :] if "\n" in tail else tail
    return f"… ({len(text) - len(tail)} earlier characters cut)\n{tail}"


def explanation_of(
    matches: Sequence[Match], report: Report | None, pasted: str = ""
) -> Explanation:
    """What the diagnosis (if any) says about each finding id the matched signatures name."""
    wanted: list[str] = []
    for m in matches:
        wanted += [f for f in m.signature.findings if f not in wanted]
    status = {r.spec.id: r for r in report.results} if report is not None else {}
    confirmed: list[str] = []
    ruled_out: list[str] = []
    undetermined: list[tuple[str, str]] = []
    not_checked: list[str] = []
    for finding_id in wanted:
        result = status.get(finding_id)
        if result is None:
            not_checked.append(finding_id)
        elif result.status is CheckStatus.FAILED:
            assert report is not None
            # A finding about another library (libcudnn missing, the paste is about
            # nvJitLink) is another problem: the check looked and this cause is not here.
            about = _about_the_error(finding_id, matches, report)
            (confirmed if about else ruled_out).append(finding_id)
        elif result.status is CheckStatus.PASSED or (
            report is not None and _does_not_apply(result, report)
        ):
            ruled_out.append(finding_id)
        else:
            undetermined.append((finding_id, result.reason or result.status.value))
    interpreter = report.facts.interpreter if report is not None else None
    not_installed: list[str] = []
    if report is not None and interpreter is not None:
        for m in matches:
            source = m.signature.comes_from
            if source and source not in not_installed and report.facts.distribution(source) is None:
                not_installed.append(source)
    return Explanation(
        recognised=_recognised(matches),
        confirmed=tuple(confirmed),
        ruled_out=tuple(ruled_out),
        undetermined=tuple(undetermined),
        not_checked=tuple(not_checked),
        not_installed=tuple(not_installed),
        interpreter=interpreter.executable if interpreter is not None else None,
        pasted=pasted,
    )


# Needs whose absence means the cause cannot be here, rather than that it could not be
# looked at: no uv project manages this environment, or it has no uv.lock, so no lock
# can have left a wheel out of it.
NOT_APPLICABLE_NEEDS = ("project", "uv-project", "lock")


def _does_not_apply(result: CheckResult, report: Report) -> bool:
    """Whether a skipped check was skipped for a need that makes its cause impossible here."""
    from doctor.checks.needs import NEEDS

    if result.status is not CheckStatus.SKIPPED:
        return False
    for need in result.spec.requires:
        if need in NEEDS:
            reason = NEEDS[need](report.context)
            if reason is not None:
                return need in NOT_APPLICABLE_NEEDS and reason == result.reason
    return False


def _about_the_error(finding_id: str, matches: Sequence[Match], report: Report) -> bool:
    """Whether a failed check's finding is about what the pasted error names: any finding
    does when a signature wanting it names no library; else one whose title, evidence or
    subjects name one of the libraries the error is about."""
    libraries = {m.library for m in matches if finding_id in m.signature.findings}
    if None in libraries:
        return True
    for finding in report.findings:
        if finding.id != finding_id:
            continue
        said = " ".join((finding.title, *finding.evidence, *finding.data.subjects())).lower()
        if any(library is not None and library in said for library in libraries):
            return True
    return False


def _focus(report: Report, explanation: Explanation) -> Report:
    """The report cut down to the checks that bear on the error, and the roots they lead to."""
    ids = [
        # Why the error cannot have come from this interpreter: shown, not "not related".
        *(["torch-not-installed"] if "torch" in explanation.not_installed else []),
        *explanation.confirmed,
        *explanation.ruled_out,
        *(i for i, _ in explanation.undetermined),
    ]
    order = {finding_id: i for i, finding_id in enumerate(ids)}
    results = sorted(
        (r for r in report.results if r.spec.id in order), key=lambda r: order[r.spec.id]
    )
    # A confirmed finding that is a consequence is shown with its root: that is the fix.
    # A failed check whose finding is about another problem is not (it is a root of
    # the whole report, named in one line as not related).
    related = {*explanation.confirmed, "torch-not-installed"}
    shown = {f.id for f in report.findings if f.id in order and f.id in related}
    shown |= {f.root for f in report.findings if f.id in shown and f.root is not None}
    findings = tuple(f for f in report.findings if f.id in shown or f.root in shown)
    return Report(
        context=report.context,
        results=tuple(results),
        findings=findings,
        explanation=explanation,
        whole=report,
    )


def explain(text: str, diagnose: Callable[[], Report], options: ExplainOptions) -> int:
    """Show what the error means and what this environment says about it; the exit code."""
    from doctor.render.output import default_redaction, prepare, show, write_output

    matches = match_signatures(text)
    if not matches:
        if options.fmt is Format.JSON:
            unknown: dict[str, object] = {
                key: [] for key in ("recognised", "confirmed", "ruled_out", "undetermined")
            }
            # The same keys as a recognised error's (docs/commands.md), and the message.
            unknown.update(
                not_checked=[],
                conclusion=UNKNOWN_MESSAGE.split("\n", 1)[0],
                message=UNKNOWN_MESSAGE,
            )
            write_output(json.dumps({"explain": unknown}, indent=2) + "\n", options.output)
        else:
            write_output(UNKNOWN_MESSAGE, options.output)
        return EXIT_OK

    wanted = {f for m in matches for f in m.signature.findings}
    report = diagnose() if wanted & set(REGISTRY) else None
    explanation = explanation_of(matches, report, pasted_excerpt(text))
    if report is None:
        # Nothing here can confirm or rule it out: say what it is and what to do, quickly.
        from doctor.render.explanation import render_explanation_only

        write_output(render_explanation_only(explanation, options.fmt), options.output)
        return EXIT_OK
    focused = _focus(report, explanation)
    redacted = default_redaction(options.fmt, options.redact)
    show(
        prepare(focused, options.command, redacted=redacted),
        options.fmt,
        options.output,
        options.no_color,
    )
    return focused.exit_code
