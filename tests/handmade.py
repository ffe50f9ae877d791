"""Hand-built facts for unit tests of the pure checks (no venv, no subprocess).

The distributions mirror tests/factory.py's torch 2.14.1+cu130 set, so a unit test and a
scenario test describe the same environment.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from doctor.checks import Skip
from doctor.checks.registry import outcome_of
from doctor.derive import derive
from doctor.facts import (
    DistributionFacts,
    Facts,
    InterpreterFacts,
    LockedDependency,
    LockedPackage,
    ProjectFacts,
    RecordFacts,
    TorchBuildFacts,
)
from doctor.findings import Finding
from doctor.pipeline import judge
from tests.factory import (
    CUDA_TOOLKIT_EXTRAS,
    PLAIN_DEPENDENCIES,
    TORCH_2_14_EXTRAS,
    TORCH_2_14_REQUIRES,
    TORCH_2_14_WHEELS,
    cuda_toolkit_requires,
)

SITE = "/venv/lib/python3.11/site-packages"


def marker_env(
    machine: str = "x86_64", system: str = "Linux", python: str = "3.11.7"
) -> dict[str, str]:
    """A PEP 508 marker environment for the *target* interpreter."""
    sys_platform = {"Linux": "linux", "Windows": "win32", "Darwin": "darwin"}[system]
    return {
        "implementation_name": "cpython",
        "implementation_version": python,
        "os_name": "nt" if system == "Windows" else "posix",
        "platform_machine": machine,
        "platform_release": "6.8.0",
        "platform_system": system,
        "platform_version": "#1 SMP",
        "python_full_version": python,
        "platform_python_implementation": "CPython",
        "python_version": ".".join(python.split(".")[:2]),
        "sys_platform": sys_platform,
    }


def interpreter(environment: Mapping[str, str] | None = None) -> InterpreterFacts:
    return InterpreterFacts(
        executable="/project/.venv/bin/python",
        version="3.11.7",
        implementation="CPython",
        prefix="/project/.venv",
        base_prefix="/usr",
        is_venv=True,
        purelib=SITE,
        platlib=SITE,
        sys_path=(SITE,),
        marker_environment=dict(environment if environment is not None else marker_env()),
        real_site_dirs=(SITE,),  # as the probe resolves them (no symlinks here)
    )


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist(
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    provides_extra: Iterable[str] = (),
    missing_files: Iterable[str] = (),
    files: int = 10,
    installer: str | None = "uv",
    requires_python: str | None = None,
) -> DistributionFacts:
    missing = tuple(missing_files)
    stem = f"{name.replace('-', '_')}-{version}"
    return DistributionFacts(
        name=normalise(name),
        display_name=name,
        version=version,
        location=SITE,
        metadata_dir=f"{SITE}/{stem}.dist-info",
        installer=installer,
        requires_dist=tuple(requires_dist),
        provides_extra=tuple(provides_extra),
        requires_python=requires_python,
        record=RecordFacts(
            present=True, files=files, missing_count=len(missing), missing=missing[:20]
        ),
    )


def torch_dist(
    version: str = "2.14.1+cu130", requires_dist: Iterable[str] = TORCH_2_14_REQUIRES
) -> DistributionFacts:
    return dist(
        "torch",
        version,
        requires_dist=requires_dist,
        provides_extra=TORCH_2_14_EXTRAS,
        requires_python=">=3.10",
    )


def torch_build(
    version: str = "2.14.1+cu130", cuda: str | None = "13.0", lib: Iterable[str] = ()
) -> TorchBuildFacts:
    lib_files = tuple(lib) or (
        ("libtorch_cuda.so", "libtorch_cpu.so") if cuda else ("libtorch_cpu.so",)
    )
    return TorchBuildFacts(
        package_dir=f"{SITE}/torch", version=version, cuda=cuda, lib_files=lib_files
    )


def healthy_distributions(
    skip: Iterable[str] = (), versions: Mapping[str, str] | None = None
) -> list[DistributionFacts]:
    """torch 2.14.1+cu130 and everything it requires on Linux, at the pinned versions."""
    skipped = set(skip)
    chosen = {**PLAIN_DEPENDENCIES, **TORCH_2_14_WHEELS, **(versions or {})}
    out = [torch_dist()]
    for name, version in chosen.items():
        if name in skipped:
            continue
        if name == "cuda-toolkit":
            out.append(
                dist(
                    name,
                    version,
                    requires_dist=cuda_toolkit_requires(),
                    provides_extra=tuple(CUDA_TOOLKIT_EXTRAS),
                )
            )
        else:
            out.append(dist(name, version))
    return out


def facts(
    distributions: Iterable[DistributionFacts] = (),
    *,
    environment: Mapping[str, str] | None = None,
    build: TorchBuildFacts | None = None,
    project: ProjectFacts | None = None,
) -> Facts:
    dists = tuple(distributions)
    if build is None and any(d.name == "torch" for d in dists):
        torch = next(d for d in dists if d.name == "torch")
        build = torch_build(torch.version)
    return Facts(
        interpreter=interpreter(environment),
        distributions=dists,
        torch=build,
        project=project,
    )


def healthy_facts(**kwargs: Any) -> Facts:
    return facts(healthy_distributions(), **kwargs)


def replace_dist(all_facts: Facts, replacement: DistributionFacts) -> Facts:
    """The same facts with one distribution swapped (by name)."""
    dists = tuple(replacement if d.name == replacement.name else d for d in all_facts.distributions)
    return dataclasses.replace(all_facts, distributions=dists)


def locked_torch(
    version: str = "2.14.1+cu130",
    dependencies: Iterable[tuple[str, str | None]] = (),
    resolution_markers: Iterable[str] = (),
    registry: str = "https://download.pytorch.org/whl/cu130",
) -> LockedPackage:
    return LockedPackage(
        name="torch",
        version=version,
        source={"registry": registry},
        dependencies=tuple(LockedDependency(name, marker) for name, marker in dependencies),
        resolution_markers=tuple(resolution_markers),
    )


def project(
    *locked: LockedPackage,
    lock_error: str | None = None,
    has_lock: bool = True,
    dependency_metadata: Iterable[dict[str, Any]] = (),
) -> ProjectFacts:
    return ProjectFacts(
        root="/project",
        pyproject_path="/project/pyproject.toml",
        lock_path="/project/uv.lock" if has_lock else None,
        found_by="--project",
        name="demo",
        lock_error=lock_error,
        locked_torch=tuple(locked),
        locked_names=tuple(sorted({"torch"} | {d.name for p in locked for d in p.dependencies})),
        dependency_metadata=tuple(dependency_metadata),
    )


class CheckUnderTest:
    """One registered check, run as a pure function on hand-built facts."""

    def __init__(self, check_id: str) -> None:
        self.id = check_id

    def run(self, all_facts: Facts) -> Sequence[Finding] | Skip:
        return outcome_of(self.id, derive(all_facts))

    def only(self, all_facts: Facts) -> Finding:
        """Its one finding (fails the test on a skip or on any other count)."""
        outcome = self.run(all_facts)
        assert not isinstance(outcome, Skip) and len(outcome) == 1, outcome
        return outcome[0]

    def judged(self, all_facts: Facts) -> Finding:
        """Its finding as the pipeline reports it: with its remedies."""
        return next(f for f in judge(all_facts).findings if f.id == self.id)
