"""Is torch installed, and are the wheels it requires here installed, at its pins, whole?"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context, Workflow
from doctor.derive.expectations import CUDA_TOOLKIT, ExpectedWheel
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.remedies import conda_note, install_command, reinstall_command

__all__ = [
    "CpuOnlyTorch",
    "CudaWheelFilesMissing",
    "CudaWheelVersionMismatch",
    "MissingCudaWheel",
    "MissingTorchDependency",
    "TorchNotInstalled",
    "WheelRef",
]

TORCH_REQUIREMENTS = ("interpreter", "torch", "torch-metadata", "expectations")


@dataclass(frozen=True)
class WheelRef:
    """A distribution torch requires, as a finding names it."""

    name: str
    requirement: str  # as declared, marker included
    install: str  # what to give an installer: name, extras, pin
    required_by: str  # "torch" or "cuda-toolkit[cublas]"
    installed_version: str | None
    installer: str | None

    @property
    def torch_requirement(self) -> str:
        """The requirement of torch's own that brings this wheel ("cuda-toolkit" or itself)."""
        return self.name if self.required_by == "torch" else self.required_by.split("[", 1)[0]


def _ref(wheel: ExpectedWheel) -> WheelRef:
    return WheelRef(
        name=wheel.name,
        requirement=wheel.requirement,
        install=wheel.install_spec,
        required_by=wheel.required_by,
        installed_version=wheel.installed.version if wheel.installed else None,
        installer=wheel.installed.installer if wheel.installed else None,
    )


def _names_and_roots(wheels: Sequence[WheelRef]) -> frozenset[str]:
    return frozenset({w.name for w in wheels} | {w.torch_requirement for w in wheels})


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


# --- torch-not-installed ---------------------------------------------------------------


@dataclass(frozen=True)
class TorchNotInstalled(Payload):
    locked: bool  # uv.lock records torch: the environment is not synced
    stray_package_dir: bool  # a torch/ directory without distribution metadata


@check(
    "torch-not-installed",
    severities=(Severity.ERROR,),
    family="wheels",
    summary="The inspected environment has no torch distribution.",
    label="torch is installed",
    payload=TorchNotInstalled,
    requires=("interpreter",),
)
def torch_not_installed(ctx: Context) -> Outcome:
    facts = ctx.facts
    if ctx.torch is not None:
        return []
    evidence = [f"no torch-*.dist-info on the sys.path of {ctx.python}"]
    if facts.torch is not None:
        evidence.append(
            f"a torch package directory exists at {facts.torch.package_dir} "
            "but no distribution metadata: it was not installed by pip or uv"
        )
    locked = facts.project is not None and bool(facts.project.locked_torch)
    if locked:
        evidence.append("the project's uv.lock records torch: the environment is not synced")
    return [
        Finding(
            id="torch-not-installed",
            severity=Severity.ERROR,
            title="torch is not installed in the inspected environment",
            detail=(
                "torch-doctor inspects the environment where torch should run, and this one "
                "has no torch. Either a different environment was meant (use --python), or "
                "torch still has to be installed."
            ),
            evidence=tuple(evidence),
            data=TorchNotInstalled(locked=locked, stray_package_dir=facts.torch is not None),
        )
    ]


@remedy("torch-not-installed")
def _torch_not_installed(finding: Finding[TorchNotInstalled], ctx: Context) -> list[Remedy]:
    if finding.data.locked and ctx.workflow is Workflow.UV_PROJECT:
        return [Remedy(RemedyKind.SHELL, "install what uv.lock records", "uv sync")]
    if ctx.workflow is Workflow.UV_PROJECT:
        return [
            Remedy(
                RemedyKind.TEXT,
                "add torch to the project",
                "Follow uv's PyTorch guide to choose the CUDA index for your driver, then "
                "`uv add torch`. torch-doctor prints the index block once it knows the driver.",
            )
        ]
    return [
        Remedy(
            RemedyKind.TEXT,
            "inspect the environment where torch is installed",
            "Run `torch-doctor --python /path/to/venv`, or install torch into this one.",
        )
    ]


# --- missing-cuda-wheel -----------------------------------------------------------------


@dataclass(frozen=True)
class MissingCudaWheel(Payload):
    missing: tuple[WheelRef, ...]
    # cuda-toolkit is required but absent: the wheels its extras bring cannot be named.
    toolkit_extras_unknown: tuple[str, ...]

    def subjects(self) -> frozenset[str]:
        extra = frozenset({CUDA_TOOLKIT}) if self.toolkit_extras_unknown else frozenset()
        return _names_and_roots(self.missing) | extra


@check(
    "missing-cuda-wheel",
    severities=(Severity.ERROR,),
    family="wheels",
    summary="A CUDA wheel that torch requires on this platform is not installed.",
    label="CUDA wheels torch requires are installed",
    payload=MissingCudaWheel,
    requires=(*TORCH_REQUIREMENTS, "torch-not-installed"),
    caused_by=("lock-missing-dependencies",),
)
def missing_cuda_wheel(ctx: Context) -> Outcome:
    expectations = ctx.expected
    assert expectations is not None
    missing = [w for w in expectations.cuda if w.installed is None]
    if not missing and not expectations.toolkit_extras_unknown:
        return []
    evidence = [f"{w.requirement} (required by {w.required_by}): not installed" for w in missing]
    detail = (
        f"{ctx.torch_label} declares these CUDA wheels for this "
        "platform, and they are not installed. torch's CUDA libraries load from them, so "
        "`import torch` fails with errors such as `libcudnn.so.9: cannot open shared "
        "object file`."
    )
    if expectations.toolkit_extras_unknown:
        extras = ", ".join(expectations.toolkit_extras_unknown)
        detail += (
            f" {CUDA_TOOLKIT} itself is missing, so the libraries its extras bring "
            f"({extras}) cannot be named with their versions until it is installed."
        )
    return [
        Finding(
            id="missing-cuda-wheel",
            severity=Severity.ERROR,
            title=f"{_plural(len(missing), 'CUDA wheel')} required by torch not installed",
            detail=detail,
            evidence=tuple(evidence),
            data=MissingCudaWheel(
                missing=tuple(_ref(w) for w in missing),
                toolkit_extras_unknown=tuple(expectations.toolkit_extras_unknown),
            ),
        )
    ]


@remedy("missing-cuda-wheel")
def _missing_cuda_wheel(finding: Finding[MissingCudaWheel], ctx: Context) -> list[Remedy]:
    missing = finding.data.missing
    specs = [w.install for w in missing]
    if finding.data.toolkit_extras_unknown and not any(s.startswith(CUDA_TOOLKIT) for s in specs):
        specs.append(CUDA_TOOLKIT + _toolkit_pin(ctx))
    project = ctx.facts.project
    # A project not locked yet (no uv.lock) has nothing to sync from: install the wheels.
    if ctx.workflow is Workflow.UV_PROJECT and project is not None and project.lock_path:
        locked = set(project.locked_names)
        if all(w.name in locked for w in missing):
            return [
                Remedy(
                    RemedyKind.SHELL,
                    "uv.lock records these wheels: install them from the lock",
                    "uv sync",
                )
            ]
        # The lock lacks them (lock-missing-dependencies is the root when it can tell).
        return [
            Remedy(
                RemedyKind.TEXT,
                "uv.lock does not record these wheels",
                "Make the lock record them first: a plain install would be removed by the "
                "next `uv sync`. `torch-doctor lock` checks the lock against torch's wheels.",
            )
        ]
    return [
        Remedy(RemedyKind.SHELL, "install the pinned wheels", install_command(ctx, specs)),
        *conda_note(ctx),
    ]


def _toolkit_pin(ctx: Context) -> str:
    for wheel in ctx.expected.wheels if ctx.expected is not None else ():
        if wheel.name == CUDA_TOOLKIT:
            return wheel.install_spec[len(CUDA_TOOLKIT) :]
    return ""


# --- cuda-wheel-version-mismatch ----------------------------------------------------------


@dataclass(frozen=True)
class CudaWheelVersionMismatch(Payload):
    mismatched: tuple[WheelRef, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(w.name for w in self.mismatched)


@check(
    "cuda-wheel-version-mismatch",
    severities=(Severity.ERROR,),
    family="wheels",
    summary="An installed CUDA wheel's version does not satisfy torch's pin.",
    label="CUDA wheel versions match torch's pins",
    payload=CudaWheelVersionMismatch,
    requires=(*TORCH_REQUIREMENTS, "torch-not-installed"),
)
def cuda_wheel_version_mismatch(ctx: Context) -> Outcome:
    assert ctx.expected is not None
    wrong = [w for w in ctx.expected.cuda if w.version_ok is False]
    if not wrong:
        return []
    return [
        Finding(
            id="cuda-wheel-version-mismatch",
            severity=Severity.ERROR,
            title=f"{_plural(len(wrong), 'CUDA wheel')} at the wrong version",
            detail=(
                "torch was built and tested against exact versions of its CUDA libraries. "
                "Another version of the same wheel can miss symbols torch needs "
                "(`undefined symbol: ...`) or behave differently. This usually means "
                "another package or a manual install replaced the pinned wheel."
            ),
            evidence=tuple(
                f"{w.name} {w.installed.version} installed; "  # type: ignore[union-attr]
                f"{w.required_by} requires {w.name}{w.specifier}"
                for w in wrong
            ),
            data=CudaWheelVersionMismatch(mismatched=tuple(_ref(w) for w in wrong)),
        )
    ]


def _locked_against_torch(ctx: Context, wheel: WheelRef) -> str | None:
    """The version uv.lock records for ``wheel`` when every one it records is a version
    torch's requirement rejects: the lock itself is wrong (an override or constraint in
    pyproject.toml forces it), so syncing puts the wrong wheel back."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    graph = ctx.facts.lock_graph
    if graph is None:
        return None
    versions = [
        p.version for p in graph.packages if p.version and canonicalize_name(p.name) == wheel.name
    ]
    try:
        specifier = Requirement(wheel.install).specifier
        rejected = [v for v in versions if not specifier.contains(Version(v), prereleases=True)]
    except (InvalidRequirement, InvalidVersion):
        return None
    return rejected[0] if versions and len(rejected) == len(versions) else None


@remedy("cuda-wheel-version-mismatch")
def _version_mismatch(finding: Finding[CudaWheelVersionMismatch], ctx: Context) -> list[Remedy]:
    wrong = finding.data.mismatched
    specs = [w.install for w in wrong]
    if ctx.workflow is Workflow.UV_PROJECT:
        forced = {w.name: v for w in wrong if (v := _locked_against_torch(ctx, w)) is not None}
        remedies: list[Remedy] = []
        synced = [w for w in wrong if w.name not in forced]
        if synced:
            names = " ".join(f"--reinstall-package {shlex.quote(w.name)}" for w in synced)
            remedies.append(
                Remedy(RemedyKind.SHELL, "reinstall the versions uv.lock pins", f"uv sync {names}")
            )
        if forced:
            listed = ", ".join(f"{name} {version}" for name, version in forced.items())
            wanted = ", ".join(w.install for w in wrong if w.name in forced)
            upgrade = " ".join(f"--upgrade-package {shlex.quote(n)}" for n in forced)
            remedies += [
                Remedy(
                    RemedyKind.TEXT,
                    f"uv.lock itself records {listed}, which torch rejects",
                    "Something in pyproject.toml forces that version: a [tool.uv] "
                    "override-dependencies or constraint-dependencies entry, or a source "
                    f"pinning it. Make it {wanted}, or remove it; then re-lock and sync.",
                ),
                Remedy(
                    RemedyKind.SHELL,
                    f"once pyproject.toml no longer forces it (the entry says {wanted}, or is "
                    "gone), re-lock and sync",
                    f"uv lock {upgrade}\nuv sync\n",
                ),
            ]
        return remedies
    return [
        Remedy(
            RemedyKind.SHELL,
            "install the versions torch pins",
            install_command(ctx, specs),
        ),
        *conda_note(ctx),
    ]


# --- cuda-wheel-files-missing --------------------------------------------------------------


@dataclass(frozen=True)
class DamagedWheel:
    name: str
    missing_count: int
    files: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class CudaWheelFilesMissing(Payload):
    packages: tuple[str, ...]
    damaged: tuple[DamagedWheel, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(self.packages)


@check(
    "cuda-wheel-files-missing",
    severities=(Severity.ERROR,),
    family="wheels",
    summary="An installed CUDA wheel lacks files that its RECORD lists.",
    label="installed CUDA wheels and torch are complete",
    payload=CudaWheelFilesMissing,
    requires=(*TORCH_REQUIREMENTS, "torch-not-installed"),
)
def cuda_wheel_files_missing(ctx: Context) -> Outcome:
    assert ctx.expected is not None
    damaged: list[DamagedWheel] = []
    for wheel in ctx.expected.cuda:
        record = wheel.installed.record if wheel.installed else None
        if record is not None and record.missing_count:
            damaged.append(
                DamagedWheel(wheel.name, record.missing_count, record.files, record.missing)
            )
    torch = ctx.torch
    if torch is not None and torch.record is not None and torch.record.missing_count:
        record = torch.record
        damaged.append(DamagedWheel("torch", record.missing_count, record.files, record.missing))
    if not damaged:
        return []
    return [
        Finding(
            id="cuda-wheel-files-missing",
            severity=Severity.ERROR,
            title="installed wheels are missing files: " + ", ".join(d.name for d in damaged),
            detail=(
                "These distributions are installed, but files listed in their RECORD are "
                "gone: deleted by hand, by a cleanup script, or overwritten by another "
                "wheel's uninstall (nvidia wheels share directories). A missing shared "
                "library fails exactly like a missing wheel."
            ),
            evidence=tuple(_files_evidence(d) for d in damaged),
            data=CudaWheelFilesMissing(
                packages=tuple(d.name for d in damaged), damaged=tuple(damaged)
            ),
        )
    ]


def _files_evidence(damaged: DamagedWheel) -> str:
    shown = ", ".join(damaged.examples[:3])
    more = f", and {damaged.missing_count - 3} more" if damaged.missing_count > 3 else ""
    return (
        f"{damaged.name}: {damaged.missing_count} of {damaged.files} files in RECORD are "
        f"missing ({shown}{more})"
    )


@remedy("cuda-wheel-files-missing")
def _files_missing(finding: Finding[CudaWheelFilesMissing], ctx: Context) -> list[Remedy]:
    return [
        Remedy(
            RemedyKind.SHELL,
            "reinstall the damaged wheels at torch's pins",
            reinstall_command(ctx, finding.data.packages),
        ),
        *conda_note(ctx),
    ]


# --- missing-torch-dependency ---------------------------------------------------------------


@dataclass(frozen=True)
class MissingTorchDependency(Payload):
    missing: tuple[WheelRef, ...]  # not installed, or at a version torch does not accept

    def subjects(self) -> frozenset[str]:
        return frozenset(w.name for w in self.missing)


@check(
    "missing-torch-dependency",
    severities=(
        Severity.ERROR,
        Severity.WARNING,
    ),
    family="wheels",
    summary="A non-CUDA requirement of torch is missing or at a version torch does not accept.",
    label="torch's Python dependencies are installed",
    payload=MissingTorchDependency,
    requires=(*TORCH_REQUIREMENTS, "torch-not-installed"),
    caused_by=("lock-missing-dependencies",),
)
def missing_torch_dependency(ctx: Context) -> Outcome:
    assert ctx.expected is not None
    missing = [w for w in ctx.expected.other if w.installed is None]
    wrong = [w for w in ctx.expected.other if w.version_ok is False]
    if not missing and not wrong:
        return []
    evidence = [f"{w.requirement}: not installed" for w in missing]
    evidence += [
        f"{w.name} {w.installed.version} installed; torch requires {w.name}{w.specifier}"  # type: ignore[union-attr]
        for w in wrong
    ]
    return [
        Finding(
            id="missing-torch-dependency",
            severity=Severity.ERROR if missing else Severity.WARNING,
            title="torch's own Python dependencies are incomplete",
            detail=(
                "torch imports these packages; without them `import torch` fails before any "
                "CUDA library is touched."
            ),
            evidence=tuple(evidence),
            data=MissingTorchDependency(missing=tuple(_ref(w) for w in missing + wrong)),
        )
    ]


@remedy("missing-torch-dependency")
def _missing_dependency(finding: Finding[MissingTorchDependency], ctx: Context) -> list[Remedy]:
    project = ctx.facts.project
    locked = set(project.locked_names) if project is not None else set()
    if ctx.workflow is Workflow.UV_PROJECT and all(w.name in locked for w in finding.data.missing):
        return [Remedy(RemedyKind.SHELL, "install them from uv.lock", "uv sync")]
    specs = [w.install for w in finding.data.missing]
    return [
        Remedy(RemedyKind.SHELL, "install torch's requirements", install_command(ctx, specs)),
        *conda_note(ctx),
    ]


# --- cpu-only-torch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuOnlyTorch(Payload):
    version: str | None
    gpu_present: bool
    capabilities: tuple[str, ...]
    driver_version: str | None
    driver_cuda: int | None


@check(
    "cpu-only-torch",
    severities=(
        Severity.ERROR,
        Severity.INFO,
    ),
    family="wheels",
    summary="The installed torch is a CPU-only build.",
    label="torch is built with CUDA",
    payload=CpuOnlyTorch,
    requires=("interpreter", "torch"),
)
def cpu_only_torch(ctx: Context) -> Outcome:
    build = ctx.facts.torch
    if build is None:
        return Skip("torch's build is unknown: no torch package directory")
    if build.error is not None and build.version is None:
        return Skip(f"torch's build is unknown: {build.error}")
    if build.is_cuda_build or build.hip:
        return []
    evidence = [f"torch/version.py: __version__ = {build.version!r}, cuda = None"]
    if "libtorch_cuda.so" not in build.lib_files:
        evidence.append("torch/lib has no libtorch_cuda.so")
    # With an NVIDIA GPU here, a CPU build is a mistake, not a choice (catalogue entry 17).
    machine = ctx.machine
    gpus = machine.gpus if machine is not None else ()
    gpu_present = machine is not None and machine.gpu_present
    if machine is not None:
        evidence += [f"GPU {g.index}: {g.name}, compute capability {g.cc_text}" for g in gpus]
        if not gpus:
            evidence += [
                f"an NVIDIA GPU is on the PCI bus at {d.address}" for d in machine.pci_devices
            ]
    return [
        Finding(
            id="cpu-only-torch",
            severity=Severity.ERROR if gpu_present else Severity.INFO,
            title=f"torch {build.version} is a CPU-only build"
            + (" on a machine with an NVIDIA GPU" if gpu_present else ""),
            detail=(
                "This torch was built without CUDA: it never uses a GPU, whatever the driver. "
                + (
                    "Its local version tag +cpu says it came from the CPU index."
                    if build.local_tag == "cpu"
                    else "On Windows and macOS, PyPI's torch wheels are CPU-only."
                )
                + (
                    " This machine has an NVIDIA GPU, so `torch.cuda.is_available()` is False "
                    "for no good reason (`AssertionError: Torch not compiled with CUDA enabled`)."
                    if gpu_present
                    else ""
                )
            ),
            evidence=tuple(evidence),
            data=CpuOnlyTorch(
                version=build.version,
                gpu_present=gpu_present,
                capabilities=tuple(g.cc_text for g in gpus if g.cc_text),
                driver_version=machine.driver_version if machine is not None else None,
                driver_cuda=machine.driver_cuda_version if machine is not None else None,
            ),
        )
    ]


@remedy("cpu-only-torch")
def _cpu_only_torch(finding: Finding[CpuOnlyTorch], ctx: Context) -> Sequence[Remedy]:
    from doctor.remedies.variants import (
        capabilities_text,
        choose_variant,
        driver_runs_text,
        variant_remedies,
    )

    if not finding.data.gpu_present:
        return []
    choice = choose_variant(ctx)
    if choice is None:
        return [
            Remedy(
                RemedyKind.TEXT,
                "no published CUDA build of torch fits this driver and GPU",
                f"None of the CUDA variants torch-doctor knows carries code for "
                f"{capabilities_text(ctx)} at the CUDA version this driver supports; "
                "upgrade the driver, or build torch from source with TORCH_CUDA_ARCH_LIST.",
            )
        ]
    runs = driver_runs_text(ctx, choice)
    why = (
        f"{runs}, with code for {capabilities_text(ctx)}"
        if runs
        else f"it carries code for {capabilities_text(ctx)}"
    )
    return variant_remedies(ctx, choice, why)
