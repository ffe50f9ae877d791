"""NVML and cuInit facts from one contained process (doctor/probe/driver_child.py).

The child runs with the doctor's interpreter and inherits the environment as it is
(LD_LIBRARY_PATH included), so it loads the libnvidia-ml.so.1 and libcuda.so.1 that any
program started from this shell would load. It reports NVML first, then cuInit, one line
each: a crash or hang in cuInit leaves the NVML facts; when NVML itself crashes or hangs,
cuInit is asked again in a process of its own. When NVML failed, a last line says how each
/dev/nvidia* node opens (after cuInit's: opening a node can take long).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.probe.contained import Contained, ContainedResult
from doctor.probe.text import clean_tree

if TYPE_CHECKING:
    from doctor.facts.machine import CudaDriverFacts, NvmlFacts

__all__ = ["DriverProbe"]

CHILD_SOURCE = Path(__file__).with_name("driver_child.py")


def _start(stages: list[str], timeout: float, env: Mapping[str, str]) -> Contained:
    # The doctor's own interpreter and sys.path settings (PYTHONPATH, user site) find
    # pynvml as they found the doctor; cwd "/" keeps the caller's directory off sys.path;
    # -B: no bytecode.
    source = CHILD_SOURCE.read_text(encoding="utf-8")
    return Contained(
        [sys.executable, "-B", "-c", source, *stages], timeout=timeout, env=env, cwd="/"
    )


def _reports(run: ContainedResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in run.stdout.splitlines():
        try:
            event = json.loads(line)
            if isinstance(event, dict) and "stage" in event:
                # GPU names and driver strings are the driver's bytes: cleaned before use.
                out[str(event["stage"])] = clean_tree(event.get("report"))
        except (ValueError, RecursionError):
            # Not a line of the child's (the driver printed it), or JSON nested deeper than
            # the parser goes (``[[[[…`` from a library's constructor): skipped.
            continue
    return out


class DriverProbe:
    """The driver child, started at once; ``finish`` turns its lines into facts."""

    def __init__(self, timeout: float, env: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._env = dict(env)
        self._child = _start(["nvml", "cuda"], timeout, self._env)
        self._facts: tuple[NvmlFacts, CudaDriverFacts] | None = None

    def kill(self) -> None:
        self._child.kill()

    def running(self) -> bool:
        return self._facts is None and self._child.running()

    def finish(self) -> tuple[NvmlFacts, CudaDriverFacts]:
        """The driver facts (collected once; later calls return the same)."""
        if self._facts is None:
            self._facts = self._collect()
        return self._facts

    def _collect(self) -> tuple[NvmlFacts, CudaDriverFacts]:
        from doctor.facts.machine import CudaDriverFacts, NvmlFacts, NvmlStatus
        from doctor.probe.cuda_driver import cuda_driver_from_report
        from doctor.probe.nvml import nvml_from_report

        run = self._child.wait()
        reports = _reports(run)
        if "nvml" in reports:
            if isinstance(reports["nvml"], dict) and isinstance(reports.get("nodes"), list):
                reports["nvml"]["device_access"] = reports["nodes"]
            try:
                nvml = nvml_from_report(reports["nvml"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                nvml = NvmlFacts(
                    status=NvmlStatus.PROBE_FAILED,
                    probe_error=f"the NVML probe's report is unreadable: {exc}",
                )
        else:
            failure = run.describe_failure() if not run.ok else "printed no report"
            nvml = NvmlFacts(
                status=NvmlStatus.PROBE_FAILED, probe_error=f"the NVML probe {failure}"
            )
        if "cuda" not in reports and "nvml" not in reports:
            # NVML crashed or hung first: cuInit gets a process of its own.
            run = _start(["cuda"], self._timeout, self._env).wait()
            reports = _reports(run)
        if "cuda" in reports:
            try:
                cuda = cuda_driver_from_report(reports["cuda"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                cuda = CudaDriverFacts(
                    loaded=False,
                    probe_error=f"the CUDA driver probe's report is unreadable: {exc}",
                )
        elif not run.ok:
            # A crash inside cuInit is itself a fact about the driver, not a doctor failure.
            cuda = CudaDriverFacts(loaded=True, probe_error=f"cuInit {run.describe_failure()}")
        else:
            cuda = CudaDriverFacts(
                loaded=False, probe_error="the CUDA driver probe printed no report"
            )
        return nvml, cuda
