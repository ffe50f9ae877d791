"""CUDA driver facts from the driver child's cuInit report (doctor/probe/driver.py runs it)."""

from __future__ import annotations

from typing import Any

from doctor.facts.machine import CudaDriverFacts

__all__ = ["cuda_driver_from_report"]


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
