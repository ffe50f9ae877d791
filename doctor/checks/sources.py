"""Does uv take torch from the PyTorch index pyproject.toml declares for it (catalogue 3)?

uv uses an explicit index only for the packages ``[tool.uv.sources]`` pins to it, applies
sources only to the project's own dependencies, and skips a source entry whose marker does
not hold. Any of these sends torch back to PyPI (or another index) while pyproject.toml
looks as if it asked for a CUDA build from download.pytorch.org.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging.utils import canonicalize_name

from doctor.checks.cuda_compat import PYTORCH_INDEX_URL
from doctor.checks.expectations import parse_requirement
from doctor.checks.lock import uv_marker_applies
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts
from doctor.facts.project import IndexFacts, ProjectFacts
from doctor.findings import Finding, Severity

__all__ = ["pytorch_indexes", "source_entries"]


def _url(url: str) -> str:
    return url.rstrip("/")


def pytorch_indexes(project: ProjectFacts) -> list[IndexFacts]:
    """The declared indexes that are PyTorch's own (download.pytorch.org/whl/<variant>)."""
    return [i for i in project.indexes if _url(i.url).startswith(_url(PYTORCH_INDEX_URL))]


def source_entries(value: Any) -> list[Mapping[str, Any]]:
    """A [tool.uv.sources] value as a list of tables (it may be one table or a list).

    Entries uv could not read either (not a table, a marker that is not a string) are left
    out: uv refuses such a pyproject.toml, and it says so itself.
    """
    entries = [value] if isinstance(value, Mapping) else value if isinstance(value, list) else []
    return [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("marker", ""), str)]


def _locked_here(markers: tuple[str, ...], environment: Mapping[str, str]) -> bool:
    """A uv.lock entry with resolution markers applies when one of them holds here."""
    return not markers or any(uv_marker_applies(m, environment) for m in markers)


def _direct(project: ProjectFacts, name: str) -> bool:
    for text in project.declared_dependencies:
        requirement = parse_requirement(text)
        if requirement is not None and canonicalize_name(requirement.name) == name:
            return True
    return False


def _causes(facts: Facts, project: ProjectFacts, indexes: list[IndexFacts]) -> list[str]:
    environment = facts.interpreter.marker_environment if facts.interpreter else {}
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
    family="lock",
    summary="pyproject.toml declares a PyTorch index, but uv.lock takes torch from elsewhere.",
    label="torch comes from the declared PyTorch index",
)
def torch_index_not_used(facts: Facts) -> Outcome:
    project = facts.project
    if project is None or project.pyproject_path is None:
        return Skip("no uv project found")
    if project.pyproject_error is not None:
        return Skip("pyproject.toml could not be read")
    indexes = pytorch_indexes(project)
    if not indexes:
        return Skip("pyproject.toml declares no PyTorch index")
    if project.lock_path is None or project.lock_error is not None:
        return Skip("no readable uv.lock")
    environment = facts.interpreter.marker_environment if facts.interpreter else {}
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
    causes = _causes(facts, project, indexes)
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
            data={
                "indexes": [
                    {"name": i.name, "url": i.url, "explicit": i.explicit} for i in indexes
                ],
                "locked_sources": [dict(p.source) for p in elsewhere],
                "torch_is_direct": _direct(project, "torch"),
                "causes": causes,
            },
        )
    ]
