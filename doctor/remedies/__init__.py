"""Remedies: computed from the findings' data and the facts, never canned text.

Each builder is registered for one finding id. A finding without a builder keeps the
remedies its check attached (if any).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable

from doctor.facts import Facts
from doctor.findings import Finding, Remedy

__all__ = ["BUILDERS", "attach_remedies", "remedy_for"]

Builder = Callable[[Finding, Facts], Sequence[Remedy]]
BUILDERS: dict[str, Builder] = {}


def remedy_for(finding_id: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        BUILDERS[finding_id] = builder
        return builder

    return register


def attach_remedies(findings: Sequence[Finding], facts: Facts) -> list[Finding]:
    out = []
    for finding in findings:
        builder = BUILDERS.get(finding.id)
        if builder is None:
            out.append(finding)
            continue
        remedies = tuple(finding.remedies) + tuple(builder(finding, facts))
        out.append(dataclasses.replace(finding, remedies=remedies))
    return out


from doctor.remedies import packages as _packages  # noqa: E402,F401
from doctor.remedies import driver as _driver  # noqa: E402,F401
from doctor.remedies import libraries as _libraries  # noqa: E402,F401
from doctor.remedies import companions as _companions  # noqa: E402,F401
from doctor.remedies import sources as _sources  # noqa: E402,F401
from doctor.remedies import toolchain as _toolchain  # noqa: E402,F401
from doctor.remedies import extensions as _extensions  # noqa: E402,F401
