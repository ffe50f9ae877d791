"""What torch really did (``check --deep``): each runtime failure named, with its remedy.

The runtime probe (doctor/probe/runtime.py) imports torch in a contained child and runs
a few small computations; each failed, hung or crashed stage is a finding here, with the
real error text as evidence. Each payload names what the failure concerns (``subjects``):
the wheels of the libraries its error names or that were mapped from outside torch's
wheels, "driver" for CUDA that does not start, the GPUs by their sm, torch.compile's
toolchain. The runner relates the finding to a static root (``caused_by``) whose subjects
cover those, so a missing wheel, a shadowed library or an absent driver stays one error
with what torch really did hanging under it; otherwise the runtime finding is its own root.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from doctor.checks.registry import Outcome, Skip, check, remedy
from doctor.derive import Context
from doctor.facts.runtime import RuntimeFacts, RuntimeStage, StageStatus
from doctor.findings import Finding, Payload, Remedy, RemedyKind, Severity
from doctor.knowledge import cuda_runtime_error
from doctor.knowledge.cuda_libraries import cuda_library, driver_sonames
from doctor.knowledge.loader_errors import cannot_open, undefined_symbol, version_not_found
from doctor.remedies import (
    conda_note,
    drop_entries,
    reinstall_command,
    reinstall_one,
)
from doctor.remedies.variants import capabilities_text, choose_variant, variant_remedies

__all__ = [
    "RUNTIME_IDS",
    "CudaUnavailable",
    "GpuKernelFailed",
    "NcclFailed",
    "OutsideLibrary",
    "RuntimeLibraryMismatch",
    "StageFailure",
    "TorchCompileFailed",
    "TorchImportFailed",
]

RUNTIME_IDS = (
    "torch-import-failed",
    "cuda-unavailable",
    "gpu-kernel-failed",
    "nccl-failed",
    "torch-compile-failed",
    "runtime-library-mismatch",
)
FAMILY = "runtime"
DRIVER = "driver"  # the subject the driver family's findings share
FAILED = (StageStatus.FAILED, StageStatus.TIMED_OUT, StageStatus.CRASHED)
# The loader's (doctor/knowledge/loader_errors.toml) and Python's own words for what a
# failure concerns.
CANNOT_OPEN = cannot_open()
UNDEFINED_SYMBOL = undefined_symbol()
VERSION_NOT_FOUND = version_not_found()
NO_MODULE = re.compile(r"No module named '(?P<module>[\w]+)")
NO_KERNEL_IMAGE = "no kernel image is available"
DRIVER_WORDS = re.compile(r"\bdriver\b|cudaGetDeviceCount|cuInit", re.IGNORECASE)
NCCL_SONAME = "libnccl.so.2"


# --- payloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StageFailure(Payload):
    """A stage of the runtime probe that failed, hung or crashed, and what it concerns."""

    stage: str
    status: str
    error: str | None
    reason: str | None
    signal: str | None
    seconds: float
    # Wheels, sonames, "driver", "sm_90", "c-compiler": what the runner relates roots by.
    concerns: tuple[str, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(self.concerns)


@dataclass(frozen=True)
class TorchImportFailed(StageFailure):
    pass


@dataclass(frozen=True)
class CudaUnavailable(StageFailure):
    torch_cuda: str
    device_count: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class GpuKernelFailed(StageFailure):
    gpus: tuple[str, ...]  # the failed stages: "gpu:0"


@dataclass(frozen=True)
class NcclFailed(StageFailure):
    pass


@dataclass(frozen=True)
class TorchCompileFailed(StageFailure):
    ran_on: str | None


@dataclass(frozen=True)
class OutsideLibrary:
    file_name: str
    path: str
    owner: str | None
    predicted: str | None  # where the loader model says it resolves (None: not modelled)
    wheel: str | None  # the wheel that should have provided it


@dataclass(frozen=True)
class RuntimeLibraryMismatch(Payload):
    libraries: tuple[OutsideLibrary, ...]

    def subjects(self) -> frozenset[str]:
        return frozenset(i.wheel or i.file_name for i in self.libraries)


# --- what a failure concerns -------------------------------------------------------------


def _runtime(ctx: Context) -> RuntimeFacts:
    runtime = ctx.facts.runtime
    assert runtime is not None  # requires=("runtime",)
    return runtime


def _library_subject(ctx: Context, soname: str) -> str:
    """The wheel that ships a CUDA library (torch's pin first), "driver" for the driver's
    own libraries (never from a wheel), else the soname itself."""
    if soname.split(".so")[0] in {s.split(".so")[0] for s in driver_sonames()}:
        return DRIVER
    wheels = ctx.providing_wheels(soname)
    return wheels[0] if wheels else soname


def _outside(ctx: Context, runtime: RuntimeFacts) -> list[OutsideLibrary]:
    """CUDA libraries the child mapped from outside torch's wheels, or from another file
    than the loader model predicts (the driver's own libraries never come from a wheel)."""
    libraries = ctx.facts.libraries
    torch_dir = ctx.facts.torch.package_dir if ctx.facts.torch is not None else None
    items = []
    for mapped in runtime.mapped:
        if _library_subject(ctx, mapped.file_name) == DRIVER:
            continue
        predicted = None
        if libraries is not None:
            row = libraries.library(mapped.file_name)
            if row is not None and row.resolved is not None:
                predicted = row.resolved.path
        in_torch = torch_dir is not None and mapped.path.startswith(torch_dir.rstrip("/") + "/")
        unowned = mapped.owner is None and not in_torch
        differs = predicted is not None and predicted != mapped.path
        if unowned or differs:
            wheel = _library_subject(ctx, mapped.file_name)
            items.append(
                OutsideLibrary(
                    file_name=mapped.file_name,
                    path=mapped.path,
                    owner=mapped.owner,
                    predicted=predicted,
                    wheel=wheel if wheel != mapped.file_name else None,
                )
            )
    return items


def _error_concerns(ctx: Context, runtime: RuntimeFacts, texts: Sequence[str]) -> list[str]:
    """What the error text names: a library that cannot be opened, a module that is not
    installed; for a missing symbol, the libraries mapped from outside torch's wheels (the
    library that lacks the symbol is not the one the loader names: that one is the victim)."""
    concerns: list[str] = []
    text = "\n".join(t for t in texts if t)
    for match in CANNOT_OPEN.finditer(text):
        concerns.append(_library_subject(ctx, match.group("soname")))
    for match in NO_MODULE.finditer(text):
        concerns.append(canonicalize_name(match.group("module")))
    if UNDEFINED_SYMBOL.search(text) or VERSION_NOT_FOUND.search(text):
        for match in VERSION_NOT_FOUND.finditer(text):
            if cuda_library(match.group("version")) is not None:
                concerns.append(_library_subject(ctx, match.group("version")))
        concerns += [i.wheel or i.file_name for i in _outside(ctx, runtime)]
    return list(dict.fromkeys(concerns))


def _stage_evidence(stage: RuntimeStage) -> list[str]:
    lines = []
    if stage.error:
        lines.append(f"{stage.title}: {stage.error}")
    elif stage.reason:
        lines.append(f"{stage.title}: {stage.status}: {stage.reason}")
    if stage.traceback_tail:
        last = stage.traceback_tail[-1].strip().splitlines()[0]
        lines.append(f"last frame: {last}")
    lines += [f"torch warned: {w}" for w in stage.warnings]
    lines += [f"stderr: {line}" for line in stage.stderr_tail[-3:]]
    return lines


def _stage_fields(stage: RuntimeStage, concerns: Sequence[str]) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "status": stage.status,
        "error": stage.error,
        "reason": stage.reason,
        "signal": stage.signal,
        "seconds": stage.seconds,
        "concerns": tuple(concerns),
    }


def _failed_stage(runtime: RuntimeFacts, name: str) -> RuntimeStage | Outcome:
    """The stage when it failed, hung or crashed; else the check's outcome (skip or pass)."""
    stage = runtime.stage(name)
    if stage is None:
        return Skip(f"the {name} stage was not run")
    if stage.status == StageStatus.SKIPPED:
        return Skip(stage.reason or "not run")
    return stage if stage.status in FAILED else []


# --- torch-import-failed ------------------------------------------------------------------


@check(
    "torch-import-failed",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="`import torch` failed, hung or crashed in a contained process (check --deep).",
    label="import torch works",
    payload=TorchImportFailed,
    requires=("runtime",),
    caused_by=(
        "missing-cuda-wheel",
        "cuda-wheel-files-missing",
        "missing-torch-dependency",
        "library-shadowed",
        "library-not-found",
        "library-load-failed",
        "library-version-mismatch",
    ),
)
def torch_import_failed(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    stage = _failed_stage(runtime, "import")
    if not isinstance(stage, RuntimeStage):
        return stage
    how = {
        StageStatus.FAILED: f"raised {(stage.error or '').split(':', 1)[0] or 'an error'}",
        StageStatus.TIMED_OUT: "did not finish",
        StageStatus.CRASHED: f"killed the process ({stage.signal})",
    }[stage.status]
    detail = (
        f"`import torch` {how} in a contained process of the inspected interpreter: "
        "nothing that uses torch can run in this environment."
    )
    if stage.status == StageStatus.TIMED_OUT:
        detail += (
            " Something run at import or start-up blocks (a .pth file or sitecustomize, a "
            "network file system, a library constructor)."
        )
    concerns = _error_concerns(ctx, runtime, [stage.error or "", *stage.stderr_tail])
    return [
        Finding(
            id="torch-import-failed",
            severity=Severity.ERROR,
            title=f"import torch {how}",
            detail=detail,
            evidence=tuple(_stage_evidence(stage)),
            data=TorchImportFailed(**_stage_fields(stage, concerns)),
        )
    ]


def _known_wheels(ctx: Context, concerns: Sequence[str]) -> list[str]:
    """The concerned names that are wheels with a known version (torch's pin or installed):
    what a pinned reinstall can put back. torch itself is reinstalled on its own."""
    return [
        c
        for c in concerns
        if c not in (DRIVER, "torch") and not c.startswith("sm_") and ctx.pinned_version(c)
    ]


def _reinstall_wheels(ctx: Context, wheels: Sequence[str], summary: str) -> list[Remedy]:
    if not wheels:
        return []
    return [Remedy(RemedyKind.SHELL, summary, reinstall_command(ctx, wheels) + "\n")]


def _reinstall_torch(ctx: Context, summary: str) -> list[Remedy]:
    """torch at its exact version (its local tag's PyTorch index), with its pinned
    dependencies; in a uv project, from uv.lock."""
    command = reinstall_one(ctx, "torch", ctx.torch_version, no_deps=False)
    return [Remedy(RemedyKind.SHELL, summary, command + "\n")] if command else []


@remedy("torch-import-failed")
def _torch_import_failed(finding: Finding[TorchImportFailed], ctx: Context) -> list[Remedy]:
    if finding.data.status == StageStatus.TIMED_OUT:
        return [
            Remedy(
                RemedyKind.SHELL,
                "see what blocks at start-up or import (the last module printed is the one "
                "that hangs; .pth files and sitecustomize run first)",
                f'{shlex.quote(ctx.python)} -X importtime -c "import torch"\n',
            )
        ]
    if ctx.torch is None:
        return []
    remedies = _reinstall_wheels(
        ctx,
        _known_wheels(ctx, finding.data.concerns),
        "put back the wheels the error names, at torch's pins",
    )
    remedies += _reinstall_torch(
        ctx,
        ("or " if remedies else "") + "reinstall torch at its version, with its pinned "
        "dependencies",
    )
    return remedies + conda_note(ctx)


# --- cuda-unavailable ---------------------------------------------------------------------


@check(
    "cuda-unavailable",
    severities=(Severity.ERROR, Severity.WARNING),
    family=FAMILY,
    summary="A CUDA build of torch imported, but torch.cuda.is_available() is False.",
    label="torch.cuda.is_available()",
    payload=CudaUnavailable,
    requires=("runtime", "torch-import-failed"),
    caused_by=(
        "no-gpu-visible",
        "no-nvidia-driver",
        "nvml-driver-mismatch",
        "cuda-init-failed",
        "driver-too-old",
        "library-shadowed",
    ),
)
def cuda_unavailable(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    stage = runtime.stage("build")
    if stage is None:
        return Skip("the build stage was not run")
    if stage.status == StageStatus.SKIPPED and stage.reason:
        return Skip(stage.reason)
    if stage.status != StageStatus.PASSED:
        return Skip("torch did not import")
    if runtime.cuda_version is None:
        return Skip("a CPU-only build: CUDA is not expected")
    if runtime.cuda_available:
        return []
    # CUDA not starting concerns the driver, unless torch's words name a library instead.
    concerns = _error_concerns(ctx, runtime, stage.warnings) or [DRIVER]
    if any(DRIVER_WORDS.search(w) for w in stage.warnings) and DRIVER not in concerns:
        concerns.append(DRIVER)
    # With a GPU here, a GPU torch cannot use is an error; without one known, it is what a
    # CPU-only machine gives (a warning, as no-nvidia-driver says), and a root it hangs
    # under is not made worse by it (the runner raises a root to its worst consequence).
    gpu_known = ctx.machine is not None and ctx.machine.gpu_present
    return [
        Finding(
            id="cuda-unavailable",
            severity=Severity.ERROR if gpu_known else Severity.WARNING,
            title="torch.cuda.is_available() is False",
            detail=(
                f"torch {runtime.torch_version} (CUDA {runtime.cuda_version}) imported, but "
                "it cannot use a GPU: every tensor stays on the CPU and `.cuda()` raises."
            ),
            evidence=(
                f"torch.cuda.is_available() returned False; device_count() {runtime.device_count}",
                *(f"torch warned: {w}" for w in stage.warnings),
            ),
            data=CudaUnavailable(
                **_stage_fields(stage, concerns),
                torch_cuda=runtime.cuda_version,
                device_count=runtime.device_count,
                warnings=tuple(stage.warnings),
            ),
        )
    ]


@remedy("cuda-unavailable")
def _cuda_unavailable(finding: Finding[CudaUnavailable], ctx: Context) -> list[Remedy]:
    # The number torch's warning carries says what failed: its meaning first, when known.
    codes = dict.fromkeys(
        int(code) for w in finding.data.warnings for code in re.findall(r"\bError (\d+)\b", w)
    )
    known = [e for e in map(cuda_runtime_error, codes) if e is not None]
    if known:
        return [
            Remedy(
                RemedyKind.TEXT,
                f"what torch's error {e.code} means ({e.name})",
                f"{e.name}: {e.meaning}. What to do: {e.todo}",
            )
            for e in known
        ]
    return [
        Remedy(
            RemedyKind.TEXT,
            "read torch's warning in the evidence",
            "Error 803/804: the CUDA driver libraries and the kernel module disagree (reboot "
            "after a driver update, or take cuda-compat libraries off the loader path); "
            "'driver too old': update the driver or install a torch built for an older CUDA.",
        )
    ]


# --- gpu-kernel-failed --------------------------------------------------------------------


def _sm(runtime: RuntimeFacts, stage_name: str) -> str | None:
    index = stage_name.split(":", 1)[1]
    for device in runtime.devices:
        if str(device.index) == index:
            return "sm_" + device.capability.replace(".", "")
    return None


@check(
    "gpu-kernel-failed",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="A small matmul or conv failed, hung or gave a wrong result on a GPU.",
    label="GPU matmul and conv",
    payload=GpuKernelFailed,
    requires=("runtime", "torch-import-failed"),
    caused_by=(
        "gpu-arch-unsupported",
        "driver-too-old",
        "library-shadowed",
        "library-version-mismatch",
    ),
)
def gpu_kernel_failed(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    gpu_stages = [s for s in runtime.stages if s.name.startswith("gpu:")]
    if not gpu_stages:
        return Skip("no GPU stage ran (torch sees no GPU)")
    failed = [s for s in gpu_stages if s.status in FAILED]
    if not failed:
        return []
    concerns: list[str] = []
    for stage in failed:
        error = stage.error or ""
        sm = _sm(runtime, stage.name)
        if NO_KERNEL_IMAGE in error and sm is not None:
            concerns.append(sm)
        elif DRIVER_WORDS.search(error):
            concerns.append(DRIVER)
        else:
            concerns += _error_concerns(ctx, runtime, [error, *stage.stderr_tail])
    first = failed[0]
    plural = "s" if len(gpu_stages) != 1 else ""
    return [
        Finding(
            id="gpu-kernel-failed",
            severity=Severity.ERROR,
            title=f"{len(failed)} of {len(gpu_stages)} GPU{plural} failed a small matmul or "
            f"conv ({first.error or first.status})",
            detail=(
                "torch sees the GPU but cannot run work on it: allocating, a small fp32 or "
                "bf16 matmul (cuBLAS), a small conv (cuDNN) or synchronizing failed, hung or "
                "disagreed with the CPU's result."
            ),
            evidence=tuple(line for stage in failed for line in _stage_evidence(stage)),
            data=GpuKernelFailed(
                **_stage_fields(first, list(dict.fromkeys(concerns))),
                gpus=tuple(s.name for s in failed),
            ),
        )
    ]


_DRIVER_LOG = "sudo dmesg | grep -E 'NVRM|Xid' | tail -n 20\n"


@remedy("gpu-kernel-failed")
def _gpu_kernel_failed(finding: Finding[GpuKernelFailed], ctx: Context) -> list[Remedy]:
    concerns = finding.data.concerns
    remedies: list[Remedy] = []
    sms = sorted(c for c in concerns if c.startswith("sm_"))
    if sms:
        choice = choose_variant(ctx)
        build = ctx.facts.torch
        installed = build.local_tag if build is not None else None
        if choice is not None and not (choice.same_release and choice.build.variant == installed):
            remedies += variant_remedies(ctx, choice, f"its kernels cover {capabilities_text(ctx)}")
        else:
            # The build the knowledge tables name for this GPU is the one installed (or
            # none fits this driver): a reinstall of the same would change nothing.
            remedies.append(
                Remedy(
                    RemedyKind.TEXT,
                    f"no other published torch build is known to carry code for {', '.join(sms)} "
                    "with this driver",
                    "A newer driver runs newer CUDA variants: update it, then run torch-doctor "
                    "again to get the build to install; or build torch from source with "
                    "TORCH_CUDA_ARCH_LIST naming this GPU.",
                )
            )
    wheels = _known_wheels(ctx, concerns)
    remedies += _reinstall_wheels(
        ctx, wheels, "put back the wheels the error names, at torch's pins"
    )
    if wheels:
        remedies += conda_note(ctx)
    if DRIVER in concerns or not remedies:
        # A crash, a hang or a wrong result with nothing installed to blame: the driver's
        # log names a hardware or driver fault (Xid 13, 31, 43, 79...).
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "see what the driver logged for the GPU (an Xid line names a hardware or "
                "driver fault; reset the GPU or reboot for Xid 79 and 48)",
                _DRIVER_LOG,
            )
        )
    return remedies


# --- nccl-failed --------------------------------------------------------------------------


@check(
    "nccl-failed",
    severities=(Severity.ERROR,),
    family=FAMILY,
    summary="NCCL failed: its version could not be read, or an all-reduce over the GPUs failed.",
    label="NCCL",
    payload=NcclFailed,
    requires=("runtime", "torch-import-failed"),
    caused_by=(
        "library-shadowed",
        "library-version-mismatch",
        "cuda-wheel-version-mismatch",
    ),
)
def nccl_failed(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    stage = _failed_stage(runtime, "nccl")
    if not isinstance(stage, RuntimeStage):
        return stage
    concerns = [_library_subject(ctx, NCCL_SONAME)]
    concerns += _error_concerns(ctx, runtime, [stage.error or ""])
    return [
        Finding(
            id="nccl-failed",
            severity=Severity.ERROR,
            title=f"NCCL {stage.status}: {stage.error or stage.reason}",
            detail=(
                "torch's NCCL did not work in a contained process: multi-GPU training "
                "(DistributedDataParallel, FSDP) will fail or hang at its first collective."
            ),
            evidence=tuple(_stage_evidence(stage)),
            data=NcclFailed(**_stage_fields(stage, list(dict.fromkeys(concerns)))),
        )
    ]


@remedy("nccl-failed")
def _nccl_failed(finding: Finding[NcclFailed], ctx: Context) -> list[Remedy]:
    remedies = _reinstall_wheels(
        ctx,
        _known_wheels(ctx, finding.data.concerns),
        "put torch's NCCL back at the version torch pins",
    )
    remedies.append(
        Remedy(
            RemedyKind.ENV,
            "then run the deep check again with NCCL's own log: it names the transport or "
            "the call that failed",
            "export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,ENV\n",
        )
    )
    return remedies + (conda_note(ctx) if len(remedies) > 1 else [])


# --- torch-compile-failed -----------------------------------------------------------------


@check(
    "torch-compile-failed",
    severities=(Severity.WARNING,),
    family=FAMILY,
    summary="torch.compile of a tiny function failed (inductor: triton on GPU, C++ on CPU).",
    label="torch.compile of a tiny function",
    payload=TorchCompileFailed,
    requires=("runtime", "torch-import-failed"),
    caused_by=("torch-compile-toolchain",),
)
def torch_compile_failed(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    stage = _failed_stage(runtime, "compile")
    if not isinstance(stage, RuntimeStage):
        return stage
    # Inductor compiles with the C compiler on both devices, and with triton on a GPU.
    on_gpu = stage.ran_on is not None and stage.ran_on.startswith("cuda")
    names_compiler = "C compiler" in (stage.error or "")
    concerns = ["triton"] if on_gpu and not names_compiler else ["c-compiler"]
    return [
        Finding(
            id="torch-compile-failed",
            severity=Severity.WARNING,
            title=f"torch.compile {stage.status}: {(stage.error or stage.reason or '')[:120]}",
            detail=(
                "torch works, but compiling a tiny function with torch.compile failed; "
                "eager code runs, compiled code will not."
            ),
            evidence=tuple(_stage_evidence(stage)),
            data=TorchCompileFailed(
                **_stage_fields(stage, concerns),
                ran_on=stage.ran_on,
            ),
        )
    ]


def _python_headers(ctx: Context) -> str:
    interpreter = ctx.facts.interpreter
    version = ".".join(interpreter.version.split(".")[:2]) if interpreter is not None else "3"
    return f"python{version}-dev"


@remedy("torch-compile-failed")
def _torch_compile_failed(finding: Finding[TorchCompileFailed], ctx: Context) -> list[Remedy]:
    remedies = [
        Remedy(
            RemedyKind.SHELL,
            "clear inductor's and triton's caches: code compiled by another torch or "
            "triton is reused from there and fails",
            'rm -rf "${TORCHINDUCTOR_CACHE_DIR:-/tmp/torchinductor_$USER}" '
            '"${TRITON_CACHE_DIR:-$HOME/.triton/cache}"\n',
        )
    ]
    if "c-compiler" in finding.data.concerns:
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "inductor compiles C++ with the system's compiler and Python's headers "
                "(Debian/Ubuntu package names)",
                f"sudo apt-get install build-essential {_python_headers(ctx)}\n",
            )
        )
    elif ctx.pinned_version("triton"):
        remedies += _reinstall_wheels(ctx, ["triton"], "put triton back at the version torch pins")
        remedies += conda_note(ctx)
    return remedies


# --- runtime-library-mismatch -------------------------------------------------------------


@check(
    "runtime-library-mismatch",
    severities=(Severity.WARNING,),
    family=FAMILY,
    summary="After `import torch`, a CUDA library was mapped from outside torch's wheels, "
    "or from another file than the loader model predicts.",
    label="CUDA libraries torch mapped",
    payload=RuntimeLibraryMismatch,
    requires=("runtime",),
    caused_by=("library-shadowed", "library-version-mismatch"),
)
def runtime_library_mismatch(ctx: Context) -> Outcome:
    runtime = _runtime(ctx)
    stage = runtime.stage("maps")
    if stage is None or stage.status != StageStatus.PASSED:
        return Skip("the mapped libraries were not read")
    if not runtime.mapped:
        return Skip("torch mapped no CUDA library")
    items = _outside(ctx, runtime)
    if not items:
        return []
    evidence = [
        f"{i.file_name}: mapped from {i.path}"
        + (f" (owned by {i.owner})" if i.owner else " (no installed wheel owns it)")
        + (f"; the loader model predicted {i.predicted}" if i.predicted else "")
        for i in items
    ]
    plural = "ies" if len(items) != 1 else "y"
    return [
        Finding(
            id="runtime-library-mismatch",
            severity=Severity.WARNING,
            title=f"{len(items)} CUDA librar{plural} mapped from outside torch's wheels",
            detail=(
                "torch imported, but the process mapped CUDA libraries that are not the ones "
                "torch's wheels ship: something loaded them first (LD_PRELOAD, a "
                "sitecustomize or .pth file, another package's import). Versions may differ "
                "from what torch was built with; failures show later, at the first kernel."
            ),
            evidence=tuple(evidence),
            data=RuntimeLibraryMismatch(libraries=tuple(items)),
        )
    ]


@remedy("runtime-library-mismatch")
def _runtime_library_mismatch(
    finding: Finding[RuntimeLibraryMismatch], ctx: Context
) -> list[Remedy]:
    items = finding.data.libraries
    environment = ctx.facts.environment
    remedies: list[Remedy] = []
    preload = environment.get("LD_PRELOAD", "").replace(":", " ").split()
    preloaded = [
        p for p in preload if any(i.path == p or p.endswith("/" + i.file_name) for i in items)
    ]
    if preloaded:
        remedies.append(drop_entries(ctx, "LD_PRELOAD", preloaded))
    directories = {i.path.rsplit("/", 1)[0] for i in items}
    on_path = [d for d in environment.get("LD_LIBRARY_PATH", "").split(":") if d in directories]
    if on_path:
        remedies.append(drop_entries(ctx, "LD_LIBRARY_PATH", on_path))
    if not remedies:
        # Loaded by code that runs first (sitecustomize, a .pth file, another import):
        # the loader's own log says who asked for each file.
        pattern = "|".join(re.escape(i.file_name) for i in items)
        remedies.append(
            Remedy(
                RemedyKind.SHELL,
                "see who loads these files first: the loader's log names the object that "
                "needed or opened each",
                f'LD_DEBUG=files {shlex.quote(ctx.python)} -c "import torch" 2>&1 | grep -E '
                + shlex.quote(f"file=[^ ]*({pattern}) .*(needed|loaded) by")
                + "\n",
            )
        )
    return remedies
