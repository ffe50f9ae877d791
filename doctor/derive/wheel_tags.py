"""Which platforms a wheel serves, from the platform tags of its file name.

Pure: a file name in, PEP 508 values out (``sys_platform``, ``platform_system``,
``platform_machine``, ``os_name``), as the interpreters that install the wheel report
them. Used by `torch-doctor lock` (the environment to evaluate a wheel's metadata in)
and by uv-torch-config (the platforms uv.lock has a torch wheel for).
"""

from __future__ import annotations

import re

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

__all__ = ["ANY", "served_platforms", "tag_system"]

# A platform-independent wheel (platform tag "any") serves every platform.
ANY = ("*", "*")

_LINUX = re.compile(r"(?:many|musl)?linux(?:_\d+_\d+|1|2010|2014)?_(?P<arch>.+)")
_MACOS = re.compile(r"macosx_\d+_\d+_(?P<arch>.+)")
_WINDOWS = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}
# macOS multi-architecture tags: the machines they hold, the first the one a label names.
_MAC_ARCHES = {
    "universal2": ("arm64", "x86_64"),
    "intel": ("x86_64", "i386"),
    "universal": ("x86_64", "i386", "ppc"),
}


def _machines(platform_tag: str) -> tuple[str, str, tuple[str, ...], str] | None:
    if platform_tag in _WINDOWS:
        return "win32", "Windows", (_WINDOWS[platform_tag],), "nt"
    match = _LINUX.fullmatch(platform_tag)
    if match:
        return "linux", "Linux", (match.group("arch"),), "posix"
    match = _MACOS.fullmatch(platform_tag)
    if match:
        arch = match.group("arch")
        return "darwin", "Darwin", _MAC_ARCHES.get(arch, (arch,)), "posix"
    return None


def tag_system(platform_tag: str) -> tuple[str, str, str, str] | None:
    """(sys_platform, platform_system, platform_machine, os_name) of a platform tag; for a
    multi-architecture macOS tag, its first machine. None for "any" and unknown tags."""
    found = _machines(platform_tag)
    if found is None:
        return None
    sys_platform, system, machines, os_name = found
    return sys_platform, system, machines[0], os_name


def served_platforms(filename: str) -> frozenset[tuple[str, str]]:
    """The (sys_platform, platform_machine) pairs a wheel installs on: every tag counts
    (``manylinux_2_17_x86_64.manylinux2014_x86_64`` is one pair, ``universal2`` two).
    ``ANY`` for a pure wheel; empty for a name that is not a wheel's or unknown tags."""
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return frozenset()
    pairs: set[tuple[str, str]] = set()
    for tag in tags:
        if tag.platform == "any":
            return frozenset({ANY})
        found = _machines(tag.platform)
        if found is not None:
            pairs.update((found[0], machine) for machine in found[2])
    return frozenset(pairs)
