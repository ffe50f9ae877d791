"""Does uv.lock record, on every platform, the dependencies its wheels' own metadata declare?

The pre-flight of the founding case (uv#11945), judged from the lock alone: uv reads the
metadata of one wheel per version and records it for all platforms; when the index's
wheels of that version declare different dependencies per platform, the lock is wrong
for some of them from the moment `uv lock` writes it. `torch-doctor lock` reads every
locked wheel's metadata (facts.lock_metadata); this check compares, per platform.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.derive.expectations import applicable_requirements, marker_applies, parse_requirement
from doctor.derive.uv import uv_marker_applies
from doctor.facts import Facts, LockedPackage
from doctor.facts.lock_metadata import WheelMetadata
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.remedies.metadata_block import (
    entry_uv_uses,
    metadata_entry,
    render_metadata_entries,
)

__all__ = [
    "LockMetadataInconsistent",
    "PlatformDifference",
    "merged_requires_dist",
    "platform_differences",
    "platform_marker",
]


@dataclass(frozen=True)
class PlatformDifference:
    """What uv.lock lacks (requirement strings) or has extra (names) for one platform."""

    package: str
    version: str
    platform: str
    pythons: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]


def _entry_for(packages: tuple[LockedPackage, ...], wheel: WheelMetadata) -> LockedPackage | None:
    for package in packages:
        if (
            canonicalize_name(package.name) == wheel.wheel.package
            and package.version == wheel.wheel.version
        ):
            return package
    return None


def platform_differences(facts: Facts) -> list[PlatformDifference]:
    """Per package, version and platform: the lock's dependencies against the wheel's."""
    lock = facts.lock_metadata
    if lock is None:
        return []
    grouped: dict[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for wheel in lock.wheels:
        if wheel.error is not None or wheel.skipped is not None:
            continue
        entry = _entry_for(lock.packages, wheel)
        if entry is None:
            continue
        environment = wheel.environment
        requirements, _ = applicable_requirements(wheel.requires_dist, environment)
        required = {canonicalize_name(r.name): str(r) for r in requirements}
        recorded = {
            canonicalize_name(d.name)
            for d in entry.dependencies
            if uv_marker_applies(d.marker, environment)
        }
        missing = tuple(required[n] for n in sorted(required) if n not in recorded)
        extra = tuple(sorted(recorded - set(required)))
        if not missing and not extra:
            continue
        key = (wheel.wheel.package, wheel.wheel.version, wheel.platform, missing, extra)
        grouped.setdefault(key, [])
        if wheel.python and wheel.python not in grouped[key]:
            grouped[key].append(wheel.python)
    return [
        PlatformDifference(package, version, platform, tuple(pythons), missing, extra)
        for (package, version, platform, missing, extra), pythons in grouped.items()
    ]


@dataclass(frozen=True)
class LockMetadataInconsistent(Payload):
    differences: tuple[PlatformDifference, ...]
    lock_path: str
    pyproject_path: str | None

    def subjects(self) -> frozenset[str]:
        names = {
            re.split(r"[ ;=<>~!\[]", m, maxsplit=1)[0] for d in self.differences for m in d.missing
        }
        return frozenset(
            canonicalize_name(n) for n in names | {e for d in self.differences for e in d.extra}
        )


@check(
    "lock-metadata-inconsistent",
    severities=(Severity.ERROR,),
    family="lock-metadata",
    summary="uv.lock records dependencies that differ, on some platform, from what the "
    "locked wheels' own metadata declare.",
    label="uv.lock matches its wheels' metadata on every platform",
    payload=LockMetadataInconsistent,
)
def lock_metadata_inconsistent(ctx: Context) -> Outcome:
    facts = ctx.facts
    lock = facts.lock_metadata
    if lock is None:
        return Skip("reads the package index: run `torch-doctor lock`")
    checked = [w for w in lock.wheels if w.error is None and w.skipped is None]
    if not checked:
        return Skip("no locked wheel's metadata could be read")
    differences = platform_differences(facts)
    if not differences:
        return []
    lacking = sorted({d.platform for d in differences if d.missing})
    evidence = []
    for d in differences:
        where = d.platform + (f" (Python {', '.join(d.pythons)})" if d.pythons else "")
        if d.missing:
            evidence.append(
                f"{where}: {d.package} {d.version} declares, uv.lock lacks: " + ", ".join(d.missing)
            )
        if d.extra:
            evidence.append(
                f"{where}: uv.lock records for {d.package} {d.version}, its wheel does not "
                "declare: " + ", ".join(d.extra)
            )
    versions = sorted({f"{d.package} {d.version}" for d in differences})
    return [
        Finding(
            id="lock-metadata-inconsistent",
            severity=Severity.ERROR,
            title=f"uv.lock does not record what {', '.join(versions)} declares on "
            + (", ".join(lacking) if lacking else "every platform"),
            detail=(
                "uv reads the metadata of one wheel per version and records it for every "
                "platform. These wheels declare different dependencies on different "
                "platforms, so the lock is wrong for some of them: `uv sync` there installs "
                "torch without what it needs (uv#11945: `libcudnn.so.9: cannot open shared "
                "object file`), or installs what it does not need. Declaring the metadata "
                "per platform in pyproject.toml makes `uv lock` record the right "
                "dependencies everywhere."
            ),
            evidence=tuple(evidence),
            data=LockMetadataInconsistent(
                differences=tuple(differences),
                lock_path=lock.lock_path,
                pyproject_path=lock.pyproject_path,
            ),
        )
    ]


# --- the remedy: one [[tool.uv.dependency-metadata]] entry per version -----------------


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


def _same_requirements(declared: object, wanted: Sequence[str]) -> bool:
    """Whether an entry's requires-dist says what the wheels declare (parsed, in any order)."""
    if not isinstance(declared, list):
        return False

    def parsed(texts: Sequence[object]) -> set[str] | None:
        out = set()
        for text in texts:
            requirement = parse_requirement(str(text))
            if requirement is None:
                return None
            out.add(str(requirement))
        return out

    mine = parsed(declared)
    return mine is not None and mine == parsed(wanted)


@remedy("lock-metadata-inconsistent")
def _lock_metadata(finding: Finding[LockMetadataInconsistent], ctx: Context) -> list[Remedy]:
    lock = ctx.facts.lock_metadata
    if lock is None:
        return []
    versions = list(dict.fromkeys((d.package, d.version) for d in finding.data.differences))
    tables = []
    unchecked = []
    declared = []  # versions whose entry pyproject.toml already has: uv.lock predates it
    replaced = []  # versions with an entry uv uses that says something else
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
        requires_dist = merged_requires_dist(read)
        used = entry_uv_uses(lock.dependency_metadata, package, version)
        if used is not None and _same_requirements(used.get("requires-dist"), requires_dist):
            declared.append(f"{package} {version}")
            continue
        if used is not None and used.get("version") is not None:
            replaced.append(f"{package} {version}")
        tables.append(
            metadata_entry(package, version, first.requires_python, requires_dist, extras)
        )
    remedies = []
    if tables:
        summary = "declare the metadata per platform for uv (pyproject.toml; "
        if replaced:
            # uv reads the first entry for a version and ignores later ones.
            summary = (
                f"replace the [[tool.uv.dependency-metadata]] entry for {', '.join(replaced)} "
                "in pyproject.toml with this one (uv uses only the first entry for a version; "
            )
        remedies.append(
            Remedy(
                RemedyKind.TOML,
                summary + "`torch-doctor lock --fix` writes it)",
                render_metadata_entries(tables),
                target=lock.pyproject_path,
            )
        )
        remedies.append(
            Remedy(RemedyKind.SHELL, "then re-lock and check again", "uv lock\ntorch-doctor lock")
        )
    elif declared:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"pyproject.toml already declares the metadata of {', '.join(declared)} for "
                "uv; uv.lock predates it: re-lock and check again",
                "uv lock\ntorch-doctor lock",
            )
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
