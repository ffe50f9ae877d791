"""Findings: what a check concluded, how bad it is, and what to do about it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar, Union

if TYPE_CHECKING:
    from doctor.derive import Context

__all__ = [
    "CheckResult",
    "CheckSpec",
    "CheckStatus",
    "Finding",
    "Outcome",
    "Payload",
    "Remedy",
    "RemedyKind",
    "Severity",
    "Skip",
    "docs_url",
]


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

    @property
    def is_code(self) -> bool:
        """Code is shown verbatim: never wrapped, never cut (it must paste)."""
        return self is not RemedyKind.TEXT


@dataclass(frozen=True)
class Remedy:
    """One way to fix a finding: a TOML block, shell commands, a variable or advice."""

    kind: RemedyKind
    summary: str
    text: str
    # For TOML remedies: the file the block belongs in (what `fix` edits).
    target: str | None = None


class Payload:
    """The typed, machine-readable part of a finding: one frozen dataclass per finding id.

    Checks write it, the finding's remedy reads it, ``--format json`` shows it under
    ``data`` (docs/finding-data.schema.json has one schema per id, generated from these
    classes). ``subjects`` names what the finding is about, so that the runner can relate
    a consequence to its root cause (see ``caused_by`` in doctor/checks/registry.py).
    """

    def subjects(self) -> frozenset[str]:
        """Package names, sonames or other keys this finding concerns (none by default)."""
        return frozenset()


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class Finding(Generic[P]):
    """What one check concluded: id, severity, explanation, evidence, remedies, payload."""

    id: str
    severity: Severity
    title: str
    detail: str
    data: P
    evidence: tuple[str, ...] = ()
    remedies: tuple[Remedy, ...] = ()
    # The id of the root-cause finding this one is a consequence of (None: a root).
    root: str | None = None

    @property
    def is_root(self) -> bool:
        return self.root is None


@dataclass(frozen=True)
class Skip:
    """The check could not judge: what it needs is missing (said once, elsewhere)."""

    reason: str


Outcome = Union[Skip, Sequence[Finding[Any]]]
CheckFunction = Callable[["Context"], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its finding id, family, descriptions, payload and relations."""

    id: str  # the finding id this check emits: a stable contract
    family: str
    severities: tuple[Severity, ...]  # the severities its findings can have
    summary: str  # one line: what a finding of this id means
    label: str  # what the check looks at, shown beside its status
    function: CheckFunction
    payload: type[Payload]
    requires: tuple[str, ...] = ()
    caused_by: tuple[str, ...] = ()


class CheckStatus(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CRASHED = "crashed"  # a bug in the doctor; reported, never a traceback


@dataclass(frozen=True)
class CheckResult:
    """How one check ended: passed, failed with findings, skipped or crashed."""

    spec: CheckSpec
    status: CheckStatus
    findings: tuple[Finding[Any], ...] = ()
    reason: str | None = None  # why skipped or crashed


DOCS_URL = "https://github.com/torch-doctor/torch-doctor/blob/main/docs/findings/{id}.md"


def docs_url(finding_id: str) -> str:
    """The page that explains a finding id: what it means, how it is detected and fixed."""
    return DOCS_URL.format(id=finding_id)
