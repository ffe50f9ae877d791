"""Facts about the uv project: pyproject.toml and uv.lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class IndexFacts:
    name: Optional[str]
    url: str
    explicit: bool = False
    default: bool = False


@dataclass(frozen=True)
class LockedDependency:
    name: str
    marker: Optional[str] = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: Optional[str]
    source: dict[str, str] = field(default_factory=dict)
    dependencies: tuple[LockedDependency, ...] = ()
    resolution_markers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectFacts:
    root: str
    pyproject_path: Optional[str]
    lock_path: Optional[str]
    found_by: str  # "--project", "venv parent", "working directory"
    name: Optional[str] = None
    pyproject_error: Optional[str] = None
    lock_error: Optional[str] = None
    declared_dependencies: tuple[str, ...] = ()
    indexes: tuple[IndexFacts, ...] = ()
    sources: dict[str, Any] = field(default_factory=dict)
    dependency_metadata: tuple[dict[str, Any], ...] = ()
    locked_torch: tuple[LockedPackage, ...] = ()
    locked_names: tuple[str, ...] = ()
