"""Are torchvision and torchaudio built for the torch installed beside them (catalogue 18)?

Their C++ operators are compiled against one torch release and one CUDA variant. The wheel
says which release in its ``Requires-Dist: torch==…`` pin, and which variant in its local
version tag (``+cu130``, ``+cpu``); a wheel from PyPI has no tag and carries the release's
PyPI variant (doctor/knowledge/torch_releases.toml).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.expectations import applicable_requirements, same_version
from doctor.derive.uv import source_entries
from doctor.facts import DistributionFacts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import pytorch_index_url, torch_release
from doctor.remedies import install_command
from doctor.remedies.variants import platform_marker, render_index_block

__all__ = ["CompanionRef", "TorchCompanionMismatch"]

COMPANIONS = ("torchvision", "torchaudio")


@dataclass(frozen=True)
class Variant:
    """A wheel's build variant and how torch-doctor knows it."""

    tag: str  # "cu130", "cpu", "rocm6.4"
    how: str  # "local tag", or why the PyPI variant applies

    @property
    def cuda_major(self) -> str | None:
        """'13' for cu130, '12' for cu128 (CUDA tags are cu + major + one minor digit)."""
        digits = self.tag[2:] if self.tag.startswith("cu") else ""
        return digits[:-1] if len(digits) >= 3 and digits.isdigit() else None


def _local_tag(version: str) -> str | None:
    try:
        local = Version(version).local
    except InvalidVersion:
        local = version.split("+", 1)[1] if "+" in version else None
    return local or None


def _variant_of(version: str, release_of: str | None, pypi_applies: bool) -> Variant | None:
    """The variant of a wheel of ``version`` (its local tag, else PyPI's for the torch
    release ``release_of``, when PyPI's Linux x86_64 variants apply here); None if unknown."""
    tag = _local_tag(version)
    if tag:
        return Variant(tag, "local tag")
    if not pypi_applies or release_of is None:
        return None
    release = torch_release(release_of)
    if release is None or release.pypi_linux is None:
        return None
    return Variant(release.pypi_linux, f"no local tag: PyPI's variant for torch {release.torch}")


def _pypi_applies(ctx: Context) -> bool:
    markers = ctx.marker_environment
    return markers.get("platform_system") == "Linux" and markers.get("platform_machine") in (
        "x86_64",
        "AMD64",
    )


def _torch_pin(companion: DistributionFacts, ctx: Context) -> SpecifierSet | None:
    """The companion's requirement on torch here (``==2.7.1``), if it states one."""
    requirements, _ = applicable_requirements(companion.requires_dist, ctx.marker_environment)
    for requirement in requirements:
        if canonicalize_name(requirement.name) == "torch":
            return requirement.specifier or None
    return None


def _pinned_release(pin: SpecifierSet | None) -> str | None:
    """'2.7.1' from '==2.7.1': the torch release a pinned companion was built for."""
    exact = [s.version for s in pin or () if s.operator == "=="]
    return exact[0] if len(exact) == 1 else None


def _accepts(pin: SpecifierSet, version: str) -> bool:
    """Whether the pin accepts the version; a version that does not parse is not judged."""
    try:
        return pin.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True


def _source_text(value: object) -> str:
    """A [tool.uv.sources] value as pyproject.toml spells it: {index = "pytorch-cu130"}."""
    entries = value if isinstance(value, list) else [value]
    tables = [
        "{" + ", ".join(f'{k} = "{v}"' for k, v in e.items()) + "}"
        for e in entries
        if isinstance(e, dict)
    ]
    return ", ".join(tables) or str(value)


def _mismatch_severity(torch_variant: Variant, companion: Variant) -> Severity | None:
    if torch_variant.tag == companion.tag:
        return None
    if torch_variant.cuda_major and torch_variant.cuda_major == companion.cuda_major:
        return Severity.WARNING  # same CUDA major: torchvision's own check lets it load
    return Severity.ERROR


@dataclass(frozen=True)
class CompanionRef:
    name: str
    version: str
    torch_requirement: str | None  # its pin on torch, e.g. "==2.7.1"
    variant: str | None  # its build variant, e.g. "cu130"


@dataclass(frozen=True)
class TorchCompanionMismatch(Payload):
    torch_version: str
    torch_variant: str | None
    companions: tuple[CompanionRef, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(c.name for c in self.companions)


@check(
    "torch-companion-mismatch",
    severities=(
        Severity.ERROR,
        Severity.WARNING,
    ),
    family="companions",
    summary="torchvision or torchaudio was built for another torch release or CUDA variant.",
    label="torchvision and torchaudio are built for this torch",
    payload=TorchCompanionMismatch,
    requires=("torch",),
)
def torch_companion_mismatch(ctx: Context) -> Outcome:
    facts = ctx.facts
    companions = [d for name in COMPANIONS if (d := facts.distribution(name)) is not None]
    if not companions:
        return Skip("none installed")
    torch_version = ctx.torch_version
    assert torch_version is not None
    pypi = _pypi_applies(ctx)
    torch_variant = _variant_of(torch_version, torch_version, pypi)
    evidence: list[str] = []
    problems: list[CompanionRef] = []
    severity = Severity.WARNING
    for companion in companions:
        pin = _torch_pin(companion, ctx)
        variant = _variant_of(companion.version, _pinned_release(pin), pypi)
        mismatched = False
        if pin is not None and not _accepts(pin, torch_version):
            evidence.append(
                f"{companion.display_name} {companion.version} requires torch{pin}, "
                f"but torch {torch_version} is installed"
            )
            mismatched = True
            severity = Severity.ERROR
        level = _mismatch_severity(torch_variant, variant) if torch_variant and variant else None
        if level is not None:
            assert torch_variant is not None and variant is not None
            evidence.append(
                f"{companion.display_name} {companion.version} is a {variant.tag} build "
                f"({variant.how}); torch {torch_version} is {torch_variant.tag} "
                f"({torch_variant.how})"
            )
            mismatched = True
            if level is Severity.ERROR:
                severity = Severity.ERROR
        if mismatched:
            problems.append(
                CompanionRef(
                    name=companion.name,
                    version=companion.version,
                    torch_requirement=str(pin) if pin is not None else None,
                    variant=variant.tag if variant else None,
                )
            )
    if not problems:
        return []
    sources = facts.project.sources if facts.project is not None else {}
    if sources.get("torch") is not None:
        for problem in problems:
            name = problem.name
            if sources.get(name) != sources["torch"]:
                given = sources.get(name)
                evidence.append(
                    f"pyproject.toml gives torch the source {_source_text(sources['torch'])}, "
                    + (
                        f"{name} {_source_text(given)}"
                        if given
                        else f"{name} none: uv takes it from PyPI"
                    )
                )
    names = ", ".join(p.name for p in problems)
    return [
        Finding(
            id="torch-companion-mismatch",
            severity=severity,
            title=f"{names} not built for torch {torch_version}",
            detail=(
                "torchvision and torchaudio compile their operators against one torch release "
                "and one CUDA variant. Built for another, they fail at import or at their first "
                "operator: `RuntimeError: operator torchvision::nms does not exist`, "
                "`Detected that PyTorch and torchvision were compiled with different CUDA "
                "major versions`, or an undefined symbol in libtorchaudio.so. The usual cause: "
                "torch comes from a PyTorch index and they from PyPI, or one was upgraded "
                "without the other."
            ),
            evidence=tuple(evidence),
            data=TorchCompanionMismatch(
                torch_version=torch_version,
                torch_variant=torch_variant.tag if torch_variant else None,
                companions=tuple(problems),
            ),
        )
    ]


def _tagged_variant(version: str) -> str | None:
    """'cu130' for torch 2.14.1+cu130: the PyTorch index torch came from (None from PyPI)."""
    return version.split("+", 1)[1] if "+" in version else None


def _sources_block(ctx: Context, names: list[str], variant: str | None) -> tuple[str, str] | None:
    """(summary, TOML) sending the companions where torch comes from; None for PyPI."""
    project = ctx.facts.project
    declared = {i.name for i in project.indexes} if project else set()
    routed = [
        str(e["index"])
        for e in source_entries(project.sources.get("torch") if project else None)
        if e.get("index") in declared
    ]
    if routed:
        # torch's own source names a declared index already: the companions go there too.
        block = render_index_block(routed[0], None, names, platform_marker(ctx))
        return f"take {', '.join(names)} from {routed[0]}, as torch", block
    if variant is None:
        return None
    block = render_index_block(
        f"pytorch-{variant}", pytorch_index_url() + variant, ["torch", *names], platform_marker(ctx)
    )
    return f"take {', '.join(names)} from torch's index ({variant}), as torch", block


def _locked_fit(ctx: Context, companion: CompanionRef, torch_version: str) -> str | None:
    """The companion's version in uv.lock when the lock is right and only the venv drifted
    (`uv pip install` of another build): uv.lock records the installed torch and one other
    version of the companion, of the release series and build variant made for that torch.
    None when the lock does not say so (then the lock itself has to change)."""
    graph = ctx.facts.lock_graph
    torch = ctx.torch
    if graph is None or torch is None:
        return None
    locked_torch = [p.version for p in graph.packages if p.name == "torch"]
    if not any(same_version(v, torch.version) for v in locked_torch):
        return None
    locked = [p for p in graph.packages if canonicalize_name(p.name) == companion.name]
    if len(locked) != 1 or not locked[0].version:
        return None
    version = locked[0].version
    if same_version(version, companion.version):
        return None
    release = torch_release(torch_version)
    series = release.torchvision if release is not None else None
    if companion.name != "torchvision":
        series = None  # only torchvision's release series is known per torch release
    if series is None or not version.startswith(series + "."):
        return None
    pypi = _pypi_applies(ctx)
    torch_variant = _variant_of(torch_version, torch_version, pypi)
    locked_variant = _variant_of(version, torch_version.split("+", 1)[0], pypi)
    if torch_variant and locked_variant and _mismatch_severity(torch_variant, locked_variant):
        return None
    return version


@remedy("torch-companion-mismatch")
def _torch_companion_mismatch(
    finding: Finding[TorchCompanionMismatch], ctx: Context
) -> Sequence[Remedy]:
    torch_version = finding.data.torch_version
    names = [c.name for c in finding.data.companions]
    variant = _tagged_variant(torch_version)
    release = torch_release(torch_version)
    remedies: list[Remedy] = []
    if ctx.workflow is Workflow.UV_PROJECT:
        fits = [_locked_fit(ctx, c, torch_version) for c in finding.data.companions]
        if all(fits):
            listed = ", ".join(f"{n} {v}" for n, v in zip(names, fits))
            return [
                Remedy(
                    RemedyKind.SHELL,
                    f"uv.lock records {listed}, built for torch {torch_version}: the venv "
                    "has another; put back what the lock records",
                    "uv sync",
                )
            ]
        upgrade = " ".join(f"--upgrade-package {shlex.quote(p)}" for p in ["torch", *names])
        toml = _sources_block(ctx, names, variant)
        if toml is not None:
            summary, block = toml
            remedies.append(
                Remedy(
                    RemedyKind.TOML,
                    f"{summary} (`torch-doctor fix` adds it)",
                    block,
                    target=ctx.facts.project.pyproject_path if ctx.facts.project else None,
                )
            )
        else:
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    f"take {', '.join(names)} from PyPI, as torch",
                    f"torch {torch_version} comes from PyPI: remove the [tool.uv.sources] "
                    f"entries of {', '.join(names)} from pyproject.toml.",
                )
            )
        graph = ctx.facts.lock_graph
        locked = {canonicalize_name(p.name) for p in graph.packages} if graph else set()
        added = [
            f"torchvision=={release.torchvision}.*"
            for name in names
            if name == "torchvision" and release is not None and release.torchvision
        ]
        if graph is not None and not locked & set(names) and len(added) == len(names):
            # Installed with `uv pip`, not a dependency: re-locking would not record it and
            # the sync would remove it. Adding it records the release built for this torch.
            remedies.append(
                Remedy(
                    RemedyKind.SHELL,
                    f"then make {', '.join(names)} a dependency of the project, at the release "
                    f"built for torch {torch_version} (uv.lock does not record "
                    f"{'it' if len(names) == 1 else 'them'}: the next `uv sync` would remove "
                    f"{'it' if len(names) == 1 else 'them'})"
                    if remedies
                    else f"make {', '.join(names)} a dependency of the project, at the release "
                    f"built for torch {torch_version}",
                    "uv add " + " ".join(shlex.quote(a) for a in added) + "\n",
                )
            )
            return remedies
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "re-lock them together and sync",
                f"uv lock {upgrade}\nuv sync\n",
            )
        )
        return remedies
    # Outside a uv project: install the companion release built for this torch, when the
    # knowledge table names it (an unpinned install could replace torch itself).
    specs = [
        f"torchvision=={release.torchvision}.*"
        for name in names
        if name == "torchvision" and release is not None and release.torchvision
    ]
    where = f" from {pytorch_index_url()}{variant}" if variant is not None else " from PyPI"
    if len(specs) == len(names):
        index = pytorch_index_url() + variant if variant is not None else None
        command = install_command(ctx, specs, index_url=index)
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                f"install the {', '.join(names)} built for torch {torch_version}",
                command,
            )
        )
    else:
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"install the {', '.join(names)} built for torch {torch_version}",
                f"Install the release of {', '.join(names)} whose metadata requires "
                f"torch=={torch_version.split('+', 1)[0]}{where}, with the same installer "
                "as torch; an unpinned install may replace torch itself.",
            )
        )
    return remedies
