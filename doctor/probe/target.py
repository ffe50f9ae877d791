"""Which interpreter to inspect: --python, the active venv, the project's .venv, or ours."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = ["Target", "TargetError", "find_project_root", "resolve_target"]


class TargetError(Exception):
    """The interpreter to inspect cannot be found: a usage error (exit 2)."""


class Target(NamedTuple):  # not a dataclass: resolved before dataclasses is imported
    python: str
    chosen_by: str  # "--python", "VIRTUAL_ENV", "project .venv", "current interpreter"


def _venv_python(venv: Path) -> Path | None:
    for relative in ("bin/python", "bin/python3", "Scripts/python.exe"):
        candidate = venv / relative
        if candidate.exists():
            return candidate
    return None


def _broken_link(path: Path) -> str | None:
    """Why ``path`` is a dangling symlink (a venv whose base Python was removed), if it is."""
    if not path.is_symlink() or path.exists():
        return None
    try:
        points_to = os.readlink(path)
    except OSError:
        points_to = "?"
    return (
        f"{path} is a broken link to {points_to}: the Python this virtual environment "
        "was made from is gone (recreate the venv, e.g. `uv venv` and `uv sync`)"
    )


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding a pyproject.toml, as uv finds it."""
    try:
        start = start.resolve()
    except OSError:
        return None
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return None


def resolve_target(
    python: str | None, project: str | None, environ: dict[str, str] | None = None
) -> Target:
    environ = dict(os.environ) if environ is None else environ
    if python:
        path = Path(python).expanduser()
        if path.is_dir():
            found = _venv_python(path)
            if found is None:
                broken = _broken_link(path / "bin" / "python")
                if broken is not None:
                    raise TargetError(broken)
                raise TargetError(
                    f"{path} is a directory but not a virtual environment (no bin/python in it)"
                )
            return Target(str(found.absolute()), "--python")
        if not path.exists():
            broken = _broken_link(path)
            if broken is not None:
                raise TargetError(broken)
            raise TargetError(f"{path}: no such interpreter or virtual environment")
        if not os.access(path, os.X_OK):
            raise TargetError(f"{path}: not executable")
        return Target(str(path.absolute()), "--python")

    active = environ.get("VIRTUAL_ENV")
    if active and project is None:
        found = _venv_python(Path(active))
        if found is not None:
            return Target(str(found), "VIRTUAL_ENV")

    root = Path(project).expanduser() if project else find_project_root(Path.cwd())
    if root is not None:
        venv_setting = environ.get("UV_PROJECT_ENVIRONMENT")
        venv = Path(venv_setting) if venv_setting else Path(".venv")
        if not venv.is_absolute():
            venv = root / venv
        found = _venv_python(venv)
        if found is not None:
            return Target(str(found), "project .venv")
    return Target(sys.executable, "current interpreter")
