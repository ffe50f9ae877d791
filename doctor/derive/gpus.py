"""Which GPUs CUDA will expose, and whether the torch build carries code for each."""

from __future__ import annotations

from doctor.facts.machine import GpuFacts, VisibleDevicesFacts, VisibleEntry

__all__ = ["fabric_unready", "hidden_by", "named_gpu", "visible_gpus"]

# NVML's fabric registration states before it completes (doctor/probe/driver_child.py).
FABRIC_PENDING = ("not-started", "in-progress")


def _matches(entry_text: str, gpu: GpuFacts) -> bool:
    return gpu.uuid is not None and gpu.uuid.startswith(entry_text)


def named_gpu(entry: VisibleEntry, gpus: tuple[GpuFacts, ...]) -> GpuFacts | None:
    """The GPU one CUDA_VISIBLE_DEVICES entry names here, or None (CUDA stops there)."""
    if entry.kind == "index" and entry.index is not None and entry.index < len(gpus):
        return gpus[entry.index]
    if entry.kind in ("gpu-uuid", "mig-uuid"):
        found = [g for g in gpus if _matches(entry.text, g)]
        if entry.kind == "mig-uuid" and not found:
            # MIG device UUIDs are not the parent GPU's: NVML's GPU list cannot refute them.
            found = [g for g in gpus if g.mig_enabled]
        return found[0] if found else None
    return None


def visible_gpus(
    cvd: VisibleDevicesFacts | None, gpus: tuple[GpuFacts, ...]
) -> tuple[GpuFacts, ...]:
    """The GPUs CUDA exposes under CUDA_VISIBLE_DEVICES (it stops at the first bad entry)."""
    if cvd is None:
        return gpus
    visible: list[GpuFacts] = []
    for entry in cvd.honoured:
        gpu = named_gpu(entry, gpus)
        if gpu is None:
            break
        visible.append(gpu)
    return tuple(visible)


def hidden_by(cvd: VisibleDevicesFacts | None, gpus: tuple[GpuFacts, ...]) -> bool:
    """CUDA_VISIBLE_DEVICES leaves CUDA none of the GPUs that are here."""
    if cvd is None or not gpus:
        return False
    return cvd.hides_all or not visible_gpus(cvd, gpus)


def fabric_unready(gpu: GpuFacts) -> bool:
    """The GPU's NVSwitch fabric registration has not completed, or completed with an
    error: CUDA cannot start on it (Error 802)."""
    return gpu.fabric_state in FABRIC_PENDING or bool(gpu.fabric_error)
