"""Probes gather facts. Each probe records its own failure instead of raising.

Importing this package is cheap (it imports no facts, checks or libraries), so the CLI
can start the probe processes (doctor/probe/start.py) before its heavy imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from doctor.facts import Facts, TorchBuildFacts
    from doctor.probe.machine import MachineProbe
    from doctor.probe.start import StartedProbes
    from doctor.probe.target import Target

__all__ = ["ProbeOptions", "gather"]


class ProbeOptions(NamedTuple):
    # Not a dataclass: this package is imported before the probes start.
    target: Target
    project: str | None = None
    cwd: Path = Path(".")
    timeout: float = 60.0
    load_libraries: bool = True  # run the contained CUDA library load probe (--no-load)
    started: StartedProbes | None = None  # the probe processes, when already started
    # Work for this process while it waits for the library load probe (e.g. importing
    # the renderer): that wait is the run's longest idle stretch.
    while_loading: Callable[[], object] | None = None


def gather(options: ProbeOptions) -> Facts:
    """Run every probe and assemble one snapshot of facts."""
    from doctor.probe.start import start_probes

    started = options.started
    if started is None:
        started = start_probes(
            options.target.python, timeout=options.timeout, load=options.load_libraries
        )
    try:
        return _gather(options, started)
    finally:
        started.kill()  # only processes an error left running: the others were collected


def _gather(options: ProbeOptions, started: StartedProbes) -> Facts:
    from doctor.facts import Facts, ProbeFailure
    from doctor.probe.installer import probe_installers
    from doctor.probe.interpreter import finish_interpreter_probe
    from doctor.probe.libraries import probe_libraries
    from doctor.probe.machine import MachineProbe
    from doctor.probe.project import locate_project, probe_project
    from doctor.probe.toolchain import probe_toolchain

    failures: list[ProbeFailure] = []
    machine_probe = MachineProbe(timeout=options.timeout, driver=started.driver)
    inside = finish_interpreter_probe(options.target.python, started.inside)
    failures.extend(inside.failures)

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

    libraries, library_failures = probe_libraries(
        options.target.python,
        inside.torch,
        inside.interpreter,
        inside.distributions,
        inside.environment,
        timeout=options.timeout,
        load=options.load_libraries,
        shared_libraries=inside.shared_libraries,
        session=started.load,
        # torch's GPU code is read while the load process finishes, not during the ELF
        # walk the load process waits for (both need this process's CPU).
        while_loading=lambda: _while_loading(machine_probe, inside.torch, options),
    )
    failures.extend(library_failures)

    machine = machine_probe.finish(inside.torch)
    if machine.nvml is not None and machine.nvml.probe_error is not None:
        failures.append(ProbeFailure("nvml", machine.nvml.probe_error))
    try:
        toolchain = probe_toolchain(
            inside.distributions, gpu_known=bool(machine.gpus), timeout=options.timeout
        )
    except Exception as exc:  # the report goes on without this probe
        toolchain = None
        failures.append(ProbeFailure("toolchain", f"internal error: {type(exc).__name__}: {exc}"))

    return Facts(
        interpreter=inside.interpreter,
        platform=inside.platform,
        distributions=inside.distributions,
        torch=inside.torch,
        project=project,
        environment=inside.environment,
        libraries=libraries,
        machine=machine,
        toolchain=toolchain,
        failures=tuple(failures),
        installers=probe_installers(inside.interpreter),
    )


def _while_loading(
    machine_probe: MachineProbe, torch: TorchBuildFacts | None, options: ProbeOptions
) -> None:
    machine_probe.torch_found(torch)  # torch's GPU code, read in a thread meanwhile
    if options.while_loading is not None:
        options.while_loading()
