"""NVML facts from a contained process running nvidia-ml-py with the doctor's interpreter.

The child inherits the environment as it is (LD_LIBRARY_PATH included), so it loads
the libnvidia-ml.so.1 that any program started from this shell would load.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from doctor.facts.machine import GpuFacts, NvmlFacts, NvmlStatus
from doctor.probe.contained import run_contained

__all__ = ["nvml_from_report", "probe_nvml"]

CHILD_SOURCE = Path(__file__).with_name("nvml_child.py")


def probe_nvml(timeout: float, env: Mapping[str, str] | None = None) -> NvmlFacts:
    source = CHILD_SOURCE.read_text(encoding="utf-8")
    # The doctor's own interpreter and sys.path settings (PYTHONPATH, user site) find
    # pynvml as they found the doctor; cwd "/" keeps the caller's directory off sys.path.
    run = run_contained(
        [sys.executable, "-B", "-c", source],
        timeout=timeout,
        env=os.environ if env is None else env,
        cwd="/",
    )
    if not run.ok:
        return NvmlFacts(
            status=NvmlStatus.PROBE_FAILED,
            probe_error=f"the NVML probe {run.describe_failure()}",
        )
    try:
        return nvml_from_report(json.loads(run.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        return NvmlFacts(
            status=NvmlStatus.PROBE_FAILED,
            probe_error=f"the NVML probe's report is unreadable: {exc}",
        )


def nvml_from_report(data: dict[str, Any]) -> NvmlFacts:
    gpus = []
    for entry in data.get("gpus", []):
        cc = entry.get("compute_capability")
        gpus.append(
            GpuFacts(
                index=int(entry["index"]),
                name=str(entry["name"]),
                compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
                memory_total_bytes=entry.get("memory_total_bytes"),
                mig_enabled=entry.get("mig_enabled"),
                mig_pending=entry.get("mig_pending"),
                uuid=entry.get("uuid"),
                pci_bus_id=entry.get("pci_bus_id"),
                errors=tuple(entry.get("errors", ())),
            )
        )
    return NvmlFacts(
        status=str(data["status"]),
        error_code=data.get("error_code"),
        error_text=data.get("error_text"),
        library_path=data.get("library_path"),
        driver_version=data.get("driver_version"),
        cuda_driver_version=data.get("cuda_driver_version"),
        gpus=tuple(gpus),
    )
