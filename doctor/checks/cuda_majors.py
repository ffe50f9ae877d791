"""Do the installed CUDA library wheels belong to torch's CUDA major (catalogue 24)?

Moving torch from cu12 to cu13 (or another framework pinning its own CUDA) leaves wheels of
the old major behind: nvidia-cublas-cu12 beside the un-suffixed CUDA 13 nvidia-cublas. They
sit in other directories than the ones torch's RPATH names, so torch itself may still load,
but whatever else resolves a CUDA library in the process (an extension, LD_LIBRARY_PATH
pointing into them, another framework) can pick the wrong major.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.expectations import applicable_requirements, parse_requirement
from doctor.facts import DistributionFacts, Facts
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge.cuda_libraries import WheelMajor, wheel_cuda_major
from doctor.remedies import reinstall_command, uninstall_command

__all__ = ["ForeignWheel", "MixedCudaMajors"]


@dataclass(frozen=True)
class ForeignWheel:
    name: str
    version: str
    cuda_major: int
    or_later: bool
    required_by: tuple[str, ...]
    # Installed wheels torch requires that install the very same files (nvidia-cudnn-cu12
    # and nvidia-cudnn-cu13 both fill nvidia/cudnn/lib): the last one installed owns them,
    # and uninstalling either deletes them.
    shares_files_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class MixedCudaMajors(Payload):
    torch_cuda_major: int
    foreign: tuple[ForeignWheel, ...]

    def subjects(self) -> frozenset[str]:
        # The wheels whose files a foreign twin overwrote are this finding's too: a library
        # of theirs that fails to load, or loads at the twin's version, is its consequence.
        shared = {n for w in self.foreign for n in w.shares_files_with}
        return frozenset(w.name for w in self.foreign) | shared


def _twins(name: str, torch_wheels: set[str]) -> tuple[str, ...]:
    """torch's wheels of the same library with another -cuNN suffix: the suffixed NVIDIA
    wheels (cuDNN, NCCL, cuSPARSELt, NVSHMEM) install into one nvidia/<library> directory
    whatever their CUDA major, file names included."""
    stem, marker, digits = name.rpartition("-cu")
    if not (marker and digits.isdecimal()):
        return ()
    return tuple(
        sorted(
            other
            for other in torch_wheels
            if other != name
            and other.rpartition("-cu")[0] == stem
            and other.rpartition("-cu")[2].isdecimal()
        )
    )


def _foreign(major: WheelMajor, torch_major: int) -> bool:
    return torch_major < major.major if major.or_later else major.major != torch_major


def _required_by(name: str, facts: Facts) -> list[str]:
    """The installed distributions whose requirements name ``name`` (any marker)."""
    out = []
    for dist in facts.distributions:
        if dist.shadowed or dist.name == name:
            continue
        for text in dist.requires_dist:
            requirement = parse_requirement(text)
            if requirement is not None and canonicalize_name(requirement.name) == name:
                out.append(dist.display_name)
                break
    return out


def _taken_by_torch(facts: Facts, name: str) -> list[str]:
    """The sonames torch's process takes from the wheel ``name`` (load probe, else model)."""
    libraries = facts.libraries
    if libraries is None:
        return []
    return [row.soname for row in libraries.cuda if row.owner == name and row.path]


def _major_text(major: WheelMajor) -> str:
    return f"CUDA {major.major}{' or later' if major.or_later else ''}"


@check(
    "mixed-cuda-majors",
    severities=(Severity.WARNING,),
    family="cuda-majors",
    summary="CUDA library wheels of another CUDA major than torch's are installed beside it.",
    label="CUDA wheels are all of torch's CUDA major",
    payload=MixedCudaMajors,
    requires=("torch", "torch-cuda-version"),
)
def mixed_cuda_majors(ctx: Context) -> Outcome:
    facts = ctx.facts
    torch = ctx.torch
    build = facts.torch
    assert torch is not None and build is not None and build.cuda
    try:
        torch_major = int(build.cuda.split(".")[0])
    except ValueError:
        return Skip(f"torch's CUDA version {build.cuda!r} has no major number")
    requirements, _ = applicable_requirements(torch.requires_dist, ctx.marker_environment)
    required_by_torch = {canonicalize_name(r.name) for r in requirements}
    foreign: list[tuple[DistributionFacts, WheelMajor]] = []
    for dist in facts.distributions:
        major = wheel_cuda_major(dist.name)
        if (
            major is not None
            and not dist.shadowed
            and dist.name not in required_by_torch
            and _foreign(major, torch_major)
        ):
            foreign.append((dist, major))
    if not foreign:
        return []
    evidence = [f"torch {build.version} is a CUDA {torch_major} build (CUDA {build.cuda})"]
    rows = []
    installed_for_torch = {
        str(n)
        for n in required_by_torch
        if (d := facts.distribution(n)) is not None and not d.shadowed
    }
    for dist, major in foreign:
        users = _required_by(dist.name, facts)
        why = (
            f"required by {', '.join(users)}"
            if users
            else "required by no installed package: left from an earlier install"
        )
        evidence.append(
            f"{dist.display_name} {dist.version} is a {_major_text(major)} wheel, {why}"
        )
        taken = _taken_by_torch(facts, dist.name)
        if taken:
            evidence.append(
                f"torch loads {', '.join(taken)} from {dist.display_name}: its "
                "torch/__init__.py preloads what it finds in the nvidia/<library>/lib "
                "directories, of whatever CUDA major"
            )
        twins = _twins(dist.name, installed_for_torch)
        if twins:
            evidence.append(
                f"{dist.display_name} and {', '.join(twins)} install the same files: the one "
                "installed last owns them, and uninstalling either deletes them"
            )
        rows.append(
            ForeignWheel(dist.name, dist.version, major.major, major.or_later, tuple(users), twins)
        )
    names = ", ".join(dist.display_name for dist, _ in foreign)
    return [
        Finding(
            id="mixed-cuda-majors",
            severity=Severity.WARNING,
            title=f"CUDA wheels of another major than torch's CUDA {torch_major}: {names}",
            detail=(
                "These wheels carry CUDA libraries of another major than the ones torch was "
                "built with. torch's own libraries find their wheels by RPATH, but an "
                "extension, another framework or an LD_LIBRARY_PATH entry into these "
                "directories can load the wrong major: `undefined symbol: … version "
                "libcublas.so.12`, or `libcudart.so.13: cannot open shared object file` "
                "from an extension built for the other major."
            ),
            evidence=tuple(evidence),
            data=MixedCudaMajors(torch_cuda_major=torch_major, foreign=tuple(rows)),
        )
    ]


@remedy("mixed-cuda-majors")
def _mixed_cuda_majors(finding: Finding[MixedCudaMajors], ctx: Context) -> list[Remedy]:
    rows = finding.data.foreign
    leftovers = [r.name for r in rows if not r.required_by]
    needed = [r for r in rows if r.required_by]
    # torch's wheels whose files go with a leftover's uninstall: put back right after it.
    twins = list(dict.fromkeys(t for r in rows if not r.required_by for t in r.shares_files_with))
    remedies = []
    project = ctx.facts.project
    unlocked = project is not None and not set(leftovers) & set(project.locked_names)
    if leftovers and ctx.workflow is Workflow.UV_PROJECT and unlocked:
        # uv removes what the lock does not hold before it reinstalls: the twins come back.
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "uv.lock does not record them: uv sync removes what the lock does not hold"
                + (
                    f", and reinstalls {', '.join(twins)}, whose files go with them"
                    if twins
                    else ""
                ),
                reinstall_command(ctx, twins) if twins else "uv sync",
            )
        )
        leftovers = []
    if leftovers:
        command = uninstall_command(ctx, leftovers)
        summary = "remove the leftover wheels (nothing installed requires them)"
        if twins:
            command += "\n" + reinstall_command(ctx, twins)
            summary += (
                f", then put back {', '.join(twins)}: the uninstall deletes the files they share"
            )
        remedies.append(Remedy(RemedyKind.SHELL, summary, command))
    if needed:
        users = sorted({u for r in needed for u in r.required_by})
        major = finding.data.torch_cuda_major
        remedies.append(
            Remedy(
                RemedyKind.TEXT,
                f"{', '.join(users)} want{'s' if len(users) == 1 else ''} another CUDA major",
                f"Install the CUDA {major} variant of {', '.join(users)}, or give "
                f"{'it' if len(users) == 1 else 'them'} an environment of its own.",
            )
        )
    return remedies
