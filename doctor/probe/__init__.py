"""Probes gather facts. Each probe records its own failure instead of raising.

Importing this package is cheap (it imports no facts, checks or libraries), so the CLI
can start the probe processes (doctor/probe/start.py) before its heavy imports.

``gather`` is the one orchestrator: it owns the order and the overlap of the probes. The
contained processes (inside, load, driver) are started together by start.py; each probe
is then finished here in the order that keeps the default run near its floor: the inside
probe (everything else needs its facts), the project files, the library probe's start
(the ELF walk while the load process loads), torch's GPU code read in a thread while the
load process finishes, the library probe's finish, the machine, the toolchain, the stack
around torch, compiled extensions and the CUDA toolkit (whose tools ran meanwhile), and
last, with --deep only, the runtime child, which competes for the CPU with nothing then. Nothing
from outside (the CLI) runs inside a probe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from doctor.facts import (
        DistributionFacts,
        ExtensionsFacts,
        Facts,
        ProbeFailure,
        RuntimeFacts,
    )
    from doctor.probe.cuda_toolkit import CudaToolkitProbe
    from doctor.probe.interpreter import InterpreterProbe
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
    deep: bool = False  # check --deep: import torch and run stages in a contained child
    compile: bool = False  # --compile: the torch.compile stage under torchrun too


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
    from doctor.probe.libraries import LibraryProbe
    from doctor.probe.machine import MachineProbe
    from doctor.probe.project import locate_project, probe_project
    from doctor.probe.stack import probe_stack
    from doctor.probe.text import clean
    from doctor.probe.toolchain import probe_toolchain

    failures: list[ProbeFailure] = []
    machine_probe = MachineProbe(timeout=options.timeout, driver=started.driver)
    toolkit_probe = _start_toolkit_probe(options, failures)
    inside = finish_interpreter_probe(options.target.python, started.inside)
    failures.extend(inside.failures)

    project = None
    lock_graph = None
    uv_settings = None
    prefix = inside.interpreter.prefix if inside.interpreter else None
    located = locate_project(options.project, prefix, options.cwd)
    if located is not None:
        root, found_by = located
        if root.is_dir():
            project = probe_project(
                root, found_by, inside.environment.get("UV_PROJECT_ENVIRONMENT"), options.cwd
            )
            from doctor.probe.lock_graph import probe_lock_graph, probe_uv_settings

            if project.lock_path is not None and project.lock_error is None:
                lock_graph = probe_lock_graph(root)
            if project.pyproject_path is not None and project.pyproject_error is None:
                uv_settings = probe_uv_settings(Path(project.pyproject_path))
            for error in (project.pyproject_error, project.lock_error):
                if error is not None:
                    failures.append(ProbeFailure("project", error))
        else:
            failures.append(ProbeFailure("project", f"{root}: no such directory"))

    library_probe = LibraryProbe(
        options.target.python,
        inside.torch,
        inside.interpreter,
        inside.distributions,
        inside.environment,
        timeout=options.timeout,
        load=options.load_libraries,
        shared_libraries=inside.shared_libraries,
        session=started.load,
    )
    library_probe.start()
    # torch's GPU code is read (in a thread) while the load process finishes, not during
    # the ELF walk the load process waits for: both need this process's CPU.
    machine_probe.torch_found(inside.torch)
    libraries, library_failures = library_probe.finish()
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

    try:
        stack = probe_stack(
            torch=inside.torch,
            distributions=inside.distributions,
            triton_dir=toolchain.triton_dir if toolchain is not None else None,
            platform=inside.platform,
            environment=inside.environment,
            machine=machine,
            timeout=options.timeout,
        )
    except Exception as exc:  # the report goes on without this probe
        stack = None
        failures.append(ProbeFailure("stack", f"internal error: {type(exc).__name__}: {exc}"))

    extensions = _extension_facts(inside, bool(machine.gpus), options, failures)
    cuda_toolkit = None
    if toolkit_probe is not None:
        try:
            cuda_toolkit = toolkit_probe.finish()
        except Exception as exc:  # the report goes on without this probe
            failures.append(ProbeFailure("cuda-toolkit", f"internal error: {exc!r}"))

    node = None
    try:
        from doctor.probe.node import probe_node

        node = probe_node(distributions=inside.distributions, libraries=libraries)
    except Exception as exc:  # the report goes on without this probe
        failures.append(ProbeFailure("node", f"internal error: {type(exc).__name__}: {exc}"))

    runtime = None
    if options.deep:
        try:
            runtime = _deep(options, started, inside.distributions, inside.shared_libraries)
        except Exception as exc:  # the report goes on without this probe
            from doctor.facts import RuntimeFacts

            reason = f"internal error: {type(exc).__name__}: {exc}"
            failures.append(ProbeFailure("runtime", reason))
            runtime = RuntimeFacts(ran=False, error=clean(reason))

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
        stack=stack,
        extensions=extensions,
        cuda_toolkit=cuda_toolkit,
        runtime=runtime,
        lock_graph=lock_graph,
        uv_settings=uv_settings,
        node=node,
        installers=probe_installers(inside.interpreter),
        # Reasons quote files and stderr: safe text, like every fact from the environment.
        failures=tuple(ProbeFailure(f.probe, clean(f.reason)) for f in failures),
    )


def _deep(
    options: ProbeOptions,
    started: StartedProbes,
    distributions: tuple[DistributionFacts, ...],
    shared_libraries: Mapping[str, Sequence[str]],
) -> RuntimeFacts:
    """The runtime probe, after the others: it competes for the CPU with nothing then."""
    import os

    from doctor.probe.collective import torchrun_present
    from doctor.probe.libraries import record_owners
    from doctor.probe.runtime import RuntimeProbe

    skip = {}
    if torchrun_present() and not options.compile:
        # Every rank would compile cold at once (~10 s each on a CPU): asked for, not default.
        skip["compile"] = "under torchrun it runs only when asked (--compile)"
    started.runtime = RuntimeProbe(
        options.target.python, timeout=options.timeout, env=os.environ, skip=skip
    )
    return started.runtime.finish(record_owners(distributions, shared_libraries))


def _start_toolkit_probe(
    options: ProbeOptions, failures: list[ProbeFailure]
) -> CudaToolkitProbe | None:
    """The CUDA toolkit that would build an extension: its tools start running now."""
    from doctor.facts import ProbeFailure
    from doctor.probe.cuda_toolkit import CudaToolkitProbe

    try:
        return CudaToolkitProbe(timeout=options.timeout)
    except Exception as exc:  # the report goes on without this probe
        failures.append(ProbeFailure("cuda-toolkit", f"internal error: {exc!r}"))
        return None


def _extension_facts(
    inside: InterpreterProbe, gpus_known: bool, options: ProbeOptions, failures: list[ProbeFailure]
) -> ExtensionsFacts | None:
    """Compiled extensions' symbols against torch's exports."""
    from doctor.facts import ProbeFailure
    from doctor.probe.extensions import probe_extensions

    if inside.platform is not None and inside.platform.system != "Linux":
        return None  # ELF shared objects and glibc's loader: Linux only
    try:
        return probe_extensions(
            inside.distributions, inside.torch, read_gpu_code=gpus_known, timeout=options.timeout
        )
    except Exception as exc:  # the report goes on without this probe
        failures.append(ProbeFailure("extensions", f"internal error: {exc!r}"))
        return None
