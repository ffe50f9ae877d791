"""Remedies for torch-index-not-used: route torch (and its companions) to the index."""

from __future__ import annotations

from collections.abc import Sequence

from doctor.checks.companions import COMPANIONS
from doctor.checks.sources import pytorch_indexes, source_entries
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.driver import platform_marker, render_index_block

__all__: list[str] = []


@remedy_for("torch-index-not-used")
def torch_index_not_used(finding: Finding, facts: Facts) -> Sequence[Remedy]:
    project = facts.project
    if project is None:
        return []
    indexes = pytorch_indexes(project)
    wanted = {str(e.get("index")) for e in source_entries(project.sources.get("torch"))}
    index = next((i for i in indexes if i.name in wanted), indexes[0] if indexes else None)
    if index is None:
        return []
    remedies: list[Remedy] = []
    packages = ["torch", *(n for n in COMPANIONS if facts.distribution(n) is not None)]
    if index.name is None:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "name the index, so that [tool.uv.sources] can point at it",
                f'Add name = "pytorch" to the [[tool.uv.index]] with url = "{index.url}".',
            )
        )
    else:
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                f"send {', '.join(packages)} to the index {index.name} on this platform",
                render_index_block(index.name, None, packages, platform_marker(facts)),
                target=project.pyproject_path,
            )
        )
    if not finding.data.get("torch_is_direct"):
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "make torch a dependency of the project itself",
                "Sources apply only to the project's own dependencies: `uv add torch` (with "
                "the version you need) adds it, with the source above.",
            )
        )
    upgrade = " ".join(f"--upgrade-package {p}" for p in packages)
    remedies.append(Remedy(RemedyKind.SHELL, "re-lock and sync", f"uv lock {upgrade}\nuv sync\n"))
    return remedies
