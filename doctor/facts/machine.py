"""Facts about the machine: the NVIDIA driver, its GPUs and the device environment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MachineFacts:
    """Filled in by the driver probes."""
