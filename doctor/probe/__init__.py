"""Probes gather facts. Each probe records its own failure instead of raising."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from doctor.facts import Facts, ProbeFailure
from doctor.probe.interpreter import probe_interpreter
from doctor.probe.project import locate_project, probe_project
from doctor.probe.target import Target

__all__ = ["ProbeOptions", "gather"]


@dataclass(frozen=True)
class ProbeOptions:
    target: Target
    project: str | None = None
    cwd: Path = Path(".")
    timeout: float = 60.0
    load_libraries: bool = True  # run the contained CUDA library load probe (--no-load)


def gather(options: ProbeOptions) -> Facts:
    """Run every probe and assemble one snapshot of facts."""
    failures: list[ProbeFailure] = []
    from doctor.probe.machine import MachineProbe

    machine_probe = MachineProbe(timeout=options.timeout)  # runs while the next probe does
    inside = probe_interpreter(options.target.python, timeout=options.timeout)
    failures.extend(inside.failures)
    machine_probe.torch_found(inside.torch)  # torch's GPU code is read while others probe

    project = None
    prefix = inside.interpreter.prefix if inside.interpreter else None
    located = locate_project(options.project, prefix, options.cwd)
    if located is not None:
        root, found_by = located
        if root.is_dir():
            project = probe_project(root, found_by)
            for error in (project.pyproject_error, project.lock_error):
                if error is not None:
                    failures.append(ProbeFailure("project", error))
        else:
            failures.append(ProbeFailure("project", f"{root}: no such directory"))

    from doctor.probe.libraries import probe_libraries

    libraries, library_failures = probe_libraries(
        options.target.python,
        inside.torch,
        inside.interpreter,
        inside.distributions,
        inside.environment,
        timeout=options.timeout,
        load=options.load_libraries,
    )
    failures.extend(library_failures)

    machine = machine_probe.finish(inside.torch)
    if machine.nvml is not None and machine.nvml.probe_error is not None:
        failures.append(ProbeFailure("nvml", machine.nvml.probe_error))

    return Facts(
        interpreter=inside.interpreter,
        platform=inside.platform,
        distributions=inside.distributions,
        torch=inside.torch,
        project=project,
        environment=inside.environment,
        libraries=libraries,
        machine=machine,
        failures=tuple(failures),
    )
