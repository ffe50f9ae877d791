"""Header rows about the driver and the GPUs, shared by the text renderers."""

from __future__ import annotations

from rich.text import Text

from doctor.derive import Context
from doctor.facts.machine import NvmlStatus

__all__ = ["machine_rows"]


def machine_rows(ctx: Context) -> list[tuple[str, Text]]:
    """("Driver", ...) and one ("GPU n", ...) row per GPU; nothing if the machine was not probed."""
    machine = ctx.machine
    if machine is None:
        return []
    rows: list[tuple[str, Text]] = []
    nvml = machine.nvml
    if nvml is not None and nvml.status == NvmlStatus.OK:
        line = Text(nvml.driver_version or "unknown version")
        if ctx.driver_cuda_text:
            line.append(f"  supports CUDA {ctx.driver_cuda_text}")
        rows.append(("Driver", line))
    else:
        why = (
            nvml.error_text if nvml is not None and nvml.error_text else "no NVIDIA driver answers"
        )
        rows.append(("Driver", Text(f"none: {why}", style="yellow")))
    for coverage in ctx.coverage:
        gpu, covered = coverage.gpu, coverage.covered
        line = Text(gpu.name)
        if gpu.cc_text:
            line.append(f"  compute capability {gpu.cc_text} ({gpu.sm})")
        if covered is True:
            line.append("  covered by this torch build", style="green")
        elif covered is False:
            line.append("  NOT covered by this torch build", style="bold red")
        if gpu.mig_enabled:
            line.append("  MIG", style="dim")
        if coverage.fabric_unready:
            line.append(f"  NVSwitch fabric {gpu.fabric_state or 'error'}", style="bold red")
        rows.append((f"GPU {gpu.index}", line))
    stack = ctx.facts.stack
    if stack is not None and stack.jetson is not None:
        board = Text(stack.jetson.model or "NVIDIA Jetson")
        if stack.jetson.l4t_release:
            board.append(f"  L4T {stack.jetson.l4t_release}")
        rows.append(("Board", board))
    return rows
