"""The runtime section's rows (``check --deep``), shared by the text renderers.

Formatting only: each stage's status, time and what it saw, as the probe recorded them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doctor.facts.runtime import RuntimeFacts, RuntimeStage, StageStatus

__all__ = ["RuntimeRow", "runtime_heading", "runtime_rows"]

MARKS = {
    StageStatus.PASSED: "✓",
    StageStatus.FAILED: "✗",
    StageStatus.SKIPPED: "-",
    StageStatus.TIMED_OUT: "⧗",
    StageStatus.CRASHED: "✗",
}


@dataclass(frozen=True)
class RuntimeRow:
    mark: str
    status: str  # a StageStatus value
    title: str
    seconds: str  # "1.8 s", "" when it did not run
    note: str  # what it saw, or why it did not run
    warnings: tuple[str, ...]
    stage: RuntimeStage


def runtime_heading(runtime: RuntimeFacts) -> str:
    if not runtime.ran:
        return f"Runtime: not run ({runtime.error or runtime.skipped_reason})"
    return (
        f"Runtime (torch imported in a contained process, {runtime.seconds:.1f} s; "
        f"{runtime.stage_timeout:g} s per stage)"
    )


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _passed_note(stage: RuntimeStage, runtime: RuntimeFacts) -> str:
    evidence: dict[str, Any] = stage.evidence
    if stage.name == "import":
        return f"torch {evidence.get('version')}"
    if stage.name == "build":
        cuda = runtime.cuda_version or "none (CPU-only build)"
        devices = ", ".join(f"{d.name} ({d.capability})" for d in runtime.devices)
        return (
            f"CUDA {cuda}, is_available() {runtime.cuda_available}, "
            f"{runtime.device_count} GPU{'s' if runtime.device_count != 1 else ''}"
            + (f": {devices}" if devices else "")
        )
    if stage.name == "maps":
        mapped = f"{len(runtime.mapped)} CUDA libraries mapped"
        imported = next((s for s in runtime.stages if s.name == "import"), None)
        if imported is not None and imported.status != StageStatus.PASSED:
            # Read after the import failed: what it got to load, not a working torch.
            return f"{mapped} before import torch failed"
        return mapped
    if stage.name == "cpu":
        return "ran on the CPU"
    if stage.name.startswith("gpu:"):
        bf16 = "bf16" if "bf16_max_error" in evidence else "no bf16 (not supported)"
        return f"ran on {stage.ran_on}: fp32 matmul, {bf16}, conv match the CPU"
    if stage.name == "nccl":
        note = f"NCCL {runtime.nccl_version}"
        if evidence.get("all_reduce"):
            note += f"; all-reduce {evidence['all_reduce']}"
        return note
    if stage.name == "compile":
        return f"ran on {stage.ran_on} ({evidence.get('backend')})"
    return ""


def _note(stage: RuntimeStage, runtime: RuntimeFacts) -> str:
    if stage.status == StageStatus.PASSED:
        return _passed_note(stage, runtime)
    if stage.status == StageStatus.FAILED:
        return _first_line(stage.error) or stage.reason or ""
    return stage.reason or ""


def runtime_rows(runtime: RuntimeFacts) -> list[RuntimeRow]:
    rows = []
    for stage in runtime.stages:
        ran = stage.status != StageStatus.SKIPPED
        rows.append(
            RuntimeRow(
                mark=MARKS.get(stage.status, "?"),
                status=stage.status,
                title=stage.title,
                seconds=f"{stage.seconds:.1f} s" if ran else "",
                note=_note(stage, runtime),
                warnings=stage.warnings,
                stage=stage,
            )
        )
    return rows
