"""Read the uv.lock graph and pyproject.toml's uv settings (drift, uv torch configuration).

Reads only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from doctor.facts.lock_graph import GraphDependency, GraphPackage, LockGraph
from doctor.facts.uv_settings import UvSettings
from doctor.probe.project import TomlError, load_toml
from doctor.probe.text import clean_tree

__all__ = ["probe_lock_graph", "probe_uv_settings"]


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _edges(values: Any) -> tuple[GraphDependency, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(
        GraphDependency(
            name=str(dep["name"]),
            version=None if dep.get("version") is None else str(dep["version"]),
            marker=dep.get("marker") if isinstance(dep.get("marker"), str) else None,
            extras=_strings(dep.get("extra")),
        )
        for dep in values
        if isinstance(dep, dict) and "name" in dep
    )


def _wheel_names(values: Any) -> tuple[str, ...]:
    """The file names of a package's locked wheels (the last part of each url or path)."""
    names = []
    for wheel in values if isinstance(values, list) else ():
        where = next(
            (
                wheel[k]
                for k in ("url", "path", "filename")
                if isinstance(wheel, dict) and isinstance(wheel.get(k), str)
            ),
            None,
        )
        if where:
            names.append(unquote(re.split(r"[?#]", where, maxsplit=1)[0].rsplit("/", 1)[-1]))
    return tuple(names)


def _conflicts(uv: dict[str, Any]) -> tuple[tuple[dict[str, str], ...], ...]:
    """[tool.uv] conflicts: lists of {extra = …} / {group = …} (/ package) tables."""
    return tuple(
        tuple({str(k): str(v) for k, v in item.items()} for item in group if isinstance(item, dict))
        for group in _list(uv.get("conflicts"))
        if isinstance(group, list)
    )


def probe_lock_graph(root: Path) -> LockGraph | None:
    """None when there is no readable uv.lock (the project probe reports why)."""
    try:
        lock = clean_tree(load_toml(root / "uv.lock", "uv.lock"))
    except TomlError:
        return None
    try:
        pyproject = clean_tree(load_toml(root / "pyproject.toml"))
    except TomlError:
        pyproject = {}
    packages = []
    for entry in _list(lock.get("package")):
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        packages.append(
            GraphPackage(
                name=str(entry["name"]),
                version=None if entry.get("version") is None else str(entry["version"]),
                source={str(k): str(v) for k, v in _table(entry.get("source")).items()},
                resolution_markers=_strings(entry.get("resolution-markers")),
                dependencies=_edges(entry.get("dependencies")),
                optional={
                    str(k): _edges(v) for k, v in _table(entry.get("optional-dependencies")).items()
                },
                groups={
                    str(k): _edges(v) for k, v in _table(entry.get("dev-dependencies")).items()
                },
                wheels=_wheel_names(entry.get("wheels")),
            )
        )
    project = _table(pyproject.get("project"))
    uv = _table(_table(pyproject.get("tool")).get("uv"))
    default_groups = uv.get("default-groups")
    if isinstance(default_groups, list):
        default_groups = tuple(str(g) for g in default_groups)
    elif default_groups != "all":
        default_groups = None
    conflicts = _conflicts(uv)
    return LockGraph(
        project=None if project.get("name") is None else str(project["name"]),
        packages=tuple(packages),
        extras=tuple(str(e) for e in _table(project.get("optional-dependencies"))),
        groups=tuple(str(g) for g in _table(pyproject.get("dependency-groups"))),
        default_groups=default_groups,
        conflicts=conflicts,
    )


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _names(requirements: Any) -> tuple[str, ...]:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    names = []
    for text in requirements if isinstance(requirements, list) else ():
        if not isinstance(text, str):
            continue  # {include-group = …}
        try:
            names.append(str(canonicalize_name(Requirement(text).name)))
        except InvalidRequirement:
            continue
    return tuple(names)


def probe_uv_settings(pyproject: Path) -> UvSettings | None:
    """None when pyproject.toml cannot be read (the project probe reports why)."""
    try:
        data = clean_tree(load_toml(pyproject))
    except TomlError:
        return None
    project = _table(data.get("project"))
    uv = _table(_table(data.get("tool")).get("uv"))
    sources = {}
    for name, value in _table(uv.get("sources")).items():
        entries = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        sources[str(name)] = tuple(dict(e) for e in entries if isinstance(e, dict))
    conflicts = _conflicts(uv)
    backend = uv.get("torch-backend")
    pip_backend = _table(uv.get("pip")).get("torch-backend")
    strategy = uv.get("index-strategy")
    pip_strategy = _table(uv.get("pip")).get("index-strategy")
    return UvSettings(
        pyproject_path=str(pyproject),
        extras={str(k): _names(v) for k, v in _table(project.get("optional-dependencies")).items()},
        groups={str(k): _names(v) for k, v in _table(data.get("dependency-groups")).items()},
        sources=sources,
        conflicts=conflicts,
        torch_backend=None if backend is None else str(backend),
        pip_torch_backend=None if pip_backend is None else str(pip_backend),
        index_strategy=None if strategy is None else str(strategy),
        pip_index_strategy=None if pip_strategy is None else str(pip_strategy),
        environments=_strings(uv.get("environments")),
        required_environments=_strings(uv.get("required-environments")),
    )
