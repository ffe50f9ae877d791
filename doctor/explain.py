"""`torch-doctor explain "<error text>"`.

explain names the failure from the pasted text (signatures are data:
doctor/knowledge/signatures.toml), runs the full diagnosis, and shows only the checks
that can confirm or rule out its causes here, with their remedies.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from doctor.checks import REGISTRY
from doctor.findings import CheckStatus
from doctor.render.formats import Format
from doctor.report import EXIT_OK, Report

__all__ = [
    "SIGNATURES_PATH",
    "ExplainOptions",
    "Signature",
    "SignatureError",
    "explain",
    "load_signatures",
    "match_signatures",
]

SIGNATURES_PATH = Path(__file__).parent / "knowledge" / "signatures.toml"
MAX_QUOTE = 160


class SignatureError(Exception):
    """signatures.toml is missing or malformed (a defect of the package, said clearly)."""


@dataclass(frozen=True)
class Signature:
    id: str
    name: str
    pattern: re.Pattern[str]
    findings: tuple[str, ...]
    example: str
    catalogue: str
    source: str
    reviewed: str
    advice: str | None = None


@dataclass(frozen=True)
class Match:
    signature: Signature
    quote: str  # the matched part of the pasted text


@dataclass(frozen=True)
class ExplainOptions:
    fmt: Format = Format.TERMINAL
    output: str | None = None
    redact: bool | None = None
    no_color: bool = False
    command: str = "torch-doctor explain -"


@lru_cache(maxsize=4)
def load_signatures(path: Path = SIGNATURES_PATH) -> tuple[Signature, ...]:
    from doctor.probe.project import TomlError, load_toml

    try:
        data = load_toml(path)
    except TomlError as exc:
        raise SignatureError(str(exc)) from exc
    signatures = []
    for number, entry in enumerate(data.get("signature", []), 1):
        try:
            signatures.append(
                Signature(
                    id=str(entry["id"]),
                    name=str(entry["name"]),
                    pattern=re.compile(str(entry["pattern"]), re.IGNORECASE),
                    findings=tuple(str(f) for f in entry.get("findings", [])),
                    example=str(entry["example"]),
                    catalogue=str(entry.get("catalogue", "")),
                    source=str(entry["source"]),
                    reviewed=str(entry["reviewed"]),
                    advice=entry.get("advice"),
                )
            )
        except (KeyError, TypeError, re.error) as exc:
            raise SignatureError(f"{path}: signature #{number} is malformed: {exc!r}") from exc
    return tuple(signatures)


def match_signatures(text: str, signatures: Sequence[Signature] | None = None) -> list[Match]:
    """Every signature found in ``text``, in the order of the knowledge file."""
    found = []
    for signature in signatures if signatures is not None else load_signatures():
        hit = signature.pattern.search(text)
        if hit is not None:
            found.append(Match(signature, _quote(text, hit)))
    return found


def _quote(text: str, hit: re.Match[str]) -> str:
    # The line holding the match, trimmed: enough to show what was recognised.
    start = text.rfind("\n", 0, hit.start()) + 1
    end = text.find("\n", hit.end())
    line = text[start : end if end != -1 else len(text)].strip()
    if len(line) > MAX_QUOTE:
        line = line[: MAX_QUOTE - 1] + "…"
    return line


@dataclass(frozen=True)
class Verdicts:
    """What the diagnosis says about each finding id the matched signatures name."""

    confirmed: tuple[str, ...]
    ruled_out: tuple[str, ...]
    undetermined: tuple[tuple[str, str], ...]  # (id, why not)
    not_checked: tuple[str, ...]  # no such check in this version

    @property
    def ids(self) -> tuple[str, ...]:
        return self.confirmed + self.ruled_out + tuple(i for i, _ in self.undetermined)


def _verdicts(matches: Sequence[Match], report: Report) -> Verdicts:
    wanted: list[str] = []
    for m in matches:
        wanted += [f for f in m.signature.findings if f not in wanted]
    status = {r.spec.id: r for r in report.results}
    confirmed, ruled_out, undetermined, not_checked = [], [], [], []
    for finding_id in wanted:
        result = status.get(finding_id)
        if result is None:
            not_checked.append(finding_id)
        elif result.status is CheckStatus.FAILED:
            confirmed.append(finding_id)
        elif result.status is CheckStatus.PASSED:
            ruled_out.append(finding_id)
        else:
            undetermined.append((finding_id, result.reason or result.status.value))
    return Verdicts(tuple(confirmed), tuple(ruled_out), tuple(undetermined), tuple(not_checked))


def _focus(report: Report, ids: Sequence[str]) -> Report:
    """The report cut down to the checks and findings of ``ids``."""
    order = {finding_id: i for i, finding_id in enumerate(ids)}
    results = sorted(
        (r for r in report.results if r.spec.id in order), key=lambda r: order[r.spec.id]
    )
    findings = tuple(f for f in report.findings if f.id in order)
    return Report(context=report.context, results=tuple(results), findings=findings)


def _summary_data(matches: Sequence[Match], verdicts: Verdicts) -> dict[str, Any]:
    return {
        "recognised": [
            {
                "id": m.signature.id,
                "name": m.signature.name,
                "matched": m.quote,
                "findings": list(m.signature.findings),
                "advice": m.signature.advice,
                "catalogue": m.signature.catalogue,
                "source": m.signature.source,
                "reviewed": m.signature.reviewed,
            }
            for m in matches
        ],
        "confirmed": list(verdicts.confirmed),
        "ruled_out": list(verdicts.ruled_out),
        "undetermined": [{"id": i, "reason": r} for i, r in verdicts.undetermined],
        "not_checked": list(verdicts.not_checked),
    }


def _conclusion(data: dict[str, Any]) -> str:
    if not (data["confirmed"] or data["ruled_out"] or data["undetermined"]):
        return "torch-doctor has no check for this cause yet: follow the advice above."
    if data["confirmed"]:
        return "Confirmed here: " + ", ".join(data["confirmed"]) + " (remedies below)."
    if data["ruled_out"] and not data["undetermined"] and not data["not_checked"]:
        return (
            "Ruled out here: every check for this failure passed in this environment. "
            "Is the error from another environment (another venv, machine or container)?"
        )
    return "Not confirmed here: no check for this failure found its cause in this environment" + (
        ", and some could not judge." if data["undetermined"] else "."
    )


def _terminal_preface(data: dict[str, Any]) -> list[str]:
    lines = []
    for entry in data["recognised"]:
        lines.append(f"Recognised: {entry['name']}")
        lines.append(f'  signature {entry["id"]}: "{entry["matched"]}"')
        lines.append(
            f"  seen in {entry['source']} (catalogue {entry['catalogue']}, "
            f"reviewed {entry['reviewed']})"
        )
        if entry["advice"]:
            lines.append(f"  {entry['advice']}")
    lines.append(_conclusion(data))
    for item in data["undetermined"]:
        lines.append(f"  could not judge {item['id']}: {item['reason']}")
    if data["not_checked"]:
        lines.append(
            "  not checked by torch-doctor " + _version() + ": " + ", ".join(data["not_checked"])
        )
    lines.append("")
    return lines


def _markdown_preface(data: dict[str, Any]) -> list[str]:
    from doctor.render.markdown import code, md

    lines = ["## torch-doctor explain", ""]
    for entry in data["recognised"]:
        lines.append(
            f"**Recognised:** {md(entry['name'])} ({code(entry['id'])}; "
            f"[source]({entry['source']}), reviewed {entry['reviewed']})"
        )
        lines += ["", f"> {code(entry['matched'])}", ""]
        if entry["advice"]:
            lines += [md(entry["advice"]), ""]
    lines += [f"**{md(_conclusion(data))}**", ""]
    for item in data["undetermined"]:
        lines.append(f"- could not judge {code(item['id'])}: {md(item['reason'])}")
    if data["not_checked"]:
        lines.append(
            "- not checked by this version: " + ", ".join(code(i) for i in data["not_checked"])
        )
    lines.append("")
    return lines


def _version() -> str:
    from doctor import __version__

    return __version__


UNKNOWN_MESSAGE = (
    "torch-doctor does not recognise this error text.\n"
    "Run `torch-doctor` for the full diagnosis of this environment; to ask for help, attach "
    "`torch-doctor --format markdown` (redacted by default) together with the error.\n"
)


def explain(text: str, diagnose: Callable[[], Report], options: ExplainOptions) -> int:
    """Print what the error means and what this environment says about it; the exit code."""
    from doctor.render.output import default_redaction, prepare, render_text, show, write_output

    matches = match_signatures(text)
    if not matches:
        if options.fmt is Format.JSON:
            unknown = {**_summary_data([], Verdicts((), (), (), ())), "message": UNKNOWN_MESSAGE}
            write_output(json.dumps({"explain": unknown}, indent=2) + "\n", options.output)
        else:
            write_output(UNKNOWN_MESSAGE, options.output)
        return EXIT_OK

    wanted = {f for m in matches for f in m.signature.findings}
    if not wanted & set(REGISTRY):
        # Nothing here can confirm or rule it out: say what it is and what to do, quickly.
        empty = Verdicts((), (), (), tuple(sorted(wanted)))
        summary = _summary_data(matches, empty)
        if options.fmt is Format.JSON:
            write_output(json.dumps({"explain": summary}, indent=2) + "\n", options.output)
        elif options.fmt is Format.MARKDOWN:
            write_output("\n".join(_markdown_preface(summary)), options.output)
        else:
            write_output("\n".join(_terminal_preface(summary)), options.output)
        return EXIT_OK

    report = diagnose()
    verdicts = _verdicts(matches, report)
    focused = _focus(report, verdicts.ids)
    redacted = default_redaction(options.fmt, options.redact)
    prepared = prepare(
        focused, options.command, redacted=redacted, extra=_summary_data(matches, verdicts)
    )
    data: dict[str, Any] = prepared.extra
    if options.fmt is Format.JSON:
        from doctor.render.output import report_dict

        # The report stays one schema-valid object (docs/report.schema.json) under "report".
        payload = {"explain": data, "report": report_dict(prepared)}
        write_output(json.dumps(payload, indent=2) + "\n", options.output)
    elif options.fmt is Format.MARKDOWN:
        body = render_text(prepared, Format.MARKDOWN).replace(
            "## torch-doctor report", "## What this environment says", 1
        )
        write_output("\n".join(_markdown_preface(data)) + "\n" + body, options.output)
    elif options.output is not None:
        write_output(
            "\n".join(_terminal_preface(data)) + "\n" + render_text(prepared, Format.TERMINAL),
            options.output,
        )
    else:
        sys.stdout.write("\n".join(_terminal_preface(data)) + "\n")
        sys.stdout.flush()
        show(prepared, Format.TERMINAL, None, options.no_color)
    return focused.exit_code
