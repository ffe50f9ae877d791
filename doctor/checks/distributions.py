"""Is torch's own dist-info whole, and is each distribution installed once per directory?

A damaged torch dist-info (METADATA missing, empty, garbage, a directory) leaves every
wheel check without torch's requirements: without this check they all skip and the run
says "no error" for a broken install. Two dist-info directories of one distribution in one
site-packages are what an interrupted upgrade leaves: the metadata and the files may
belong to different versions.
"""

from __future__ import annotations

from collections import defaultdict

from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import DistributionFacts, Facts
from doctor.findings import Finding, Severity

__all__: list[str] = []


@check(
    "torch-metadata-damaged",
    family="wheels",
    summary="torch's dist-info has no readable METADATA: the install is damaged.",
    label="torch's metadata readable",
)
def torch_metadata_damaged(facts: Facts) -> Outcome:
    if facts.interpreter is None:
        return Skip("the inspected interpreter could not be probed")
    torch = facts.distribution("torch")
    if torch is None:
        return Skip("torch is not installed")
    if torch.error is None:
        return []
    # torch/version.py names the build (with its +cuXXX tag) even when METADATA is gone.
    version = facts.torch.version if facts.torch is not None and facts.torch.version else None
    return [
        Finding(
            id="torch-metadata-damaged",
            severity=Severity.ERROR,
            title="torch's installed metadata is damaged",
            detail=(
                "torch's dist-info directory has no usable METADATA, so neither pip, uv nor "
                "torch-doctor can tell what torch requires: the install was interrupted or "
                "its files were changed by hand. Checks that need torch's requirements "
                "cannot judge until torch is reinstalled."
            ),
            evidence=(f"{torch.metadata_dir}: {torch.error}",),
            data={
                "metadata_dir": torch.metadata_dir,
                "error": torch.error,
                "version": version or torch.version or None,
            },
        )
    ]


def _duplicates(facts: Facts) -> list[list[DistributionFacts]]:
    by_place: dict[tuple[str, str], list[DistributionFacts]] = defaultdict(list)
    for dist in facts.distributions:
        by_place[(dist.location, dist.name)].append(dist)
    return [group for group in by_place.values() if len(group) > 1]


def _stale(group: list[DistributionFacts], facts: Facts) -> list[DistributionFacts]:
    """The dist-infos to remove: all but the one the installed files belong to (for torch,
    the version torch/version.py names; else the one whose RECORD files are all there,
    the newest first)."""
    if group[0].name == "torch" and facts.torch is not None and facts.torch.version:
        current = [d for d in group if d.version == facts.torch.version.split("+")[0]]
        current = current or [d for d in group if d.version == facts.torch.version]
        if len(current) == 1:
            return [d for d in group if d is not current[0]]

    def whole(dist: DistributionFacts) -> bool:
        return dist.error is None and dist.record is not None and dist.record.missing_count == 0

    def newest_first(dist: DistributionFacts) -> tuple[bool, object]:
        from packaging.version import InvalidVersion, Version

        try:
            return (whole(dist), Version(dist.version))
        except InvalidVersion:
            return (whole(dist), Version("0"))

    keep = max(group, key=newest_first)
    return [d for d in group if d is not keep]


@check(
    "duplicate-dist-info",
    family="wheels",
    summary="Two dist-info directories of one distribution in one directory (an interrupted "
    "upgrade).",
    label="each distribution installed once per directory",
)
def duplicate_dist_info(facts: Facts) -> Outcome:
    if facts.interpreter is None:
        return Skip("the inspected interpreter could not be probed")
    findings = []
    for group in _duplicates(facts):
        stale = _stale(group, facts)
        kept = [d for d in group if d not in stale]
        name = group[0].display_name
        versions = ", ".join(d.version for d in group)
        findings.append(
            Finding(
                id="duplicate-dist-info",
                severity=Severity.ERROR,
                title=f"{name} is installed twice in one directory ({versions})",
                detail=(
                    f"{group[0].location} holds {len(group)} dist-info directories of "
                    f"{name}. An upgrade that was interrupted leaves the old one behind; "
                    "pip, uv and importlib.metadata then disagree on which version is "
                    "installed, and the files on disk may belong to either."
                ),
                evidence=tuple(
                    f"{d.metadata_dir}"
                    + (" (the installed files' version)" if d in kept else " (stale)")
                    for d in group
                ),
                data={
                    "name": group[0].name,
                    "versions": [d.version for d in group],
                    "stale_dirs": [d.metadata_dir for d in stale],
                    "keep_version": kept[0].version if kept else None,
                },
            )
        )
    return findings
