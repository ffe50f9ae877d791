"""Do the installed CUDA library wheels belong to torch's CUDA major (catalogue 24)?

Moving torch from cu12 to cu13 (or another framework pinning its own CUDA) leaves wheels of
the old major behind: nvidia-cublas-cu12 beside the un-suffixed CUDA 13 nvidia-cublas. They
sit in other directories than the ones torch's RPATH names, so torch itself may still load,
but whatever else resolves a CUDA library in the process (an extension, LD_LIBRARY_PATH
pointing into them, another framework) can pick the wrong major.
"""

from __future__ import annotations

from packaging.utils import canonicalize_name

from doctor.checks.expectations import applicable_requirements, parse_requirement
from doctor.checks.registry import Outcome, Skip, check
from doctor.facts import DistributionFacts, Facts
from doctor.findings import Finding, Severity
from doctor.knowledge.cuda_libraries import WheelMajor, wheel_cuda_major

__all__: list[str] = []


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


def _major_text(major: WheelMajor) -> str:
    return f"CUDA {major.major}{' or later' if major.or_later else ''}"


@check(
    "mixed-cuda-majors",
    family="wheels",
    summary="CUDA library wheels of another CUDA major than torch's are installed beside it.",
    label="CUDA wheels all of torch's CUDA major",
)
def mixed_cuda_majors(facts: Facts) -> Outcome:
    torch = facts.distribution("torch")
    build = facts.torch
    if torch is None:
        return Skip("torch is not installed")
    if build is None or not build.cuda:
        return Skip("torch is not a CUDA build")
    try:
        torch_major = int(build.cuda.split(".")[0])
    except ValueError:
        return Skip(f"torch's CUDA version {build.cuda!r} has no major number")
    environment = facts.interpreter.marker_environment if facts.interpreter else {}
    requirements, _ = applicable_requirements(torch.requires_dist, environment)
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
        rows.append(
            {
                "name": dist.name,
                "version": dist.version,
                "cuda_major": major.major,
                "or_later": major.or_later,
                "required_by": users,
            }
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
            data={"torch_cuda_major": torch_major, "foreign": rows},
        )
    ]
