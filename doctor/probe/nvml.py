"""NVML facts from the driver child's NVML report (doctor/probe/driver.py runs it)."""

from __future__ import annotations

from typing import Any

from doctor.facts.machine import DeviceNodeAccess, GpuFacts, NvmlFacts, P2PLink

__all__ = ["nvml_from_report"]


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
                fabric_state=entry.get("fabric_state"),
                fabric_error=entry.get("fabric_error"),
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
        device_access=tuple(
            DeviceNodeAccess(
                path=str(node["path"]), error=node.get("error"), message=node.get("message")
            )
            for node in data.get("device_access", ())
        ),
        p2p=tuple(
            P2PLink(int(link[0]), int(link[1]), str(link[2]), *link[3:4])
            for link in data.get("p2p", ())
        ),
    )
