"""Start every contained probe process at once, before the doctor's heavy imports.

The inside probe, the library load probe and the driver probe need nothing from one
another to start: each finds what it needs in its own process. Started first, they run
side by side while the doctor imports its checks and renderers; ``gather`` collects them.
This module imports only the standard library and doctor/probe/contained.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.probe.contained import Contained, ContainedResult
from doctor.probe.driver import DriverProbe

if TYPE_CHECKING:
    from doctor.probe.runtime import RuntimeProbe

__all__ = ["LoadSession", "StartedProbes", "load_options", "start_inside", "start_probes"]

INSIDE_SOURCE = Path(__file__).with_name("inside.py")
LOAD_INSIDE_SOURCE = Path(__file__).with_name("load_inside.py")
RESULT_MARK = '{"event": "result"'  # load_inside.py's last line starts so


def start_inside(python: str, timeout: float) -> Contained:
    """The inside probe (doctor/probe/inside.py); interpreter.py reads its report."""
    source = INSIDE_SOURCE.read_text(encoding="utf-8")
    # -B: write no bytecode into the inspected environment.
    return Contained([python, "-B", "-c", source], timeout=timeout, env=os.environ)


def load_argv(python: str) -> list[str]:
    # Started as the inspected interpreter starts for a user (site, PYTHONPATH): its
    # sys.path is the one torch's preload searches. -B: no bytecode.
    return [python, "-B", "-c", LOAD_INSIDE_SOURCE.read_text(encoding="utf-8")]


def load_options(skip: Sequence[str] = (), skip_requested: Sequence[str] = ()) -> dict[str, Any]:
    """The load process's first line: what to skip (after a crash), cuDNN's load order."""
    from doctor.knowledge import load

    return {
        "skip": list(skip),
        "skip_requested": list(skip_requested),
        "cudnn_sublibraries": list(load("cuda_libraries")["cudnn"]["sublibraries"]),
    }


class LoadSession:
    """The contained load process (doctor/probe/load_inside.py), started first.

    It reads torch's flow itself and runs it at once; libraries.py sends the doctor's
    copy of the flow, then the part that needs the ELF view, and collects the result.
    """

    def __init__(self, python: str, timeout: float, *, send_options: bool = True) -> None:
        self.python = python
        self.timeout = timeout
        self.flow_plan: dict[str, Any] = {}
        self.child = Contained(load_argv(python), timeout=timeout, env=os.environ, open_stdin=True)
        self.started = self.child.started
        if send_options:
            self.send_options()

    def send_options(self) -> None:
        """The first line (the process waits for it once its interpreter has started)."""
        self.child.send(json.dumps(load_options()) + "\n")  # nothing to skip yet

    def send_flow(self, flow_plan: dict[str, Any]) -> None:
        """The doctor's copy of torch's flow (run only if the process cannot read torch's)."""
        self.flow_plan = flow_plan
        self.child.send(json.dumps(flow_plan) + "\n")

    def send_rest(self, rest: Mapping[str, Any]) -> None:
        """The last line: what torch's libraries NEED and what to report."""
        self.child.send(json.dumps(rest) + "\n")

    def first_run(self) -> ContainedResult:
        run = self.child.read_to_end(lambda stdout: RESULT_MARK in stdout)
        return run._replace(argv=(self.python, "-B", "-c", "<load_inside.py>"))

    def kill(self) -> None:
        """Stop the process if it still runs (not needed, or an error in the doctor)."""
        self.child.kill()


class StartedProbes:
    """The probe processes of one run, started together."""

    def __init__(self, python: str, *, timeout: float, load: bool) -> None:
        self.python = python
        # The slowest first: loading torch's CUDA libraries is the longest of them.
        self.load: LoadSession | None = (
            LoadSession(python, timeout, send_options=False) if load else None
        )
        self.inside = start_inside(python, timeout)
        self.driver = DriverProbe(timeout, os.environ)
        self.runtime: RuntimeProbe | None = None  # check --deep: started after the others
        # The options need the knowledge files read: done while the interpreters start.
        if self.load is not None:
            self.load.send_options()

    def waiting(self) -> list[str]:
        """What the run still waits for, in words (for the progress line)."""
        names = []
        if self.inside.running():
            names.append("the inspected interpreter")
        if self.load is not None and self.load.child.running():
            names.append("torch's CUDA libraries to load")
        if self.driver.running():
            names.append("the NVIDIA driver (NVML, cuInit)")
        if self.runtime is not None:
            names.extend(self.runtime.waiting())
        return names

    def kill(self) -> None:
        """Stop whatever still runs (after an error in the doctor: nothing is left behind)."""
        for child in (self.load, self.inside, self.driver, self.runtime):
            if child is not None:
                child.kill()


def start_probes(python: str, *, timeout: float, load: bool) -> StartedProbes:
    return StartedProbes(python, timeout=timeout, load=load)
