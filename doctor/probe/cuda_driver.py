"""The CUDA driver API from a contained process: cuInit, cuDriverGetVersion, error texts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from doctor.facts.machine import CudaDriverFacts
from doctor.probe.contained import run_contained

__all__ = ["cuda_driver_from_report", "probe_cuda_driver"]

CHILD_SOURCE = Path(__file__).with_name("cuda_driver_child.py")


def probe_cuda_driver(timeout: float, env: Mapping[str, str] | None = None) -> CudaDriverFacts:
    source = CHILD_SOURCE.read_text(encoding="utf-8")
    # cwd "/" keeps the caller's directory off the child's sys.path; -B: no bytecode.
    run = run_contained(
        [sys.executable, "-B", "-c", source],
        timeout=timeout,
        env=os.environ if env is None else env,
        cwd="/",
    )
    if not run.ok:
        # A crash inside cuInit is itself a fact about the driver, not a doctor failure.
        return CudaDriverFacts(loaded=True, probe_error=f"cuInit {run.describe_failure()}")
    try:
        return cuda_driver_from_report(json.loads(run.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        return CudaDriverFacts(
            loaded=False, probe_error=f"the CUDA driver probe's report is unreadable: {exc}"
        )


def cuda_driver_from_report(data: dict[str, Any]) -> CudaDriverFacts:
    return CudaDriverFacts(
        loaded=bool(data["loaded"]),
        load_error=data.get("load_error"),
        library_path=data.get("library_path"),
        init_result=data.get("init_result"),
        error_name=data.get("error_name"),
        error_text=data.get("error_text"),
        driver_version=data.get("driver_version"),
        device_count=data.get("device_count"),
    )
