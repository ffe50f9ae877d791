"""Read uv.lock for `torch-doctor lock`: packages, their dependencies and their wheels.

Reads only. uv.lock is TOML (read with tomllib); its layout is uv's lock format
version 1 (uv 0.5 and later; ``revision`` changes within it are additive). A lock of
another version is refused with a clear message rather than half-read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.utils import canonicalize_name

from doctor.facts import LockedDependency, LockedPackage
from doctor.facts.lock_metadata import LockedWheel
from doctor.probe.project import TORCH_FAMILY, TomlError, load_toml
from doctor.probe.text import clean_tree

__all__ = ["KNOWN_LOCK_VERSIONS", "LockFile", "LockFileError", "read_lock"]

KNOWN_LOCK_VERSIONS = (1,)


class LockFileError(Exception):
    """uv.lock cannot be read as a lock this doctor understands; the message says why."""


@dataclass(frozen=True)
class LockFile:
    path: Path
    version: int
    requires_python: str | None
    # `[tool.uv] environments` as uv records them, and the forks of the resolution.
    supported_markers: tuple[str, ...]
    resolution_markers: tuple[str, ...]
    packages: tuple[LockedPackage, ...]
    wheels: tuple[LockedWheel, ...]

    def family(self, extra: Iterable[str] = ()) -> tuple[LockedPackage, ...]:
        """The torch-family packages of the lock (and those named in ``extra``)."""
        wanted = {*TORCH_FAMILY, *(canonicalize_name(n) for n in extra)}
        return tuple(p for p in self.packages if canonicalize_name(p.name) in wanted)

    def platform_specific(self) -> tuple[LockedPackage, ...]:
        """Packages whose wheels serve more than one platform: the ones whose metadata
        can differ by platform, as torch 2.6.0+cu126's did."""
        from doctor.probe.wheel_metadata import platform_of

        chosen = []
        for package in self.packages:
            platforms = set()
            for wheel in self.wheels_of(package):
                served = platform_of(wheel.filename, self.requires_python)
                if served is not None and served[0] != "any":
                    platforms.add(served[0])
            if len(platforms) > 1:
                chosen.append(package)
        return tuple(chosen)

    def wheels_of(self, package: LockedPackage) -> tuple[LockedWheel, ...]:
        name = canonicalize_name(package.name)
        return tuple(w for w in self.wheels if w.package == name and w.version == package.version)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A string field as uv writes it; anything else (a number, a table) is not one."""
    return value if isinstance(value, str) else None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str))


_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")


def _dependency(entry: Any) -> LockedDependency | None:
    if not isinstance(entry, dict) or _text(entry.get("name")) is None:
        return None
    return LockedDependency(
        name=entry["name"], marker=_text(entry.get("marker")), extras=_strings(entry.get("extra"))
    )


def _wheel(entry: Any, package: LockedPackage, registry: str | None) -> LockedWheel | None:
    if not isinstance(entry, dict):
        return None
    url = _text(entry.get("url")) or _text(entry.get("path")) or _text(entry.get("filename"))
    if not url:
        return None
    hashed = _SHA256.fullmatch(_text(entry.get("hash")) or "")
    size = entry.get("size")
    return LockedWheel(
        package=canonicalize_name(package.name),
        version=package.version or "",
        filename=_filename(url),
        url=url,
        registry=registry,
        sha256=hashed.group(1) if hashed else None,
        # bool is an int in Python; a size is a count of bytes.
        size=size if type(size) is int and size >= 0 else None,
    )


def _filename(url: str) -> str:
    """The last path component of a URL or path (no parser: a lock may hold "http://[x")."""
    path = re.split(r"[?#]", url, maxsplit=1)[0]
    return unquote(path.rsplit("/", 1)[-1])


def read_lock(path: Path) -> LockFile:
    """uv.lock as far as `torch-doctor lock` needs it. Every value is type-checked (a
    hand-edited or hostile lock may hold ``package = 5``) and every string cleaned of
    control characters; what has the wrong type is skipped, never raised on."""
    try:
        data = clean_tree(load_toml(path, "uv.lock"))
    except TomlError as exc:
        raise LockFileError(str(exc)) from exc
    version = data.get("version")
    if type(version) is not int or version not in KNOWN_LOCK_VERSIONS:
        raise LockFileError(
            f"{path}: lock format version {version!r}; torch-doctor reads uv.lock version "
            f"{', '.join(map(str, KNOWN_LOCK_VERSIONS))} (uv 0.5 and later). "
            "Upgrade torch-doctor, or re-lock with a uv that writes version 1."
        )
    packages: list[LockedPackage] = []
    wheels: list[LockedWheel] = []
    for entry in _list(data.get("package")):
        if not isinstance(entry, dict) or _text(entry.get("name")) is None:
            continue
        source = {str(k): v for k, v in _table(entry.get("source")).items() if isinstance(v, str)}
        package = LockedPackage(
            name=entry["name"],
            version=_text(entry.get("version")),
            source=source,
            dependencies=tuple(
                d for d in map(_dependency, _list(entry.get("dependencies"))) if d is not None
            ),
            resolution_markers=_strings(entry.get("resolution-markers")),
        )
        packages.append(package)
        for item in _list(entry.get("wheels")):
            wheel = _wheel(item, package, source.get("registry"))
            if wheel is not None:
                wheels.append(wheel)
    return LockFile(
        path=path,
        version=version,
        requires_python=_text(data.get("requires-python")),
        supported_markers=_strings(data.get("supported-markers")),
        resolution_markers=_strings(data.get("resolution-markers")),
        packages=tuple(packages),
        wheels=tuple(wheels),
    )
