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
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from doctor.facts import LockedDependency, LockedPackage
from doctor.facts.lock_metadata import LockedWheel
from doctor.probe.project import TORCH_FAMILY, TomlError, load_toml

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


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")


def read_lock(path: Path) -> LockFile:
    try:
        data = load_toml(path, "uv.lock")
    except TomlError as exc:
        raise LockFileError(str(exc)) from exc
    version = data.get("version")
    if version not in KNOWN_LOCK_VERSIONS:
        raise LockFileError(
            f"{path}: lock format version {version!r}; torch-doctor reads uv.lock version "
            f"{', '.join(map(str, KNOWN_LOCK_VERSIONS))} (uv 0.5 and later). "
            "Upgrade torch-doctor, or re-lock with a uv that writes version 1."
        )
    packages: list[LockedPackage] = []
    wheels: list[LockedWheel] = []
    for entry in data.get("package", []) or []:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        source = {
            str(k): str(v)
            for k, v in (entry.get("source") or {}).items()
            if isinstance(entry.get("source"), dict)
        }
        package = LockedPackage(
            name=str(entry["name"]),
            version=None if entry.get("version") is None else str(entry["version"]),
            source=source,
            dependencies=tuple(
                LockedDependency(
                    name=str(dep["name"]),
                    marker=dep.get("marker"),
                    extras=_strings(dep.get("extra")),
                )
                for dep in entry.get("dependencies", []) or []
                if isinstance(dep, dict) and "name" in dep
            ),
            resolution_markers=_strings(entry.get("resolution-markers")),
        )
        packages.append(package)
        for wheel in entry.get("wheels", []) or []:
            if not isinstance(wheel, dict):
                continue
            url = wheel.get("url") or wheel.get("path") or ""
            hashed = _SHA256.fullmatch(str(wheel.get("hash", "")))
            size = wheel.get("size")
            wheels.append(
                LockedWheel(
                    package=canonicalize_name(package.name),
                    version=package.version or "",
                    filename=unquote(urlsplit(str(url)).path.rsplit("/", 1)[-1]),
                    url=str(url),
                    registry=source.get("registry"),
                    sha256=hashed.group(1) if hashed else None,
                    size=size if isinstance(size, int) else None,
                )
            )
    return LockFile(
        path=path,
        version=int(version),
        requires_python=data.get("requires-python"),
        supported_markers=_strings(data.get("supported-markers")),
        resolution_markers=_strings(data.get("resolution-markers")),
        packages=tuple(packages),
        wheels=tuple(wheels),
    )
