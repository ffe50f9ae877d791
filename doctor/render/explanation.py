"""The `explain` preface: the failures recognised in the pasted text and what the checks
say about them, for each format. The judgement is in the report's ``Explanation``."""

from __future__ import annotations

import json
from typing import Any

from doctor import __version__
from doctor.render.formats import Format, assert_never
from doctor.report import Explanation

__all__ = [
    "explanation_dict",
    "explanation_markdown",
    "explanation_text",
    "render_explanation_only",
]


def explanation_dict(explanation: Explanation) -> dict[str, Any]:
    return {
        "recognised": [
            {
                "id": r.id,
                "name": r.name,
                "matched": r.matched,
                "findings": list(r.findings),
                "advice": r.advice,
                "source": r.source,
            }
            for r in explanation.recognised
        ],
        "conclusion": explanation.conclusion,
        "confirmed": list(explanation.confirmed),
        "ruled_out": list(explanation.ruled_out),
        "undetermined": [{"id": i, "reason": r} for i, r in explanation.undetermined],
        "not_checked": list(explanation.not_checked),
    }


def explanation_text(explanation: Explanation) -> list[str]:
    lines = []
    for entry in explanation.recognised:
        lines.append(f"Recognised: {entry.name}")
        lines.append(f'  "{entry.matched}"')
        lines.append(f"  seen in {entry.source}")
        if entry.advice:
            lines.append(f"  {entry.advice}")
    lines.append(explanation.conclusion)
    for finding_id, reason in explanation.undetermined:
        lines.append(f"  could not judge {finding_id}: {reason}")
    if explanation.not_checked:
        lines.append(
            f"  not checked by torch-doctor {__version__}: " + ", ".join(explanation.not_checked)
        )
    lines.append("")
    return lines


def explanation_markdown(explanation: Explanation) -> list[str]:
    from doctor.render.markdown import code, md

    lines = ["## torch-doctor explain", ""]
    for entry in explanation.recognised:
        lines.append(
            f"**Recognised:** {md(entry.name)} ({code(entry.id)}; [source]({entry.source}))"
        )
        lines += ["", f"> {code(entry.matched)}", ""]
        if entry.advice:
            lines += [md(entry.advice), ""]
    lines += [f"**{md(explanation.conclusion)}**", ""]
    for finding_id, reason in explanation.undetermined:
        lines.append(f"- could not judge {code(finding_id)}: {md(reason)}")
    if explanation.not_checked:
        lines.append(
            "- not checked by this version: " + ", ".join(code(i) for i in explanation.not_checked)
        )
    lines.append("")
    return lines


def render_explanation_only(explanation: Explanation, fmt: Format) -> str:
    """When no check of this version bears on the error: the preface alone."""
    if fmt is Format.JSON:
        return json.dumps({"explain": explanation_dict(explanation)}, indent=2) + "\n"
    if fmt is Format.MARKDOWN:
        return "\n".join(explanation_markdown(explanation))
    if fmt is Format.TERMINAL:
        return "\n".join(explanation_text(explanation))
    assert_never(fmt)
