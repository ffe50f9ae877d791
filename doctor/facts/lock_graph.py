"""Facts for drift: the whole uv.lock graph and the settings that decide what `uv sync` installs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GraphDependency", "GraphPackage", "LockGraph"]


@dataclass(frozen=True)
class GraphDependency:
    """An edge of uv.lock: a dependency with its version when several are locked."""

    name: str
    version: str | None = None
    marker: str | None = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphPackage:
    """One [[package]] of uv.lock with all its dependency lists."""

    name: str
    version: str | None
    source: dict[str, str] = field(default_factory=dict)
    resolution_markers: tuple[str, ...] = ()
    dependencies: tuple[GraphDependency, ...] = ()
    optional: dict[str, tuple[GraphDependency, ...]] = field(default_factory=dict)
    groups: dict[str, tuple[GraphDependency, ...]] = field(default_factory=dict)
    wheels: tuple[str, ...] = ()  # wheel file names


@dataclass(frozen=True)
class LockGraph:
    """uv.lock's packages and what pyproject.toml says about syncing them.

    ``default_groups`` is ``[tool.uv] default-groups`` as written (a list, or "all"),
    None when unset (uv then syncs the ``dev`` group). ``conflicts`` is ``[tool.uv]
    conflicts`` as written (lists of ``{extra = …}`` / ``{group = …}`` tables).
    """

    project: str | None
    packages: tuple[GraphPackage, ...] = ()
    extras: tuple[str, ...] = ()  # [project.optional-dependencies] names
    groups: tuple[str, ...] = ()  # [dependency-groups] names
    default_groups: tuple[str, ...] | str | None = None
    conflicts: tuple[tuple[dict[str, str], ...], ...] = ()
