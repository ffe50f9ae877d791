"""Does uv take torch, with its dependencies, from where the project says (catalogue 1, 3)?

The founding case (uv#11945): the PyTorch index served torch 2.6.0+cu126 wheels whose
metadata differed by platform; uv reads one wheel's metadata for all of them, so the
lock recorded torch without its nvidia dependencies and `uv sync` never installs them.

uv uses an explicit index only for the packages ``[tool.uv.sources]`` pins to it, applies
sources only to the project's own dependencies, and skips a source entry whose marker does
not hold. Any of these sends torch back to PyPI (or another index) while pyproject.toml
looks as if it asked for a CUDA build from download.pytorch.org.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.expectations import applicable_requirements, parse_requirement
from doctor.derive.uv import (
    matching_locked_torch,
    pytorch_indexes,
    source_entries,
    uv_marker_applies,
)
from doctor.facts import LockedDependency
from doctor.facts.project import IndexFacts, ProjectFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.remedies.metadata_block import entry_uv_uses, render_dependency_metadata
from doctor.remedies.variants import platform_marker, render_index_block

__all__ = ["IndexRef", "LockMissingDependencies", "TorchIndexNotUsed"]

RELOCK = "uv lock\nuv sync"


def _recorded(dependencies: tuple[LockedDependency, ...], environment: dict[str, str]) -> set[str]:
    return {
        canonicalize_name(d.name) for d in dependencies if uv_marker_applies(d.marker, environment)
    }


# --- lock-missing-dependencies ------------------------------------------------------------


@dataclass(frozen=True)
class LockMissingDependencies(Payload):
    version: str
    missing: tuple[str, ...]  # torch's requirements, as the installed wheel declares them
    brought: tuple[str, ...]  # wheels the missing requirements bring (cuda-toolkit's extras)
    lock_path: str | None
    pyproject_path: str | None
    existing_metadata_entry: bool

    def subjects(self) -> frozenset[str]:
        names = {
            canonicalize_name(
                r.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip()
            )
            for r in self.missing
        }
        return frozenset(names | set(self.brought))


@check(
    "lock-missing-dependencies",
    severities=(Severity.ERROR,),
    family="lock",
    summary="uv.lock records torch without requirements its installed wheel declares here.",
    label="uv.lock records torch's dependencies",
    payload=LockMissingDependencies,
    requires=("interpreter", "torch", "torch-metadata", "lock", "uv-project"),
)
def lock_missing_dependencies(ctx: Context) -> Outcome:
    facts = ctx.facts
    project = facts.project
    torch = ctx.torch
    assert project is not None and torch is not None
    if not project.locked_torch:
        return Skip("uv.lock does not record torch")
    environment = ctx.marker_environment
    entries = matching_locked_torch(facts)
    if not entries:
        locked = ", ".join(sorted({str(p.version) for p in project.locked_torch}))
        return Skip(f"uv.lock records torch {locked}, the environment has torch {torch.version}")

    requirements, _ = applicable_requirements(torch.requires_dist, environment)
    missing: list[str] = []
    missing_names: set[str] = set()
    for entry in entries:
        recorded = _recorded(entry.dependencies, environment)
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name not in recorded and str(requirement) not in missing:
                missing.append(str(requirement))
                missing_names.add(name)
    if not missing:
        return []
    brought = tuple(
        w.name
        for w in (ctx.expected.wheels if ctx.expected is not None else ())
        if w.required_by.split("[", 1)[0] in missing_names and w.required_by != "torch"
    )
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
            data=LockMissingDependencies(
                version=torch.version,
                missing=tuple(missing),
                brought=brought,
                lock_path=project.lock_path,
                pyproject_path=project.pyproject_path,
                existing_metadata_entry=bool(existing),
            ),
        )
    ]


def _declares_all(entry: Mapping[str, Any], missing: Sequence[str], ctx: Context) -> bool:
    """Whether a dependency-metadata entry declares every missing requirement, pins included.

    An entry copied from another build declares the same names with other versions:
    re-locking with it would install the wrong wheels, so it counts as not declaring them.
    """
    requires = entry.get("requires-dist")
    if not isinstance(requires, list):
        return False
    declared, _ = applicable_requirements([str(r) for r in requires], ctx.marker_environment)
    pins = {(canonicalize_name(r.name), r.specifier, frozenset(r.extras)) for r in declared}
    wanted = [parse_requirement(m) for m in missing]
    return all(
        w is not None and (canonicalize_name(w.name), w.specifier, frozenset(w.extras)) in pins
        for w in wanted
    )


@remedy("lock-missing-dependencies")
def _lock_missing(finding: Finding[LockMissingDependencies], ctx: Context) -> list[Remedy]:
    torch = ctx.torch
    if torch is None:
        return []
    entries = ctx.facts.project.dependency_metadata if ctx.facts.project else ()
    used = entry_uv_uses(entries, "torch", torch.version)
    if used is not None and _declares_all(used, finding.data.missing, ctx):
        return [
            Remedy(
                RemedyKind.SHELL,
                "pyproject.toml already declares these for uv; uv.lock predates it: "
                "re-lock and sync",
                RELOCK,
            )
        ]
    if used is not None and used.get("version") is not None:
        # uv reads the first entry for a version and silently ignores later ones:
        # appending a second entry would change nothing.
        summary = (
            f"replace the [[tool.uv.dependency-metadata]] entry for torch {used['version']} "
            "in pyproject.toml with this one (uv uses only the first entry for a version; "
            "`torch-doctor fix` does it)"
        )
    else:
        summary = (
            "declare torch's metadata for uv (append to pyproject.toml, or run "
            "`torch-doctor fix`: it shows the diff and keeps a backup)"
        )
    return [
        Remedy(
            RemedyKind.TOML,
            summary,
            render_dependency_metadata(torch),
            target=finding.data.pyproject_path,
        ),
        Remedy(RemedyKind.SHELL, "then re-lock and sync", RELOCK),
    ]


# --- torch-index-not-used --------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRef:
    name: str | None
    url: str
    explicit: bool


@dataclass(frozen=True)
class TorchIndexNotUsed(Payload):
    indexes: tuple[IndexRef, ...]
    locked_registries: tuple[str, ...]
    torch_is_direct: bool
    causes: tuple[str, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset({"torch-source"})


def _url(url: str) -> str:
    return url.rstrip("/")


def _locked_here(markers: tuple[str, ...], environment: Mapping[str, str]) -> bool:
    """A uv.lock entry with resolution markers applies when one of them holds here."""
    return not markers or any(uv_marker_applies(m, environment) for m in markers)


def _direct(project: ProjectFacts, name: str) -> bool:
    for text in project.declared_dependencies:
        requirement = parse_requirement(text)
        if requirement is not None and canonicalize_name(requirement.name) == name:
            return True
    return False


def _causes(ctx: Context, project: ProjectFacts, indexes: list[IndexFacts]) -> list[str]:
    environment = ctx.marker_environment
    names = ", ".join(str(i.name or i.url) for i in indexes)
    entries = source_entries(project.sources.get("torch"))
    causes = []
    if not entries:
        explicit = all(i.explicit for i in indexes)
        causes.append(
            f"no [tool.uv.sources] entry sends torch to {names}"
            + (": uv uses an explicit index only for the packages pinned to it" if explicit else "")
        )
    else:
        holding = [e for e in entries if uv_marker_applies(e.get("marker"), environment)]
        if not holding:
            here = (
                f"{environment.get('sys_platform', '?')}/{environment.get('platform_machine', '?')}"
            )
            markers = "; ".join(str(e.get("marker")) for e in entries)
            causes.append(
                f"no marker of torch's [tool.uv.sources] entries holds here ({here}): {markers}"
            )
        declared = {i.name for i in project.indexes}
        for entry in holding:
            index = entry.get("index")
            if index is not None and index not in declared:
                causes.append(f"torch's source names the index {index!r}, which is not declared")
    if not _direct(project, "torch"):
        causes.append(
            "torch is not a dependency of the project itself: uv applies [tool.uv.sources] "
            "only to the project's own dependencies (astral-sh/uv#8253)"
        )
    if not causes:
        causes.append(
            "pyproject.toml routes torch to the index now, so uv.lock predates that: re-lock"
        )
    return causes


@check(
    "torch-index-not-used",
    severities=(Severity.WARNING,),
    family="lock",
    summary="pyproject.toml declares a PyTorch index, but uv.lock takes torch from elsewhere.",
    label="torch comes from the declared PyTorch index",
    payload=TorchIndexNotUsed,
    requires=("project", "lock", "uv-project"),
)
def torch_index_not_used(ctx: Context) -> Outcome:
    project = ctx.facts.project
    assert project is not None
    indexes = pytorch_indexes(project)
    if not indexes:
        return Skip("pyproject.toml declares no PyTorch index")
    environment = ctx.marker_environment
    locked = [p for p in project.locked_torch if _locked_here(p.resolution_markers, environment)]
    if not locked:
        return Skip("uv.lock records no torch for this platform")
    # torch may be routed on purpose to another declared index (a mirror): that one counts.
    routed = {
        str(e.get("index"))
        for e in source_entries(project.sources.get("torch"))
        if uv_marker_applies(e.get("marker"), environment)
    }
    urls = {_url(i.url) for i in indexes} | {
        _url(i.url) for i in project.indexes if i.name in routed
    }
    # Only registry sources: a torch from a wheel file, a URL or git was chosen on purpose.
    elsewhere = [
        p for p in locked if "registry" in p.source and _url(p.source["registry"]) not in urls
    ]
    if not elsewhere:
        return []
    evidence = [
        "pyproject.toml declares "
        + ", ".join(
            f"{i.name or 'an index'} ({i.url}{', explicit' if i.explicit else ''})" for i in indexes
        )
    ]
    for package in elsewhere:
        evidence.append(
            f"uv.lock records torch {package.version} from {package.source['registry']}"
        )
    causes = _causes(ctx, project, indexes)
    evidence += causes
    return [
        Finding(
            id="torch-index-not-used",
            severity=Severity.WARNING,
            title="uv takes torch from elsewhere than the PyTorch index pyproject.toml declares",
            detail=(
                "pyproject.toml declares a PyTorch index, so a CUDA build of torch from it "
                "looks intended; uv.lock records torch from another place. On Linux that is "
                "PyPI's CUDA variant, which may need a newer driver; on Windows and macOS it "
                "is a CPU-only torch. uv uses an explicit index only for packages that "
                "[tool.uv.sources] pins to it, and applies sources only to the project's own "
                "dependencies."
            ),
            evidence=tuple(evidence),
            data=TorchIndexNotUsed(
                indexes=tuple(IndexRef(i.name, i.url, i.explicit) for i in indexes),
                locked_registries=tuple(p.source["registry"] for p in elsewhere),
                torch_is_direct=_direct(project, "torch"),
                causes=tuple(causes),
            ),
        )
    ]


def _routed_here(ctx: Context, project: ProjectFacts, package: str, index: str) -> bool:
    """[tool.uv.sources] sends ``package`` to ``index`` on the inspected platform."""
    return any(
        e.get("index") == index and uv_marker_applies(e.get("marker"), ctx.marker_environment)
        for e in source_entries(project.sources.get(package))
    )


@remedy("torch-index-not-used")
def _torch_index_not_used(finding: Finding[TorchIndexNotUsed], ctx: Context) -> list[Remedy]:
    from doctor.remedies.variants import family

    project = ctx.facts.project
    if project is None or ctx.workflow is not Workflow.UV_PROJECT:
        return []
    indexes = pytorch_indexes(project)
    wanted = {str(e.get("index")) for e in source_entries(project.sources.get("torch"))}
    index = next((i for i in indexes if i.name in wanted), indexes[0] if indexes else None)
    if index is None:
        return []
    remedies: list[Remedy] = []
    packages = family(ctx)
    if index.name is None:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "name the index, so that [tool.uv.sources] can point at it",
                f'Add name = "pytorch" to the [[tool.uv.index]] with url = "{index.url}".',
            )
        )
    elif not all(_routed_here(ctx, project, p, index.name) for p in packages):
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                f"send {', '.join(packages)} to the index {index.name} on this platform "
                "(`torch-doctor fix` adds it)",
                render_index_block(index.name, None, packages, platform_marker(ctx)),
                target=project.pyproject_path,
            )
        )
    # else: pyproject.toml routes them already (uv.lock predates it): the re-lock is all.
    if not finding.data.torch_is_direct:
        # A re-lock changes nothing while torch is only a dependency of a dependency: uv
        # applies sources to the project's own. `uv add` makes it one (and locks, syncs).
        release = _public(ctx.torch.version if ctx.torch is not None else None)
        spec = f"torch=={release}" if release else "torch"
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                ("then " if remedies else "")
                + "make torch a dependency of the project itself, at the installed release "
                "(uv applies [tool.uv.sources] only to the project's own dependencies; "
                "uv add locks and syncs)",
                f"uv add {shlex.quote(spec)}\n",
            )
        )
        return remedies
    upgrade = " ".join(f"--upgrade-package {p}" for p in packages)
    remedies.append(Remedy(RemedyKind.SHELL, "re-lock and sync", f"uv lock {upgrade}\nuv sync\n"))
    return remedies


def _public(version: str | None) -> str | None:
    """'2.14.1' for '2.14.1+cu130': what a requirement names (the index picks the build)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).public if version else None
    except InvalidVersion:
        return None
