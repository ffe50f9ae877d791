"""Does uv.lock record, on every platform, the dependencies its wheels' own metadata declare?

The pre-flight of the founding case (uv#11945), judged from the lock alone: uv reads the
metadata of one wheel per version and records it for all platforms; when the index's
wheels of that version declare different dependencies per platform, the lock is wrong
for some of them from the moment `uv lock` writes it. `torch-doctor lock` reads every
locked wheel's metadata (facts.lock_metadata); this check compares, per platform.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.utils import canonicalize_name

from doctor.checks.expectations import applicable_requirements
from doctor.checks.lock import uv_marker_applies
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import Facts, LockedPackage
from doctor.facts.lock_metadata import WheelMetadata
from doctor.findings import Finding, Severity

__all__ = ["PlatformDifference", "platform_differences"]


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


@check(
    "lock-metadata-inconsistent",
    family="lock",
    summary="uv.lock records dependencies that differ, on some platform, from what the "
    "locked wheels' own metadata declare.",
    label="uv.lock matches its wheels' metadata on every platform",
)
def lock_metadata_inconsistent(facts: Facts) -> Outcome:
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
            data={
                "differences": [
                    {
                        "package": d.package,
                        "version": d.version,
                        "platform": d.platform,
                        "pythons": list(d.pythons),
                        "missing": list(d.missing),
                        "extra": list(d.extra),
                    }
                    for d in differences
                ],
                "lock_path": lock.lock_path,
                "pyproject_path": lock.pyproject_path,
            },
        )
    ]
