"""What a check can require of the context, and the reason it is skipped without it.

A check lists these names in ``requires=``; the runner skips it with the first reason
that applies, so no check re-tests whether torch is installed or the driver answers.
"""

from __future__ import annotations

from typing import Callable

from doctor.derive import Context, Workflow
from doctor.facts.machine import NvmlStatus

__all__ = ["NEEDS"]

# NVML codes that mean "there is no usable driver here" rather than "the driver is broken".
DRIVER_ABSENT = (NvmlStatus.LIBRARY_NOT_FOUND, NvmlStatus.DRIVER_NOT_LOADED)


def _interpreter(ctx: Context) -> str | None:
    return (
        None
        if ctx.facts.interpreter is not None
        else "the inspected interpreter could not be probed"
    )


def _torch(ctx: Context) -> str | None:
    return None if ctx.torch is not None else "torch is not installed"


def _torch_metadata(ctx: Context) -> str | None:
    if ctx.torch is not None and ctx.torch.error is not None:
        return f"torch's metadata cannot be used: {ctx.torch.error}"
    return None


def _expectations(ctx: Context) -> str | None:
    return None if ctx.expected is not None else "torch's requirements are unknown"


def _cuda_build(ctx: Context) -> str | None:
    build = ctx.facts.torch
    if build is None:
        return "torch's build is unknown"
    return None if build.is_cuda_build else "torch is a CPU-only build"


def _torch_cuda_version(ctx: Context) -> str | None:
    build = ctx.facts.torch
    return None if build is not None and build.cuda else "torch is not a CUDA build"


def _machine(ctx: Context) -> str | None:
    return None if ctx.facts.machine is not None else "the machine was not probed"


def _driver(ctx: Context) -> str | None:
    machine = ctx.facts.machine
    if machine is not None and machine.nvml is not None and machine.nvml.ok:
        return None
    return "no NVIDIA driver answers"


def _gpu(ctx: Context) -> str | None:
    machine = ctx.facts.machine
    return None if machine is not None and machine.gpus else "no GPU is known"


def _gpu_present(ctx: Context) -> str | None:
    machine = ctx.facts.machine
    return None if machine is not None and machine.gpu_present else "no GPU is known"


def _libraries(ctx: Context) -> str | None:
    if ctx.facts.libraries is not None:
        return None
    failure = ctx.facts.failure("libraries")
    return failure.reason if failure else "torch's libraries could not be inspected"


def _load_probe(ctx: Context) -> str | None:
    libraries = ctx.facts.libraries
    probe = libraries.load_probe if libraries is not None else None
    if probe is None or not probe.ran:
        skipped = f" ({probe.skipped_reason})" if probe is not None and probe.skipped_reason else ""
        return "the load probe did not run" + skipped
    if probe.error and libraries is not None and not libraries.loads:
        return probe.error
    return None


def _project(ctx: Context) -> str | None:
    project = ctx.facts.project
    if project is None or project.pyproject_path is None:
        return "no uv project found"
    if project.pyproject_error is not None:
        return "pyproject.toml could not be read"
    return None


def _uv_project(ctx: Context) -> str | None:
    """The project must be the one that manages the inspected venv: a checkout found from
    the working directory says nothing about a venv elsewhere."""
    if ctx.workflow is Workflow.UV_PROJECT:
        return None
    project = ctx.facts.project
    where = f" at {project.root}" if project is not None else ""
    return f"the uv project{where} does not manage this environment"


def _lock(ctx: Context) -> str | None:
    project = ctx.facts.project
    if project is None or project.lock_path is None:
        return "no uv.lock found"
    if project.lock_error is not None:
        return f"uv.lock could not be read: {project.lock_error}"
    return None


def _linux(ctx: Context) -> str | None:
    system = ctx.marker_environment.get("platform_system", "Linux")
    return None if system == "Linux" else "judged on Linux only"


def _runtime(ctx: Context) -> str | None:
    runtime = ctx.facts.runtime
    if runtime is None:
        return "torch was not imported (run again with --deep to import it)"
    return None if runtime.ran else f"the runtime probe could not run: {runtime.error}"


NEEDS: dict[str, Callable[[Context], str | None]] = {
    "interpreter": _interpreter,
    "torch": _torch,
    "torch-metadata": _torch_metadata,
    "expectations": _expectations,
    "cuda-build": _cuda_build,
    "torch-cuda-version": _torch_cuda_version,
    "machine": _machine,
    "driver": _driver,
    "gpu": _gpu,
    "gpu-present": _gpu_present,
    "libraries": _libraries,
    "load-probe": _load_probe,
    "project": _project,
    "uv-project": _uv_project,
    "lock": _lock,
    "linux": _linux,
    "runtime": _runtime,
}
