"""Remedies of venv-lock-drift: sync with what installed this venv, or do not sync."""

from __future__ import annotations

from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for


@remedy_for("venv-lock-drift")
def _drift(finding: Finding, facts: Facts) -> list[Remedy]:
    remedies = []
    extras = finding.data.get("keep_extras", [])
    groups = finding.data.get("keep_groups", [])
    if extras:
        flag = f"--extra {extras[0]}"
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"always sync and run with the extra that selects this torch ({extras[0]})",
                f"uv sync {flag}\nuv run {flag} python your_script.py",
            )
        )
    if groups:
        default = finding.data.get("keep_default_groups") or [groups[0]]
        listed = ", ".join(f'"{g}"' for g in default)
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                f"make the group {groups[0]} a default group, so plain `uv sync`/`uv run` keep it",
                f"[tool.uv]\ndefault-groups = [{listed}]\n",
                target=finding.data.get("pyproject_path"),
            )
        )
    remedies.append(
        Remedy(
            RemedyKind.SHELL,
            "or keep uv from syncing this venv before it runs a command "
            "(UV_NO_SYNC=1 does the same for every `uv run`)",
            "uv run --no-sync python your_script.py",
        )
    )
    return remedies
