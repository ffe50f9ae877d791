"""Read the uv project: pyproject.toml and uv.lock. Reads only; never writes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from doctor.facts import IndexFacts, LockedDependency, LockedPackage, ProjectFacts
from doctor.knowledge import torch_family
from doctor.probe.files import UnreadableFile, read_capped
from doctor.probe.text import clean_tree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9 and 3.10
    import tomli as tomllib

__all__ = ["TORCH_FAMILY", "load_toml", "locate_project", "probe_project"]

TORCH_FAMILY = torch_family()


class TomlError(Exception):
    """A TOML file that cannot be read or parsed; the message names the file."""


# The uv.lock versions this doctor knows how to read (uv's lock format, `version = 1`).
KNOWN_LOCK_VERSIONS = (1,)


def load_toml(path: Path, kind: str = "pyproject.toml") -> dict[str, Any]:
    """Parse a project TOML file: a regular file within its size cap, UTF-8 (a leading
    BOM is accepted, as uv accepts it). Every failure is a TomlError naming the file."""
    try:
        raw = read_capped(str(path), kind)
    except UnreadableFile as exc:
        raise TomlError(str(exc)) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TomlError(f"{path}: not UTF-8 text") from exc
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise TomlError(f"{path}: nested too deeply to parse") from exc
    except (ValueError, TypeError, MemoryError) as exc:  # whatever else the parser meets
        raise TomlError(f"{path}: not valid TOML: {type(exc).__name__}: {exc}") from exc
    return data


def locate_project(
    project: str | None, venv_prefix: str | None, cwd: Path
) -> tuple[Path, str] | None:
    """The project root and how it was found: --project, the venv's parent, the cwd."""
    if project is not None:
        return Path(project).expanduser().absolute(), "--project"
    if venv_prefix:
        parent = Path(venv_prefix).parent
        if (parent / "pyproject.toml").is_file() or (parent / "uv.lock").is_file():
            return parent, "venv parent"
    from doctor.probe.target import find_project_root

    root = find_project_root(cwd)
    if root is not None:
        return root, "working directory"
    return None


def probe_project(
    root: Path, found_by: str, project_environment: str | None = None, cwd: Path | None = None
) -> ProjectFacts:
    """``project_environment``: UV_PROJECT_ENVIRONMENT as the inspected interpreter sees it;
    ``cwd``: the directory torch-doctor runs in (where a pasted `uv sync` would run)."""
    pyproject = root / "pyproject.toml"
    lock = root / "uv.lock"
    real_root = _resolved(root)
    facts: dict[str, Any] = {
        "root": str(root),
        "pyproject_path": str(pyproject) if pyproject.exists() else None,
        "lock_path": str(lock) if lock.exists() else None,
        "found_by": found_by,
        "real_root": real_root,
        "real_environment": _resolved(root / project_environment) if project_environment else None,
        "cwd_inside": _inside(cwd, real_root) if cwd is not None else None,
    }
    if pyproject.exists():
        try:
            facts.update(_read_pyproject(clean_tree(load_toml(pyproject))))
        except TomlError as exc:
            facts["pyproject_error"] = str(exc)
        except (TypeError, AttributeError, KeyError) as exc:
            facts["pyproject_error"] = f"{pyproject}: unexpected structure: {exc}"
    if lock.exists():
        try:
            facts.update(_read_lock(clean_tree(load_toml(lock, "uv.lock")), lock))
        except TomlError as exc:
            facts["lock_error"] = str(exc)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            facts["lock_error"] = f"{lock}: unexpected structure: {exc}"
    return ProjectFacts(**facts)


def _inside(cwd: Path, real_root: str | None) -> bool | None:
    """Whether ``cwd`` is the project's directory or below it (symlinks resolved)."""
    here = _resolved(cwd)
    if here is None or real_root is None:
        return None
    return Path(here) == Path(real_root) or Path(real_root) in Path(here).parents


def _resolved(path: Path) -> str | None:
    """``path`` symlink-resolved (None when it cannot be: a loop, a bad name)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return None


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_pyproject(data: dict[str, Any]) -> dict[str, Any]:
    project = _table(data.get("project"))
    uv = _table(_table(data.get("tool")).get("uv"))
    declared: list[str] = [str(d) for d in project.get("dependencies", []) or []]
    for extra in _table(project.get("optional-dependencies")).values():
        declared.extend(str(d) for d in extra or [])
    for group in _table(data.get("dependency-groups")).values():
        declared.extend(d for d in group or [] if isinstance(d, str))
    indexes = []
    for index in uv.get("index", []) or []:
        if isinstance(index, dict) and "url" in index:
            indexes.append(
                IndexFacts(
                    name=index.get("name"),
                    url=str(index["url"]),
                    explicit=bool(index.get("explicit", False)),
                    default=bool(index.get("default", False)),
                )
            )
    sources = {
        str(name): value
        for name, value in _table(uv.get("sources")).items()
        if str(name).lower() in TORCH_FAMILY
    }
    metadata = tuple(m for m in uv.get("dependency-metadata", []) or [] if isinstance(m, dict))
    return {
        "name": project.get("name"),
        "declared_dependencies": tuple(declared),
        "indexes": tuple(indexes),
        "sources": sources,
        "dependency_metadata": metadata,
        "tool_uv": _plain(uv),
    }


def _plain(value: Any) -> Any:
    """A parsed TOML value as JSON has it (TOML dates and times become ISO strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _read_lock(data: dict[str, Any], path: Path) -> dict[str, Any]:
    version = data.get("version")
    if version not in KNOWN_LOCK_VERSIONS or isinstance(version, bool):
        # A newer uv's format may mean something else by the same keys: not judged.
        known = ", ".join(str(v) for v in KNOWN_LOCK_VERSIONS)
        raise ValueError(
            f"lock format version {version!r}, which this doctor does not know "
            f"(it reads version {known}); the lock is not judged"
        )
    torch_entries = []
    names = []
    for package in data.get("package", []) or []:
        if not isinstance(package, dict) or "name" not in package:
            continue
        names.append(str(package["name"]))
        if package["name"] != "torch":
            continue
        if not isinstance(package.get("dependencies", []), list):
            raise TypeError("torch's dependencies are not a list")
        dependencies = tuple(
            LockedDependency(
                name=str(dep["name"]),
                marker=dep.get("marker"),
                extras=tuple(dep.get("extra", ()) or ()),
            )
            for dep in package.get("dependencies", []) or []
            if isinstance(dep, dict) and "name" in dep
        )
        torch_entries.append(
            LockedPackage(
                name="torch",
                version=package.get("version"),
                source={str(k): str(v) for k, v in _table(package.get("source")).items()},
                dependencies=dependencies,
                resolution_markers=tuple(package.get("resolution-markers", ()) or ()),
            )
        )
    return {"locked_torch": tuple(torch_entries), "locked_names": tuple(sorted(set(names)))}
