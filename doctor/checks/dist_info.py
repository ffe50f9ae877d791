"""Is torch's own dist-info whole, and is each distribution installed once per directory?

A damaged torch dist-info (METADATA missing, empty, garbage, a directory) leaves the
wheel checks without torch's requirements: they skip ("torch's metadata cannot be
used"), and without this check the run would say "no error" for a broken install. Two
dist-info directories of one distribution in one site-packages are what an interrupted
upgrade leaves: the metadata and the files may belong to different versions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from doctor.checks.registry import Outcome, check, remedy
from doctor.derive import Context, Workflow
from doctor.facts import DistributionFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.remedies import conda_note, reinstall_one

__all__ = ["DuplicateDistInfo", "TorchMetadataDamaged"]


def _reinstall(ctx: Context, name: str, version: str | None, summary: str) -> list[Remedy]:
    """The pinned reinstall of one distribution, its dependencies untouched; when no
    version is known, say so instead of installing whatever is newest."""
    command = reinstall_one(ctx, name, version)
    if command is None:
        return [
            Remedy(
                RemedyKind.TEXT,
                f"reinstall {name} at the version you had",
                f"Neither its metadata nor torch's requirements say which {name} this was, so "
                "no pinned command can be given: reinstall the version your project requires.",
            )
        ]
    return [Remedy(RemedyKind.SHELL, summary, command + "\n")]


# --- torch-metadata-damaged ------------------------------------------------------------


@dataclass(frozen=True)
class TorchMetadataDamaged(Payload):
    metadata_dir: str
    error: str  # what the inside probe could not read, and why
    version: str | None  # torch/version.py's (with its +cuXXX tag), else the directory's

    def subjects(self) -> frozenset[str]:
        return frozenset({"torch"})


@check(
    "torch-metadata-damaged",
    severities=(Severity.ERROR,),
    family="dist-info",
    summary="torch's dist-info has no readable METADATA: the install is damaged.",
    label="torch's metadata is readable",
    payload=TorchMetadataDamaged,
    requires=("interpreter", "torch"),
)
def torch_metadata_damaged(ctx: Context) -> Outcome:
    torch = ctx.torch
    if torch is None or torch.error is None:
        return []
    return [
        Finding(
            id="torch-metadata-damaged",
            severity=Severity.ERROR,
            title="torch's installed metadata is damaged",
            detail=(
                "torch's dist-info directory has no usable METADATA, so neither pip, uv nor "
                "torch-doctor can tell what torch requires: the install was interrupted or "
                "its files were changed by hand. The checks that need torch's requirements "
                "cannot judge until torch is reinstalled."
            ),
            evidence=(f"{torch.metadata_dir}: {torch.error}",),
            data=TorchMetadataDamaged(
                metadata_dir=torch.metadata_dir,
                error=torch.error,
                version=ctx.torch_version or torch.version or None,
            ),
        )
    ]


@remedy("torch-metadata-damaged")
def _torch_metadata_damaged(finding: Finding[TorchMetadataDamaged], ctx: Context) -> list[Remedy]:
    summary = (
        "reinstall torch as uv.lock pins it"
        if ctx.workflow is Workflow.UV_PROJECT
        else "reinstall torch at its installed version"
    )
    return [*_reinstall(ctx, "torch", finding.data.version, summary), *conda_note(ctx)]


# --- duplicate-dist-info ---------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateDistInfo(Payload):
    name: str
    location: str
    versions: tuple[str, ...]  # every dist-info's version, as its directory says
    stale_dirs: tuple[str, ...]  # the dist-info directories to remove
    keep_version: str | None  # the version the installed files are

    def subjects(self) -> frozenset[str]:
        return frozenset({self.name})


def _duplicates(ctx: Context) -> list[list[DistributionFacts]]:
    by_place: dict[tuple[str, str], list[DistributionFacts]] = defaultdict(list)
    for dist in ctx.facts.distributions:
        by_place[(dist.location, dist.name)].append(dist)
    return [group for group in by_place.values() if len(group) > 1]


def _stale(group: list[DistributionFacts], ctx: Context) -> list[DistributionFacts]:
    """All but the dist-info the installed files belong to: for torch, the version
    torch/version.py names; else the one whose RECORD files are all there, the newest."""
    build = ctx.facts.torch
    if group[0].name == "torch" and build is not None and build.version:
        current = [d for d in group if d.version in (build.version, build.version.split("+")[0])]
        if len(current) == 1:
            return [d for d in group if d is not current[0]]

    def rank(dist: DistributionFacts) -> tuple[bool, object]:
        from packaging.version import InvalidVersion, Version

        whole = dist.error is None and dist.record is not None and dist.record.missing_count == 0
        try:
            return (whole, Version(dist.version))
        except InvalidVersion:
            return (whole, Version("0"))

    keep = max(group, key=rank)
    return [d for d in group if d is not keep]


@check(
    "duplicate-dist-info",
    severities=(Severity.ERROR,),
    family="dist-info",
    summary="Two dist-info directories of one distribution in one directory (an interrupted "
    "upgrade).",
    label="each distribution is installed once per directory",
    payload=DuplicateDistInfo,
    requires=("interpreter",),
)
def duplicate_dist_info(ctx: Context) -> Outcome:
    findings = []
    for group in _duplicates(ctx):
        stale = _stale(group, ctx)
        kept = [d for d in group if d not in stale]
        name = group[0].display_name
        versions = ", ".join(d.version for d in group)
        findings.append(
            Finding(
                id="duplicate-dist-info",
                severity=Severity.ERROR,
                title=f"{name} is installed twice in one directory ({versions})",
                detail=(
                    f"{group[0].location} holds {len(group)} dist-info directories of {name}. "
                    "An upgrade that was interrupted leaves the old one behind; pip, uv and "
                    "importlib.metadata then disagree on which version is installed, and the "
                    "files on disk may belong to either."
                ),
                evidence=tuple(
                    d.metadata_dir
                    + (" (the installed files' version)" if d in kept else " (stale)")
                    for d in group
                ),
                data=DuplicateDistInfo(
                    name=group[0].name,
                    location=group[0].location,
                    versions=tuple(d.version for d in group),
                    stale_dirs=tuple(d.metadata_dir for d in stale),
                    keep_version=kept[0].version if kept else None,
                ),
            )
        )
    return findings


@remedy("duplicate-dist-info")
def _duplicate_dist_info(finding: Finding[DuplicateDistInfo], ctx: Context) -> list[Remedy]:
    import shlex

    data = finding.data
    remove = "rm -rf -- " + " ".join(shlex.quote(d) for d in data.stale_dirs)
    summary = "remove the stale dist-info, then reinstall the version that stays"
    reinstall = _reinstall(ctx, data.name, data.keep_version, summary)
    if reinstall[0].kind is RemedyKind.SHELL:
        return [
            Remedy(RemedyKind.SHELL, summary, f"{remove}\n{reinstall[0].text}"),
            *conda_note(ctx),
        ]
    return [
        Remedy(RemedyKind.SHELL, "remove the stale dist-info", remove + "\n"),
        *reinstall,
        *conda_note(ctx),
    ]
