"""The facts: one typed, JSON-serialisable snapshot of what the probes found.

Checks read only this; nothing here does I/O. Every probe that fails records a
``ProbeFailure`` instead of raising, so a broken environment still yields facts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from doctor.facts.collective import CollectiveFacts
from doctor.facts.environment import (
    DistributionFacts,
    InterpreterFacts,
    NvidiaToolFacts,
    PlatformFacts,
    RecordFacts,
    ToolchainFacts,
    TorchBuildFacts,
)
from doctor.facts.extensions import CudaToolkitFacts, ExtensionsFacts
from doctor.facts.installer import InstallerFacts
from doctor.facts.libraries import LibrariesFacts
from doctor.facts.lock_graph import LockGraph
from doctor.facts.lock_metadata import LockMetadataFacts
from doctor.facts.machine import MachineFacts
from doctor.facts.node import NodeFacts
from doctor.facts.project import (
    IndexFacts,
    LockedDependency,
    LockedPackage,
    ProjectFacts,
)
from doctor.facts.runtime import RuntimeFacts
from doctor.facts.uv_settings import UvSettings

if TYPE_CHECKING:
    # Imported where a stack probe applies (doctor/probe/stack.py), not on every run.
    from doctor.facts.stack import StackFacts

__all__ = [
    "CollectiveFacts",
    "CudaToolkitFacts",
    "DistributionFacts",
    "ExtensionsFacts",
    "Facts",
    "IndexFacts",
    "InstallerFacts",
    "InterpreterFacts",
    "LibrariesFacts",
    "LockGraph",
    "LockMetadataFacts",
    "LockedDependency",
    "LockedPackage",
    "MachineFacts",
    "NodeFacts",
    "NvidiaToolFacts",
    "PlatformFacts",
    "ProbeFailure",
    "ProjectFacts",
    "RecordFacts",
    "RuntimeFacts",
    "ToolchainFacts",
    "TorchBuildFacts",
    "UvSettings",
    "to_jsonable",
]


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that could not do its work, and why (never a traceback)."""

    probe: str
    reason: str


@dataclass(frozen=True)
class Facts:
    """Everything torch-doctor knows about the inspected environment."""

    interpreter: InterpreterFacts | None = None
    platform: PlatformFacts | None = None
    distributions: tuple[DistributionFacts, ...] = ()
    torch: TorchBuildFacts | None = None
    project: ProjectFacts | None = None
    environment: dict[str, str] = field(default_factory=dict)
    libraries: LibrariesFacts | None = None
    machine: MachineFacts | None = None
    toolchain: ToolchainFacts | None = None
    stack: StackFacts | None = None
    runtime: RuntimeFacts | None = None  # check --deep only: torch imported and run
    extensions: ExtensionsFacts | None = None  # compiled extensions of torch
    cuda_toolkit: CudaToolkitFacts | None = None  # the toolkit that would build one
    # Only `torch-doctor lock` fills this (it reads the index); the default run never does.
    lock_metadata: LockMetadataFacts | None = None
    # uv.lock's whole graph and the sync settings (what the next `uv sync` installs).
    lock_graph: LockGraph | None = None
    # pyproject.toml's uv settings that decide where torch comes from.
    uv_settings: UvSettings | None = None
    node: NodeFacts | None = None  # identity and multi-GPU facts of this node
    collective: CollectiveFacts | None = None  # check --deep under torchrun
    failures: tuple[ProbeFailure, ...] = ()
    installers: InstallerFacts | None = None

    def distribution(self, name: str) -> DistributionFacts | None:
        """The installed distribution that wins on sys.path, by normalised name."""
        wanted = _normalise(name)
        for dist in self.distributions:
            if dist.name == wanted and not dist.shadowed:
                return dist
        return None

    def distributions_named(self, name: str) -> list[DistributionFacts]:
        """Every copy of a distribution, the winning one first."""
        wanted = _normalise(name)
        return [d for d in self.distributions if d.name == wanted]

    def failure(self, probe: str) -> ProbeFailure | None:
        for failure in self.failures:
            if failure.probe == probe:
                return failure
        return None


def _normalise(name: str) -> str:
    # PEP 503 normalisation; packaging.utils.canonicalize_name does the same but the
    # facts stay importable without third-party modules.
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and dicts to plain JSON types."""
    if value is None or isinstance(value, (str, int, float)):
        return value  # most values: answered before the dataclass test
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value
