"""Facts about the CUDA shared libraries torch loads (static ELF view and real loads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LibrariesFacts:
    """Filled in by the library probes."""
