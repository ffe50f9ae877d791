"""Does uv.lock record torch with the dependencies its installed wheel declares here?

The founding case (uv#11945): the PyTorch index served torch 2.6.0+cu126 wheels whose
metadata differed by platform; uv reads one wheel's metadata for all of them, so the
lock recorded torch without its nvidia dependencies and `uv sync` never installs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name

from doctor.checks.expectations import applicable_requirements, marker_applies, same_version
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts, LockedDependency, LockedPackage
from doctor.findings import Finding, Severity

__all__ = ["matching_locked_torch", "uv_marker_applies"]


_MARKER_EXTRA = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


def uv_marker_applies(marker: str | None, environment: Mapping[str, str]) -> bool:
    """Whether a marker as uv writes it (uv.lock, [tool.uv.sources]) holds here."""
    if not marker:
        return True
    try:
        parsed = Marker(marker)
    except InvalidMarker:
        # Includes uv's `group == '...'` markers, which are not PEP 508: cannot judge, so
        # never raise a false alarm on it.
        return True
    # uv's conflict markers name the project's extras (`extra == 'extra-4-demo-cu130'`).
    # Whether one is active depends on how the user syncs, so each extra the marker names
    # counts as active; the rest of the marker (the platform) must still hold here.
    extras = _MARKER_EXTRA.findall(marker)
    return marker_applies(parsed, environment, extras or ("",))


def matching_locked_torch(facts: Facts) -> list[LockedPackage]:
    """The uv.lock entries for the installed torch version that apply to this platform."""
    project = facts.project
    torch = facts.distribution("torch")
    if project is None or torch is None or facts.interpreter is None:
        return []
    environment = facts.interpreter.marker_environment
    entries = [p for p in project.locked_torch if same_version(p.version, torch.version)]
    applicable = [
        p
        for p in entries
        if not p.resolution_markers
        or any(uv_marker_applies(m, environment) for m in p.resolution_markers)
    ]
    return applicable or entries


def _recorded(dependencies: tuple[LockedDependency, ...], environment: dict[str, str]) -> set[str]:
    return {
        canonicalize_name(d.name) for d in dependencies if uv_marker_applies(d.marker, environment)
    }


@check(
    "lock-missing-dependencies",
    family="lock",
    summary="uv.lock records torch without requirements its installed wheel declares here.",
    label="uv.lock records torch's dependencies",
)
def lock_missing_dependencies(facts: Facts) -> Outcome:
    project = facts.project
    if facts.interpreter is None:
        return Skip("the inspected interpreter could not be probed")
    torch = facts.distribution("torch")
    if torch is None:
        return Skip("torch is not installed")
    if torch.error is not None:
        return Skip(f"torch's metadata cannot be used: {torch.error}")
    if project is None or project.lock_path is None:
        return Skip("no uv.lock found")
    if project.lock_error is not None:
        return Skip(f"uv.lock could not be read: {project.lock_error}")
    if not project.locked_torch:
        return Skip("uv.lock does not record torch")
    environment = facts.interpreter.marker_environment
    entries = matching_locked_torch(facts)
    if not entries:
        locked = ", ".join(sorted({str(p.version) for p in project.locked_torch}))
        return Skip(f"uv.lock records torch {locked}, the environment has torch {torch.version}")

    requirements, _ = applicable_requirements(torch.requires_dist, environment)
    missing = []
    for entry in entries:
        recorded = _recorded(entry.dependencies, environment)
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name not in recorded and str(requirement) not in missing:
                missing.append(str(requirement))
    if not missing:
        return []

    existing = [
        m
        for m in project.dependency_metadata
        if canonicalize_name(str(m.get("name", ""))) == "torch"
    ]
    source = entries[0].source
    evidence = [f"{r}: declared by the installed wheel, absent from uv.lock" for r in missing]
    where = source.get("registry") or source.get("url") or source.get("path")
    if where:
        evidence.append(f"uv.lock: torch {entries[0].version} from {where}")
    for declared in existing:
        evidence.append(
            f"pyproject.toml already has a [[tool.uv.dependency-metadata]] entry for torch "
            f"{declared.get('version', '(any version)')}, and the lock still lacks these"
        )
    return [
        Finding(
            id="lock-missing-dependencies",
            severity=Severity.ERROR,
            title=f"uv.lock records torch {torch.version} without {len(missing)} "
            f"of its dependencies",
            detail=(
                "The installed torch wheel declares these requirements for this platform, "
                "but the project's lock does not record them under torch, so `uv sync` "
                "will never install them. uv assumes every wheel of one version shares "
                "its metadata; when an index serves wheels whose metadata differ by "
                "platform (as the PyTorch index did for torch 2.6.0+cu126, uv#11945), "
                "the lock keeps one platform's dependencies for all. Declaring the right "
                "metadata in pyproject.toml makes uv lock them."
            ),
            evidence=tuple(evidence),
            data={
                "version": torch.version,
                "missing": missing,
                "lock_path": project.lock_path,
                "pyproject_path": project.pyproject_path,
                "existing_metadata_entry": bool(existing),
            },
        )
    ]
