"""Findings: what a check concluded, how bad it is, and what to do about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "Remedy", "RemedyKind", "Severity"]


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 2, "warning": 1, "info": 0}[self.value]


class RemedyKind(str, enum.Enum):
    TOML = "toml"  # a block to add to pyproject.toml
    SHELL = "shell"  # commands to run
    ENV = "env"  # an environment variable to change
    TEXT = "text"  # advice


@dataclass(frozen=True)
class Remedy:
    """One way to fix a finding: a TOML block, shell commands, a variable or advice."""

    kind: RemedyKind
    summary: str
    text: str
    # For TOML remedies: the file the block belongs in (what `fix` edits).
    target: str | None = None


@dataclass(frozen=True)
class Finding:
    """What one check concluded: id, severity, explanation, evidence and remedies."""

    id: str
    severity: Severity
    title: str
    detail: str
    evidence: tuple[str, ...] = ()
    remedies: tuple[Remedy, ...] = ()
    # Machine-readable payload (JSON types) for remedies and for --format json readers.
    data: dict[str, Any] = field(default_factory=dict)
