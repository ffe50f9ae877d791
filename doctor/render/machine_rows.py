"""Header rows about the driver and the GPUs, shared by the text renderers."""

from __future__ import annotations

from rich.text import Text

from doctor.checks.cuda_compat import cuda_int_text, gpu_covered
from doctor.facts import Facts
from doctor.facts.machine import NvmlStatus

__all__ = ["machine_rows"]


def machine_rows(facts: Facts) -> list[tuple[str, Text]]:
    """("Driver", ...) and one ("GPU n", ...) row per GPU; nothing if the machine was not probed."""
    machine = facts.machine
    if machine is None:
        return []
    rows: list[tuple[str, Text]] = []
    nvml = machine.nvml
    if nvml is not None and nvml.status == NvmlStatus.OK:
        line = Text(nvml.driver_version or "unknown version")
        if machine.driver_cuda_version:
            line.append(f"  supports CUDA {cuda_int_text(machine.driver_cuda_version)}")
        rows.append(("Driver", line))
    else:
        why = (
            nvml.error_text if nvml is not None and nvml.error_text else "no NVIDIA driver answers"
        )
        rows.append(("Driver", Text(f"none: {why}", style="yellow")))
    archs = machine.torch_archs
    cuda_build = facts.torch is not None and facts.torch.is_cuda_build
    for gpu in machine.gpus:
        line = Text(gpu.name)
        if gpu.cc_text:
            line.append(f"  compute capability {gpu.cc_text} ({gpu.sm})")
        covered = gpu_covered(gpu, archs) if cuda_build else None
        if covered is True:
            line.append("  covered by this torch build", style="green")
        elif covered is False:
            line.append("  NOT covered by this torch build", style="bold red")
        if gpu.mig_enabled:
            line.append("  MIG", style="dim")
        rows.append((f"GPU {gpu.index}", line))
    return rows
