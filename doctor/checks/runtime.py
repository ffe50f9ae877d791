"""What torch really did (``check --deep``): each runtime failure named, and tied to its cause.

A runtime failure that a static finding already explains (a missing wheel, a shadowed
library, no driver, a driver too old, a GPU the build does not cover) is reported as that
root's observed consequence: severity info, ``consequence_of`` naming the root, and the real
error text as evidence, so one cause stays one error. Otherwise it is a root of its own.
The candidate causes come from the error text (doctor/knowledge/signatures.toml, as
``explain`` reads it) and from each stage's usual causes, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from doctor.checks.registry import REGISTRY, Outcome, Skip, check
from doctor.facts import Facts
from doctor.facts.runtime import RuntimeFacts, RuntimeStage, StageStatus
from doctor.findings import Finding, Severity

__all__ = ["RUNTIME_IDS", "explained_by"]

RUNTIME_IDS = (
    "torch-import-failed",
    "cuda-unavailable",
    "gpu-kernel-failed",
    "nccl-failed",
    "torch-compile-failed",
    "runtime-library-mismatch",
)
# Each stage's usual static causes, tried after those the error text names.
USUAL_CAUSES = {
    "torch-import-failed": (
        "torch-not-installed",
        "missing-cuda-wheel",
        "cuda-wheel-files-missing",
        "missing-torch-dependency",
        "library-not-found",
        "library-shadowed",
        "library-load-failed",
    ),
    "cuda-unavailable": (
        "no-nvidia-driver",
        "nvml-driver-mismatch",
        "cuda-init-failed",
        "no-gpu-visible",
        "visible-devices-truncated",
        "driver-too-old",
        "library-shadowed",
    ),
    "gpu-kernel-failed": (
        "gpu-arch-unsupported",
        "driver-too-old",
        "library-shadowed",
        "library-version-mismatch",
    ),
    "nccl-failed": (
        "library-shadowed",
        "library-version-mismatch",
        "cuda-wheel-version-mismatch",
        "cuda-libs-in-loader-path",
    ),
    "torch-compile-failed": ("torch-compile-toolchain",),
    "runtime-library-mismatch": ("library-shadowed", "cuda-libs-in-loader-path"),
}
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-ml.so")  # from the driver, never from a wheel
FAILED = (StageStatus.FAILED, StageStatus.TIMED_OUT, StageStatus.CRASHED)


def _runtime(facts: Facts) -> RuntimeFacts | Skip:
    runtime = facts.runtime
    if runtime is None:
        return Skip("torch was not imported (check --deep runs it)")
    if not runtime.ran:
        return Skip(f"the runtime probe could not run: {runtime.error}")
    return runtime


def _failed_stage(facts: Facts, name: str) -> RuntimeStage | Outcome:
    """The stage when it failed, hung or crashed; else the check's outcome (skip or pass)."""
    runtime = _runtime(facts)
    if isinstance(runtime, Skip):
        return runtime
    stage = runtime.stage(name)
    if stage is None:
        return []
    if stage.status == StageStatus.SKIPPED:
        return Skip(stage.reason or "not run")
    return stage if stage.status in FAILED else []


def explained_by(finding_id: str, texts: Sequence[str]) -> list[str]:
    """The static findings that could explain this runtime failure, most specific first."""
    from doctor.explain import match_signatures  # doctor.explain imports the checks

    ids: list[str] = []
    for match in match_signatures("\n".join(t for t in texts if t)):
        ids += [i for i in match.signature.findings if i not in ids and i not in RUNTIME_IDS]
    ids += [i for i in USUAL_CAUSES[finding_id] if i not in ids]
    return ids


def _root(facts: Facts, candidates: Sequence[str]) -> str | None:
    """The first candidate whose static check fires here (checks are pure: safe to ask)."""
    for finding_id in candidates:
        spec = REGISTRY.get(finding_id)
        if spec is None or spec.family == "runtime":
            continue
        try:
            outcome = spec.function(facts)
        except Exception:  # that check's crash is reported by the runner
            continue
        if not isinstance(outcome, Skip) and outcome:
            return finding_id
    return None


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


def _finding(
    facts: Facts,
    finding_id: str,
    *,
    title: str,
    detail: str,
    evidence: Sequence[str],
    texts: Sequence[str],
    data: dict[str, Any],
    severity: Severity = Severity.ERROR,
) -> Finding:
    candidates = explained_by(finding_id, texts)
    root = _root(facts, candidates)
    if root is not None:
        title = f"{title} (observed consequence of {root})"
        detail = f"{detail} The static finding {root} explains it: fix that first."
        severity = Severity.INFO
    return Finding(
        id=finding_id,
        severity=severity,
        title=title,
        detail=detail,
        evidence=tuple(evidence),
        data={**data, "explained_by": candidates, "consequence_of": root},
    )


def _stage_data(stage: RuntimeStage) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "status": stage.status,
        "error": stage.error,
        "reason": stage.reason,
        "signal": stage.signal,
        "seconds": stage.seconds,
    }


@check(
    "torch-import-failed",
    family="runtime",
    summary="`import torch` failed, hung or crashed in a contained process (check --deep).",
    label="import torch works",
)
def torch_import_failed(facts: Facts) -> Outcome:
    runtime = _runtime(facts)
    if isinstance(runtime, Skip):
        return runtime
    stage = runtime.stage("import")
    if stage is None or stage.status not in FAILED:
        return []
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
    return [
        _finding(
            facts,
            "torch-import-failed",
            title=f"import torch {how}",
            detail=detail,
            evidence=_stage_evidence(stage),
            texts=[stage.error or "", *stage.stderr_tail],
            data=_stage_data(stage),
        )
    ]


@check(
    "cuda-unavailable",
    family="runtime",
    summary="A CUDA build of torch imported, but torch.cuda.is_available() is False.",
    label="torch.cuda.is_available()",
)
def cuda_unavailable(facts: Facts) -> Outcome:
    runtime = _runtime(facts)
    if isinstance(runtime, Skip):
        return runtime
    stage = runtime.stage("build")
    if stage is None or stage.status != StageStatus.PASSED:
        return Skip("torch did not import") if stage is not None else []
    if runtime.cuda_version is None:
        return Skip("a CPU-only build: CUDA is not expected")
    if runtime.cuda_available:
        return []
    return [
        _finding(
            facts,
            "cuda-unavailable",
            title="torch.cuda.is_available() is False",
            detail=(
                f"torch {runtime.torch_version} (CUDA {runtime.cuda_version}) imported, but "
                "it cannot use a GPU: every tensor stays on the CPU and `.cuda()` raises."
            ),
            evidence=[
                f"torch.cuda.is_available() returned False; device_count() {runtime.device_count}",
                *(f"torch warned: {w}" for w in stage.warnings),
            ],
            texts=stage.warnings,
            data={
                **_stage_data(stage),
                "warnings": list(stage.warnings),
                "torch_cuda": runtime.cuda_version,
            },
            severity=Severity.ERROR,
        )
    ]


@check(
    "gpu-kernel-failed",
    family="runtime",
    summary="A small matmul or conv failed, hung or gave a wrong result on a GPU.",
    label="GPU matmul and conv",
)
def gpu_kernel_failed(facts: Facts) -> Outcome:
    runtime = _runtime(facts)
    if isinstance(runtime, Skip):
        return runtime
    gpu_stages = [s for s in runtime.stages if s.name.startswith("gpu:")]
    if not gpu_stages:
        return Skip("no GPU stage ran (torch sees no GPU)")
    failed = [s for s in gpu_stages if s.status in FAILED]
    if not failed:
        return []
    evidence = [line for stage in failed for line in _stage_evidence(stage)]
    first = failed[0]
    return [
        _finding(
            facts,
            "gpu-kernel-failed",
            title=f"{len(failed)} of {len(gpu_stages)} GPU{'s' if len(gpu_stages) != 1 else ''} "
            f"failed a small matmul or conv ({first.error or first.status})",
            detail=(
                "torch sees the GPU but cannot run work on it: allocating, a small fp32 or "
                "bf16 matmul (cuBLAS), a small conv (cuDNN) or synchronizing failed, hung or "
                "disagreed with the CPU's result."
            ),
            evidence=evidence,
            texts=[s.error or "" for s in failed],
            data={**_stage_data(first), "gpus": [s.name for s in failed]},
        )
    ]


@check(
    "nccl-failed",
    family="runtime",
    summary="NCCL failed: its version could not be read, or an all-reduce over the GPUs failed.",
    label="NCCL",
)
def nccl_failed(facts: Facts) -> Outcome:
    stage = _failed_stage(facts, "nccl")
    if not isinstance(stage, RuntimeStage):
        return stage
    return [
        _finding(
            facts,
            "nccl-failed",
            title=f"NCCL {stage.status}: {stage.error or stage.reason}",
            detail=(
                "torch's NCCL did not work in a contained process: multi-GPU training "
                "(DistributedDataParallel, FSDP) will fail or hang at its first collective."
            ),
            evidence=_stage_evidence(stage),
            texts=[stage.error or ""],
            data=_stage_data(stage),
        )
    ]


@check(
    "torch-compile-failed",
    family="runtime",
    summary="torch.compile of a tiny function failed (inductor: triton on GPU, C++ on CPU).",
    label="torch.compile of a tiny function",
)
def torch_compile_failed(facts: Facts) -> Outcome:
    stage = _failed_stage(facts, "compile")
    if not isinstance(stage, RuntimeStage):
        return stage
    return [
        _finding(
            facts,
            "torch-compile-failed",
            title=f"torch.compile {stage.status}: {(stage.error or stage.reason or '')[:120]}",
            detail=(
                "torch works, but compiling a tiny function with torch.compile failed; "
                "eager code runs, compiled code will not."
            ),
            evidence=_stage_evidence(stage),
            texts=[stage.error or "", *stage.stderr_tail],
            data=_stage_data(stage),
            severity=Severity.WARNING,
        )
    ]


def _outside(facts: Facts, runtime: RuntimeFacts) -> list[dict[str, Any]]:
    libraries = facts.libraries
    items = []
    for mapped in runtime.mapped:
        if mapped.file_name.startswith(DRIVER_LIBRARIES):
            continue
        predicted = None
        if libraries is not None:
            row = libraries.library(mapped.file_name)
            if row is not None and row.resolved is not None:
                predicted = row.resolved.path
        torch_dir = facts.torch.package_dir if facts.torch is not None else None
        in_torch = torch_dir is not None and mapped.path.startswith(torch_dir.rstrip("/") + "/")
        unowned = mapped.owner is None and not in_torch
        differs = predicted is not None and predicted != mapped.path
        if unowned or differs:
            items.append(
                {
                    "file_name": mapped.file_name,
                    "path": mapped.path,
                    "owner": mapped.owner,
                    "predicted": predicted,
                }
            )
    return items


@check(
    "runtime-library-mismatch",
    family="runtime",
    summary="After `import torch`, a CUDA library was mapped from outside torch's wheels, "
    "or from another file than the loader model predicts.",
    label="CUDA libraries torch mapped",
)
def runtime_library_mismatch(facts: Facts) -> Outcome:
    runtime = _runtime(facts)
    if isinstance(runtime, Skip):
        return runtime
    stage = runtime.stage("maps")
    if stage is None or stage.status != StageStatus.PASSED:
        return Skip("the mapped libraries were not read")
    items = _outside(facts, runtime)
    if not items:
        return []
    evidence = [
        f"{i['file_name']}: mapped from {i['path']}"
        + (f" (owned by {i['owner']})" if i["owner"] else " (no installed wheel owns it)")
        + (f"; the loader model predicted {i['predicted']}" if i["predicted"] else "")
        for i in items
    ]
    return [
        _finding(
            facts,
            "runtime-library-mismatch",
            title=f"{len(items)} CUDA librar{'ies' if len(items) != 1 else 'y'} mapped from "
            "outside torch's wheels",
            detail=(
                "torch imported, but the process mapped CUDA libraries that are not the ones "
                "torch's wheels ship: something loaded them first (LD_PRELOAD, a "
                "sitecustomize or .pth file, another package's import). Versions may differ "
                "from what torch was built with; failures show later, at the first kernel."
            ),
            evidence=evidence,
            texts=[],
            data={"libraries": items},
            severity=Severity.WARNING,
        )
    ]
