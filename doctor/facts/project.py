"""Facts about the uv project: pyproject.toml and uv.lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IndexFacts:
    """A package index declared in pyproject.toml ([[tool.uv.index]])."""

    name: str | None
    url: str
    explicit: bool = False
    default: bool = False


@dataclass(frozen=True)
class LockedDependency:
    """One dependency of a locked package, as uv.lock records it."""

    name: str
    marker: str | None = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockedPackage:
    """One package entry of uv.lock (here: torch's)."""

    name: str
    version: str | None
    source: dict[str, str] = field(default_factory=dict)
    dependencies: tuple[LockedDependency, ...] = ()
    resolution_markers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectFacts:
    """The uv project: what pyproject.toml declares and what uv.lock records."""

    root: str
    pyproject_path: str | None
    lock_path: str | None
    found_by: str  # "--project", "venv parent", "working directory"
    name: str | None = None
    pyproject_error: str | None = None
    lock_error: str | None = None
    declared_dependencies: tuple[str, ...] = ()
    indexes: tuple[IndexFacts, ...] = ()
    sources: dict[str, Any] = field(default_factory=dict)
    dependency_metadata: tuple[dict[str, Any], ...] = ()
    locked_torch: tuple[LockedPackage, ...] = ()
    locked_names: tuple[str, ...] = ()
    # pyproject.toml's whole [tool.uv] table, as parsed (what uv's issue template asks for).
    tool_uv: dict[str, Any] = field(default_factory=dict)
    # `root` symlink-resolved, and the venv UV_PROJECT_ENVIRONMENT names (relative to the
    # root) resolved alike: whether the project owns the inspected venv is decided on
    # these, resolved by the probe on the inspected machine.
    real_root: str | None = None
    real_environment: str | None = None
    # Whether torch-doctor ran in the project's directory (or below it), where `uv sync`
    # and `uv lock` find this project; None when not known (facts built by hand).
    cwd_inside: bool | None = None
