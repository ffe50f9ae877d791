"""Facts from the runtime probe (``check --deep``): torch imported and run in a contained child.

Each stage says what it did, how it ended and what it saw, verbatim. A stage that did not
run says why (``skipped`` with a reason), so a report on a machine without a GPU says which
stages ran on the CPU and which were not exercised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MappedLibrary", "RuntimeDevice", "RuntimeFacts", "RuntimeStage", "StageStatus"]


class StageStatus:
    """How a stage ended (the values are data, shown and schema'd as they are)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed out"
    CRASHED = "crashed"


@dataclass(frozen=True)
class RuntimeStage:
    """One stage of the runtime probe."""

    name: str  # "import", "build", "maps", "cpu", "gpu:0", "nccl", "compile"
    title: str  # what it does, in words: "import torch"
    status: str  # a StageStatus value
    seconds: float = 0.0
    ran_on: str | None = None  # "cpu", "cuda:0"; None when it touched no device or did not run
    reason: str | None = None  # why skipped, or how it timed out or crashed
    error: str | None = None  # the exception, verbatim: "ImportError: libcudnn.so.9: ..."
    traceback_tail: tuple[str, ...] = ()  # the last frames, as Python prints them
    warnings: tuple[str, ...] = ()  # every warning torch emitted in this stage, verbatim
    stderr_tail: tuple[str, ...] = ()  # the child's stderr when this stage failed or hung
    signal: str | None = None  # "SIGSEGV" when the child died in this stage
    evidence: dict[str, Any] = field(default_factory=dict)  # what it measured (JSON values)


@dataclass(frozen=True)
class RuntimeDevice:
    """A GPU as torch itself reports it."""

    index: int
    name: str
    capability: str  # "9.0"
    memory_bytes: int
    bf16: bool


@dataclass(frozen=True)
class MappedLibrary:
    """A CUDA library in the child's /proc/self/maps after importing torch."""

    file_name: str  # "libcudnn.so.9"
    path: str  # symlink-resolved
    owner: str | None = None  # the installed distribution whose RECORD lists it


@dataclass(frozen=True)
class RuntimeFacts:
    """What ``import torch`` and a few small computations did in a contained child."""

    ran: bool
    skipped_reason: str | None = None
    seconds: float = 0.0
    stage_timeout: float = 0.0  # each stage's limit (--timeout)
    total_timeout: float = 0.0
    torch_version: str | None = None  # torch.__version__ as imported
    torch_file: str | None = None
    cuda_version: str | None = None  # torch.version.cuda
    cuda_available: bool | None = None  # torch.cuda.is_available(); None: not asked
    device_count: int = 0
    devices: tuple[RuntimeDevice, ...] = ()
    nccl_version: str | None = None
    mapped: tuple[MappedLibrary, ...] = ()
    stages: tuple[RuntimeStage, ...] = ()
    error: str | None = None  # the probe itself could not run (no interpreter, bad output)

    def stage(self, name: str) -> RuntimeStage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning of every stage, in order, without repeats."""
        seen: dict[str, None] = {}
        for stage in self.stages:
            for text in stage.warnings:
                seen.setdefault(text, None)
        return tuple(seen)
