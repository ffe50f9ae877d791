"""The remedy of lock-metadata-inconsistent: per-platform `[[tool.uv.dependency-metadata]]`.

One entry per inconsistent version, built from the metadata of every wheel of that
version: a requirement every wheel declares is kept as written; one that only some
platforms' wheels declare gets those platforms' marker added, so the single entry uv
reads (uv 0.13.9: the first entry whose version equals the locked one, see
metadata_block.entry_uv_uses) carries the platform split and `uv lock` records each
platform's dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from doctor.checks.expectations import marker_applies, parse_requirement
from doctor.facts import Facts
from doctor.facts.lock_metadata import WheelMetadata
from doctor.findings import Finding, Remedy, RemedyKind
from doctor.remedies import remedy_for
from doctor.remedies.metadata_block import metadata_entry, render_metadata_entries

__all__ = ["merged_requires_dist", "platform_marker"]


def platform_marker(wheel: WheelMetadata) -> str | None:
    """The PEP 508 marker of the platform a wheel serves (None: every platform)."""
    if wheel.platform == "any":
        return None
    environment = wheel.environment
    return (
        f"sys_platform == '{environment['sys_platform']}' and "
        f"platform_machine == '{environment['platform_machine']}'"
    )


def _with_marker(requirement: Requirement, platforms: Sequence[str]) -> str:
    head = requirement.name
    if requirement.extras:
        head += f"[{','.join(sorted(requirement.extras))}]"
    if requirement.url:
        head += f" @ {requirement.url} "
    else:
        head += str(requirement.specifier)
    where = platforms[0] if len(platforms) == 1 else " or ".join(f"({p})" for p in platforms)
    if requirement.marker is None:
        return f"{head}; {where}"
    return f"{head}; ({requirement.marker}) and ({where})"


def merged_requires_dist(wheels: Sequence[WheelMetadata]) -> list[str]:
    """Every wheel's Requires-Dist in one list, platform-specific ones marked so.

    A requirement whose own marker already excludes every platform whose wheels do not
    declare it is kept as written (torch's nvidia pins say `platform_machine ==
    "x86_64"` themselves); any other gets the marker of the platforms that declare it.
    """
    by_platform: dict[str | None, set[str]] = {}
    environments: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for wheel in wheels:
        marker = platform_marker(wheel)
        by_platform.setdefault(marker, set()).update(wheel.requires_dist)
        if marker is not None:
            environments[marker] = wheel.environment
        order.extend(r for r in wheel.requires_dist if r not in order)
    platforms = [p for p in by_platform if p is not None]
    merged = []
    for text in order:
        having = [p for p in platforms if text in by_platform[p]]
        lacking = [p for p in platforms if p not in having]
        requirement = parse_requirement(text)
        if text in by_platform.get(None, set()) or not lacking or requirement is None:
            merged.append(text)
        elif not any(
            marker_applies(requirement.marker, environments[p], ("", *requirement_extras(text)))
            for p in lacking
        ):
            merged.append(text)  # its own marker already leaves those platforms out
        else:
            merged.append(_with_marker(requirement, having))
    return merged


def requirement_extras(text: str) -> tuple[str, ...]:
    """The extras a requirement's marker names (``extra == "x"``): each may be active."""
    return tuple(re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", text))


@remedy_for("lock-metadata-inconsistent")
def _lock_metadata(finding: Finding, facts: Facts) -> list[Remedy]:
    lock = facts.lock_metadata
    if lock is None:
        return []
    versions = list(
        dict.fromkeys((d["package"], d["version"]) for d in finding.data.get("differences", []))
    )
    tables = []
    unchecked = []
    for package, version in versions:
        wheels = [
            w
            for w in lock.wheels
            if w.wheel.package == canonicalize_name(package)
            and w.wheel.version == version
            and w.skipped is None
        ]
        if any(w.error is not None for w in wheels):
            unchecked.append(f"{package} {version}")
            continue
        read = [w for w in wheels if w.error is None]
        if not read:
            continue
        first = read[0]
        extras = list(dict.fromkeys(e for w in read for e in w.provides_extra))
        tables.append(
            metadata_entry(
                package,
                version,
                first.requires_python,
                merged_requires_dist(read),
                extras,
            )
        )
    remedies = []
    if tables:
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                "declare the metadata per platform for uv (pyproject.toml; "
                "`torch-doctor lock --fix` writes it)",
                render_metadata_entries(tables),
                target=lock.pyproject_path,
            )
        )
        remedies.append(
            Remedy(RemedyKind.SHELL, "then re-lock and check again", "uv lock\ntorch-doctor lock")
        )
    if unchecked:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                "read every wheel first",
                f"Some wheels of {', '.join(unchecked)} could not be read, so no complete "
                "entry can be written for them: fix what `torch-doctor lock` reports as "
                "unchecked (or run it with --download), then run it again.",
            )
        )
    return remedies
